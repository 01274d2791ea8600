"""Every zoo record of every family, the registry, and golden-tensor verification."""

import json
import os
import re

import numpy as np
import pytest

import keras_gss
from keras_gss import hub
from keras_gss.presets import PRESETS
from keras_gss.presets import TASKS

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def _preset_builds():
    """Every preset, with builds of an already-built backbone variant marked slow."""
    seen, params = set(), []
    for name in keras_gss.list_presets():
        backbone = json.dumps(PRESETS[name]["backbone"], sort_keys=True)
        marks = [pytest.mark.slow] if backbone in seen else []
        seen.add(backbone)
        params.append(pytest.param(name, marks=marks))
    return params


@pytest.mark.parametrize("name", _preset_builds())
def test_every_zoo_preset_builds_offline(name):
    record = PRESETS[name]
    options = {"memory_size": 8} if "memory_size" in record["config"] else {}
    model = keras_gss.from_preset(name, num_classes=2, load_weights=False,
                                  image_shape=(64, 64, 3), **options)
    assert type(model) is TASKS[record["task"]]
    if isinstance(model, keras_gss.models.OpenSetImageClassifier):
        assert tuple(model.output.shape) == (None, 2)
    else:
        assert tuple(model.output.shape) == (None, 64, 64, 2)
        assert tuple(model.dense_features.output.shape)[1:3] == (16, 16)
    for key, value in record["config"].items():
        if key == "tokenizer":  # GSS: the named architecture, untrained
            assert model.tokenizer.name == value and not model.tokenizer.trainable
        elif key not in ("num_classes", "memory_size"):
            assert getattr(model, key) == value, key


@pytest.mark.parametrize("name", keras_gss.list_presets())
def test_every_zoo_preset_record(name):
    record = PRESETS[name]
    assert record["task"] in TASKS and name in keras_gss.list_presets(record["family"])
    assert name.startswith(record["family"] + "_")
    # Each record's Hub handle names the record itself (no preset points at another's weights).
    repo, revision = hub.parse_handle(record["weights"]["handle"])
    assert repo.split("/")[1] == name and revision is None
    assert record["weights"]["revision"] is None  # architecture only, so far
    # Data config: what a user needs to feed and read the model.
    data = record["data"]
    assert data["image_shape"][2] == 3 and data["ignore_index"] == 255
    assert len(data["mean"]) == len(data["std"]) == 3
    names = data["class_names"]
    assert names is None or len(names) == record["config"]["num_classes"]
    # Open-set config: score, sign, threshold with how it was calibrated.
    open_set = record["open_set"]
    assert open_set["score"] and open_set["definition"]
    assert open_set["higher_is_anomalous"] is True and open_set["calibration"]
    assert open_set["threshold"] is None  # no published weights, nothing to calibrate
    # Provenance: paper, license, training data, and a recipe file that exists and agrees.
    provenance = record["provenance"]
    assert (" et al., " in provenance["paper"] or re.match(r"\w+ and [^,]+, ", provenance["paper"])
            or provenance["paper"].startswith("Anonymous authors, "))  # L-GMM is under review
    assert provenance["license"] and provenance["training_dataset"]
    reported = provenance["paper_reported"]
    if record["task"] == "LGMMImageClassifier":  # `keras-gss train` trains segmenters
        assert provenance["recipe"] is None and 0 < reported["top1"] < 100
        return
    recipe = keras_gss.training.load_recipe(os.path.join(ROOT, provenance["recipe"]))
    assert recipe["preset"] == name and recipe["name"] == name
    assert recipe["crop"] == data["image_shape"][0]
    assert reported is None or (reported["source"] and 0 < reported["miou"] < 100)


def test_registry_takes_families_and_refuses_duplicates():
    assert {PRESETS[n]["family"] for n in PRESETS} >= {"gmmseg", "softmax"}
    with pytest.raises(ValueError, match="registered twice"):
        keras_gss.presets.register_presets({"gmmseg_segformer_b0": PRESETS["gmmseg_segformer_b0"]})
    with pytest.raises(ValueError, match="names task 'Nope'"):
        keras_gss.presets.register_presets({"x": dict(PRESETS["gmmseg_segformer_b0"],
                                                      task="Nope")})


def test_verify_preset_passes_then_names_a_mismatch(tmp_path):
    from keras_gss.models import SoftmaxImageSegmenter
    from keras_gss.presets import _golden
    from tests.test_case import tiny_segmenter

    model = tiny_segmenter(SoftmaxImageSegmenter)
    folder = tmp_path / "preset"
    model.save_to_preset(str(folder))
    images = np.random.default_rng(0).normal(size=(1, 32, 32, 3)).astype("float32")
    os.makedirs(folder / "test")
    np.savez(folder / hub.GOLDEN_INPUT, images=images)
    expected = _golden(model, images)
    np.savez(folder / hub.GOLDEN_EXPECTED, **expected)
    assert keras_gss.verify_preset(str(folder)) == {"logits": 0.0, "anomaly_score": 0.0}
    expected["logits"][0, 3, 4, 1] += 0.5
    np.savez(folder / hub.GOLDEN_EXPECTED, **expected)
    with pytest.raises(ValueError, match=r"does not reproduce its golden outputs.*'logits': 0\.5"):
        keras_gss.verify_preset(str(folder))


def test_every_family_loads_in_one_fresh_process(tmp_path):
    """`import keras_gss` alone registers what every family's preset needs (GMMSeg's trained
    preset has its own fresh-process test); GSS's frozen tokenizer travels in its preset."""
    from keras_gss import models
    from tests.test_case import make_scenes
    from tests.test_case import presets_load_in_a_fresh_process
    from tests.test_case import tiny_segmenter

    tokenizer = models.DiscreteVAE(vocab_size=32, hidden_dim=8, blocks_per_group=1,
                                   group_count=3, init_dim=8)
    families = [
        (models.SoftmaxImageSegmenter, {}),
        (models.DenseHybridImageSegmenter, {}),
        (models.LGMMImageSegmenter, {"num_components": 2, "embedding_dim": 8,
                                     "memory_size": 64}),
        (models.GSSImageSegmenter, {"tokenizer": tokenizer, "mla_depth": 1, "mla_heads": 2,
                                    "token_hidden_dim": 16, "maskige_decoder": "conv"}),
    ]
    built = [tiny_segmenter(cls, **kwargs) for cls, kwargs in families]
    images, _ = make_scenes(2)
    loaded = presets_load_in_a_fresh_process(built, images, tmp_path)
    assert loaded == [cls.__name__ for cls, _ in families]

"""Recipes, the paper's optimizers and schedules, and `train_recipe` / `keras-gss train`."""

import glob
import json
import os
import shutil
import sys

import keras
import numpy as np
import pytest
from keras import ops

import keras_gss
from keras_gss.cli import starting_weights
from keras_gss.models import DiscreteVAE
from keras_gss.models.gss import TOKENIZER_PRESETS
from keras_gss.optimizers import ParamwiseAdamW
from keras_gss.optimizers import ParamwiseSGD
from keras_gss.optimizers import PolyWarmup
from keras_gss.optimizers import build_optimizer
from keras_gss.optimizers import head_variables
from keras_gss.training import calibrate_threshold
from keras_gss.training import load_recipe
from keras_gss.training import _tokenizer_stage
from keras_gss.training import train_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "zoo", "recipes", "*.json")))
TINY_RECIPE = {
    "name": "tiny_digitscenes", "preset": "gmmseg_segformer_digitscenes",
    "data": {"name": "digitscenes", "image_size": 32, "seed": 0, "train_scenes": 16,
             "test_scenes": 4},
    "crop": 32, "augmentation": {"scale_range": [0.75, 1.5], "photometric": True},
    "batch_size": 4, "iterations": 4, "steps_per_epoch": 2, "model": {"memory_size": 64},
    "optimizer": {"name": "adamw", "learning_rate": 2e-3, "weight_decay": 0.01,
                  "head_lr_multiplier": 10, "no_decay": ["norm"]},
    "schedule": {"power": 1.0, "warmup_steps": 1, "warmup_ratio": 0.1},
    "callbacks": {"update_interval": 1, "mean_momentum": 0.9},
}


_SMALL = []


def _small_model():
    if not _SMALL:
        _SMALL.append(keras_gss.from_preset("gmmseg_segformer_digitscenes", load_weights=False,
                                            image_shape=(32, 32, 3), memory_size=8))
    return _SMALL[0]


def _mmseg_poly(step, base, total, power, min_lr, warmup, ratio):
    """mmseg PolyLrUpdaterHook with linear warm-up, written from its formula."""
    regular = (base - min_lr) * (1 - step / total) ** power + min_lr
    if step < warmup:
        return regular * (1 - (1 - step / warmup) * (1 - ratio))
    return regular


@pytest.mark.parametrize("power, min_lr, warmup", [(1.0, 0.0, 1500), (0.9, 1e-4, 0)])
def test_poly_warmup_matches_mmseg(power, min_lr, warmup):
    base, total = 6e-5 if warmup else 0.01, 80000
    schedule = PolyWarmup(base, total, power=power, min_lr=min_lr, warmup_steps=warmup)
    for step in (0, 1, 700, 1499, 1500, 1501, 40000, 79999, 80000):
        expected = _mmseg_poly(step, base, total, power, min_lr, warmup, 1e-6)
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-4)  # float32
    assert float(schedule(90000)) == pytest.approx(min_lr)  # held at the end
    restored = PolyWarmup.from_config(schedule.get_config())
    assert float(restored(1234)) == float(schedule(1234))
    with pytest.raises(ValueError, match="`warmup_steps`"):
        PolyWarmup(1.0, 10, warmup_steps=10)


def _steps(make, steps=4):
    """Apply `steps` fixed gradients to two variables; return their values."""
    a = keras.Variable(np.ones(3, "float32"), name="a")
    b = keras.Variable(np.full(3, 2.0, "float32"), name="b")
    optimizer = make(a, b)
    optimizer.build([a, b])
    for i in range(steps):
        gradient = ops.convert_to_tensor(np.array([0.1, -0.2, 0.3], "float32") * (i + 1))
        optimizer.apply([gradient, gradient], [a, b])
    return a.numpy(), b.numpy()


@pytest.mark.parametrize("cls, reference, options", [
    (ParamwiseAdamW, keras.optimizers.AdamW, {}),
    (ParamwiseSGD, keras.optimizers.SGD, {"momentum": 0.9}),
])
def test_paramwise_multipliers_equal_separate_optimizers(cls, reference, options):
    # a: lr ×10 (and its decay scaled with it); b: no decay; as two parameter groups would be.
    a, b = _steps(lambda a, b: cls(learning_rate=1e-2, weight_decay=0.1, **options,
                                   lr_multipliers={a.path: 10}, decay_multipliers={b.path: 0}))
    a_ref, _ = _steps(lambda a, b: reference(learning_rate=1e-1, weight_decay=0.1, **options))
    _, b_ref = _steps(lambda a, b: reference(learning_rate=1e-2, weight_decay=0.0, **options))
    np.testing.assert_allclose(a, a_ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, b_ref, rtol=1e-6, atol=1e-6)
    config = cls.from_config(cls(lr_multipliers={"x": 10}).get_config()).get_config()
    assert config["lr_multipliers"] == {"x": 10.0}


def test_build_optimizer_finds_head_and_norms():
    model = keras_gss.from_preset("gmmseg_segformer_digitscenes", load_weights=False,
                                  image_shape=(32, 32, 3), memory_size=8)
    optimizer = build_optimizer(model, "adamw", 6e-5, 100, head_lr_multiplier=10,
                                no_decay=["norm"], weight_decay=0.01,
                                schedule={"warmup_steps": 10})
    encoder = model.backbone.image_encoder
    head = head_variables(model)
    assert len(head) == len(model.trainable_variables) - len(encoder.trainable_variables) > 0
    assert {v.path for v in head} == set(optimizer.lr_multipliers)
    assert any(p.startswith("gmm_head/") for p in optimizer.lr_multipliers)
    assert not any(v.path in optimizer.lr_multipliers for v in encoder.trainable_variables)
    assert optimizer.decay_multipliers and all("norm" in p for p in optimizer.decay_multipliers)
    assert isinstance(optimizer.learning_rate, float) is False
    with pytest.raises(ValueError, match="Unknown optimizer"):
        build_optimizer(model, "lamb", 1e-3, 10)


def _check_gss_recipe(recipe, record):
    """Spec §8.3 and §9: Stage I (the frozen tokenizer), II (the prior), III for FT-W."""
    learned = record["config"]["maskige_decoder"] in ("conv", "swin")
    assert (recipe["maskige_decoder_stage"] is not None) == learned
    assert [s.split(":")[0] for s in recipe["stages"]] == ["I", "II"] + ["III"] * learned
    if learned:
        assert recipe["maskige_decoder_stage"]["optimizer"]["learning_rate"] == 1.5e-3
    if recipe["data"]["name"] == "digitscenes":
        assert recipe["tokenizer"] == {"recipe": TOKENIZER_PRESETS[
            record["config"]["tokenizer"]]["recipe"]}
        return
    assert recipe["tokenizer"]["convert"] == "dall_e"
    assert (recipe["crop"], recipe["iterations"], recipe["batch_size"]) == (512, 160000, 32)
    assert recipe["optimizer"]["learning_rate"] == 1.2e-4
    assert recipe["schedule"] == {"power": 1.0, "min_lr": 0.0, "warmup_steps": 1500,
                                  "warmup_ratio": 1e-6}
    if learned:
        assert recipe["maskige_decoder_stage"]["iterations"] == 40000


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipes_follow_the_papers(path):
    recipe = load_recipe(path)
    name = os.path.splitext(os.path.basename(path))[0]
    assert recipe["name"] == recipe["preset"] == name
    if name in TOKENIZER_PRESETS:  # GSS's Stage I: natural crops only, never a maskige
        assert TOKENIZER_PRESETS[name]["recipe"] == f"zoo/recipes/{name}.json"
        assert recipe["data"]["name"] == "natural_crops"
        assert recipe["data"]["side"] % DiscreteVAE.from_preset(
            name, load_weights=False).downsampling == 0
        return
    record = keras_gss.presets.PRESETS[name]
    assert record["provenance"]["recipe"] == f"zoo/recipes/{name}.json"
    assert recipe["crop"] == record["data"]["image_shape"][0]
    if record["data"]["dataset"] == "digitscenes":
        # The quick start's settings, so `keras-gss train` trains its models; CPU-sized.
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        import quickstart

        assert recipe["iterations"] * recipe["batch_size"] <= 32000
        assert recipe["optimizer"]["learning_rate"] == quickstart.LEARNING_RATE
        assert recipe["schedule"] == {"power": 1.0}
        if record["family"] == "gmmseg":
            assert recipe["callbacks"] == quickstart.EM_OPTIONS
        if record["family"] == "lgmm":
            assert recipe["callbacks"] == {} and recipe["model"] == {}
        if record["family"] == "gss":
            _check_gss_recipe(recipe, record)
        if record["family"] == "densehybrid":
            assert recipe["negatives"] == {"source": "digitscenes",
                                           "size": quickstart.NEGATIVE_SIDE,
                                           "shape": "rectangle", "probability": 1.0, "count": 1}
        return
    if record["family"] != "densehybrid":  # the papers start from ImageNet-1K encoders
        name, _ = starting_weights(record)
        converted = record["backbone"]["architecture"] == "segformer"
        assert recipe["encoder_weights"] == (f"converted:{name}" if converted else name)
    if record["family"] == "gss":
        _check_gss_recipe(recipe, record)
        return
    if record["family"] == "densehybrid":
        # The paper's fine-tuning (10 epochs of Cityscapes train) and the authors' ECCV code
        # (Adam 1e-6 constant, batch 12, ADE20K crops of 192 pasted as rectangles or 2 classes).
        assert recipe["batch_size"] == 12 and recipe["iterations"] == 10 * -(-2975 // 12)
        assert recipe["optimizer"]["learning_rate"] == 1e-6 and recipe["schedule"] is None
        assert recipe["negatives"] == {"source": "ade20k", "root": "data/ade20k",
                                       "split": "training", "size": 192, "shape": "mix",
                                       "probability": 1.0, "count": 1}
        betas = record["config"]["betas"]
        assert betas[1] == betas[2] == 10 * betas[3]  # β2 = β3 = 10·β4 in every paper setting
        assert betas == ([1.0, 0.1, 0.1, 0.01] if record["backbone"]["architecture"]
                         == "deeplabv3plus" else [1.0, 0.3, 0.3, 0.03])
        built = build_optimizer(_small_model(), total_steps=recipe["iterations"],
                                schedule=None, **recipe["optimizer"])
        assert float(built.learning_rate) == pytest.approx(1e-6)
        return
    # GMMSeg §4.1 and the authors' configs (specs reference-notes §1.9, spec-gmm §4.1).
    dataset = recipe["data"]["name"]
    assert recipe["crop"] == {"cityscapes": 768, "ade20k": 512, "coco_stuff10k": 512}[dataset]
    assert recipe["iterations"] == {"cityscapes": 80000, "ade20k": 160000,
                                    "coco_stuff10k": 80000}[dataset]
    assert recipe["augmentation"]["scale_range"] == [0.5, 2.0]
    assert recipe["callbacks"] == ({"update_interval": 5, "mean_momentum": 0.999,
                                    "scale_momentum": 0.0} if record["family"] == "gmmseg" else {})
    optimizer, schedule = recipe["optimizer"], recipe["schedule"]
    if record["backbone"]["architecture"] == "segformer":
        assert recipe["batch_size"] == 16
        assert optimizer == {"name": "adamw", "learning_rate": 6e-5, "beta_1": 0.9,
                             "beta_2": 0.999, "weight_decay": 0.01, "head_lr_multiplier": 10,
                             "no_decay": ["norm"]}
        assert schedule == {"power": 1.0, "min_lr": 0.0, "warmup_steps": 1500,
                            "warmup_ratio": 1e-6}
    else:
        assert recipe["batch_size"] == 8
        assert optimizer == {"name": "sgd", "learning_rate": 0.01, "momentum": 0.9,
                             "weight_decay": 0.0005}
        assert schedule["power"] == 0.9 and schedule["min_lr"] == 1e-4
    if dataset == "cityscapes":
        assert set(recipe["data"]["anomaly_sets"]) == {"fishyscapes_laf", "road_anomaly"}
    # The recipe's optimizer and schedule build (on a small model: every zoo architecture
    # is built by the preset tests, and building B5 per recipe would cost minutes).
    model = _small_model()
    options = dict(optimizer)
    built = build_optimizer(model, total_steps=recipe["iterations"], schedule=schedule,
                            **options)
    assert float(built.learning_rate) == pytest.approx(
        _mmseg_poly(0, options["learning_rate"], recipe["iterations"], schedule["power"],
                    schedule["min_lr"], schedule.get("warmup_steps", 0), 1e-6), rel=1e-5)


def test_recipe_errors_are_clear(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        load_recipe(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_recipe(str(tmp_path / "broken.json"))
    with pytest.raises(ValueError, match=r"lacks \['iterations'\]"):
        load_recipe({k: v for k, v in TINY_RECIPE.items() if k != "iterations"})
    with pytest.raises(ValueError, match="not in keras_gss.list_presets"):
        load_recipe(dict(TINY_RECIPE, preset="gmmseg_segformer_b9"))
    with pytest.raises(ValueError, match="data name 'mnist'"):
        load_recipe(dict(TINY_RECIPE, data={"name": "mnist"}))
    with pytest.raises(ValueError, match="optimizer name"):
        load_recipe(dict(TINY_RECIPE, optimizer={"name": "lamb"}))
    # GSS: a tokenizer recipe reads natural crops; Stage I names what is missing.
    with pytest.raises(ValueError, match="must be one of \\['natural_crops'\\]"):
        load_recipe(dict(TINY_RECIPE, preset="gss_tokenizer_natural_crops"))
    with pytest.raises(OSError, match="encoder 'missing.pkl' does not exist"):
        _tokenizer_stage({"convert": "dall_e", "encoder": "missing.pkl",
                          "decoder": "missing.pkl"}, str(tmp_path), verbose=0)
    with pytest.raises(ValueError, match="must hold 'recipe', 'convert' or 'preset'"):
        _tokenizer_stage({"train": "x"}, str(tmp_path), verbose=0)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt("simulated interruption after the first epoch")


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.begun, self.iterations_at_start = [], None

    def on_epoch_begin(self, epoch, logs=None):
        if self.iterations_at_start is None:
            self.iterations_at_start = int(self.model.optimizer.iterations)
        self.begun.append(epoch)


def _assert_recorded_metrics_are_the_models(model, results, image_size, scenes):
    """mIoU and near-OOD AUROC of the model's own score and of max softmax, recomputed from
    the saved model with scikit-learn: a wrong sign or a swapped score cannot pass."""
    from scipy.special import softmax
    from sklearn.metrics import confusion_matrix
    from sklearn.metrics import roc_auc_score

    data = keras_gss.data.DigitScenes(image_size=image_size)
    images, labels, _ = data.generate("test", scenes)
    logits = model.predict(keras_gss.data.normalize_images(images), verbose=0)
    known = labels != 255
    matrix = confusion_matrix(labels[known], logits.argmax(-1)[known],
                              labels=range(model.num_classes)).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - np.diag(matrix)
    present = union > 0
    iou = np.diag(matrix)[present] / union[present]
    assert results["closed_set"]["miou"] == pytest.approx(iou.mean(), abs=1e-6)
    images, labels, anomaly = data.generate("test_near", scenes)
    outputs = model.predict_outputs(keras_gss.data.normalize_images(images), verbose=0)
    valid = (labels != 255) | anomaly
    own = roc_auc_score(anomaly[valid], outputs["anomaly_score"][valid])
    msp = roc_auc_score(anomaly[valid], 1 - softmax(outputs["logits"], -1).max(-1)[valid])
    # Near-tied float32 scores of an untrained model rank a few pixels differently when the
    # softmax is computed elsewhere (seen: 3.5e-6); an inverted score would be off by ~1 - 2·AUROC.
    assert results["near-OOD"]["model"]["auroc"] == pytest.approx(own, abs=1e-4)
    assert results["near-OOD"]["max_softmax"]["auroc"] == pytest.approx(msp, abs=1e-4)
    assert abs(own - 0.5) > 1e-3 and abs(msp - 0.5) > 1e-3  # so the sign is visible


def test_train_recipe_resumes_and_records(tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train_recipe(TINY_RECIPE, out, verbose=0, callbacks=[_Interrupt()])
    assert os.path.isdir(os.path.join(out, "backup"))
    epochs = _Epochs()
    model, summary = train_recipe(TINY_RECIPE, out, verbose=0, command="test command",
                                  callbacks=[epochs])
    # Resumed at the second epoch: the step counter, the optimizer and the memory carried on.
    assert epochs.begun == [1] and epochs.iterations_at_start == 2
    assert int(model.optimizer.iterations) == 4
    assert int(ops.convert_to_numpy(model.feature_memory.step)) == 4
    assert not os.path.isdir(os.path.join(out, "backup"))
    preset = os.path.join(out, "preset")
    with open(os.path.join(preset, "training.json")) as file:
        recorded = json.load(file)
    assert recorded["command"] == "test command" and recorded["steps"] == 4
    assert recorded["datasets"] == ["digitscenes"]
    results = recorded["results"]
    assert 0 <= results["closed_set"]["miou"] <= 1
    assert set(results) == {"closed_set", "near-OOD", "far-OOD", "near-OOD/textures",
                            "near-OOD/digits", "far-OOD/textures", "far-OOD/digits"}
    # The threshold accepts 95% of the labelled evaluation pixels of the saved model.
    loaded = keras_gss.from_preset(preset)
    images, labels, _ = keras_gss.data.DigitScenes(image_size=32).generate("test", 4)
    scores = loaded.predict_anomaly(keras_gss.data.normalize_images(images), verbose=0)
    threshold = recorded["open_set"]["threshold"]
    assert threshold == pytest.approx(calibrate_threshold(scores, labels), rel=1e-5)
    assert loaded.anomaly_threshold == threshold  # the preset carries it
    # The recorded metrics are the saved model's own, recomputed with scikit-learn.
    _assert_recorded_metrics_are_the_models(loaded, results, image_size=32, scenes=4)
    accepted = np.mean(scores[labels != 255] <= threshold)
    assert accepted == pytest.approx(0.95, abs=0.01)
    assert "95th percentile" in recorded["open_set"]["calibration"]
    shutil.rmtree(out)


def test_train_recipe_evaluates_reader_sets_of_mixed_sizes(tmp_path, mixed_size_benchmarks):
    """ADE20K-layout images of several sizes are streamed through sliding windows."""
    ade, laf = mixed_size_benchmarks
    recipe = dict(TINY_RECIPE, name="tiny_ade", iterations=2, steps_per_epoch=2, batch_size=2,
                  data={"name": "ade20k", "root": ade, "train_split": "training",
                        "eval_split": "validation",
                        "anomaly_sets": {"laf": {"name": "fishyscapes_laf", "root": laf}}})
    model, summary = train_recipe(recipe, str(tmp_path / "run"), verbose=0)
    assert set(summary["results"]) == {"closed_set", "laf"}
    assert 0.0 <= summary["results"]["laf"]["model"]["auroc"] <= 1.0
    # The threshold pools the windowed scores of every labelled validation pixel.
    window = {"crop": 32, "stride": 21}
    known = []
    for image, label in keras_gss.data.read_dataset(
            "ade20k", ade, split="validation").as_numpy_iterator():
        scores = keras_gss.predict_sliding_window(
            model, keras_gss.data.normalize_images(image[None]), **window)["anomaly_score"]
        known.append(np.asarray(scores)[0][label != 255])
    assert summary["open_set"]["threshold"] == pytest.approx(
        calibrate_threshold(np.concatenate(known)), rel=1e-5)
    # `keras-gss evaluate` streams the same sets through the saved preset.
    from keras_gss import cli

    out = tmp_path / "cli"
    assert cli.main(["evaluate", str(tmp_path / "run" / "preset"), "--dataset", "ade20k",
                     "--data", ade, "--split", "validation",
                     "--anomaly", f"fishyscapes_laf={laf}", "--out", str(out), "--name", "m",
                     "--quiet"]) == 0
    with open(out / "m.json") as file:
        evaluated = json.load(file)
    assert evaluated["closed_set"]["miou"] == pytest.approx(
        summary["results"]["closed_set"]["miou"], abs=1e-6)
    assert evaluated["closed_set"]["threshold"] == pytest.approx(
        summary["open_set"]["threshold"], rel=1e-5)
    assert evaluated["fishyscapes_laf"]["model"]["auroc"] == pytest.approx(
        summary["results"]["laf"]["model"]["auroc"], abs=1e-4)
    assert os.path.getsize(out / "m_fishyscapes_laf_overlays.png") > 0


@pytest.mark.slow  # trains two recipes; the quick start fine-tunes a closed-set model too
def test_densehybrid_recipe_fine_tunes_a_closed_set_preset_with_pasted_negatives(tmp_path):
    from keras_gss.training import _negatives
    from keras_gss.training import _train_stream

    closed, _ = train_recipe(dict(TINY_RECIPE, name="closed", preset="softmax_segformer_digitscenes",
                                  model={}, callbacks={}), str(tmp_path / "closed"),
                             evaluate=False, verbose=0)
    recipe = load_recipe(dict(
        TINY_RECIPE, name="hybrid", preset="densehybrid_segformer_digitscenes", model={},
        callbacks={}, init_from=str(tmp_path / "closed" / "preset"),
        negatives={"source": "digitscenes", "size": 16, "shape": "rectangle"}))
    # The stream pastes one negative per crop: labelled 254, never void.
    images, labels, _ = keras_gss.data.DigitScenes(image_size=32).generate("train", 4)
    import tensorflow as tf

    stream = _train_stream(recipe, tf.data.Dataset.from_tensor_slices(
        (images, labels.astype("int32"))), 4, _negatives(recipe, None))
    batch_labels = next(iter(stream))[1].numpy()
    assert ((batch_labels == 254).sum(axis=(1, 2)) >= 16 * 16 // 4).all()
    # Fine-tuning starts from the closed-set weights: identical logits before training.
    model = keras_gss.from_preset("densehybrid_segformer_digitscenes", load_weights=False,
                                  image_shape=(32, 32, 3))
    from keras_gss.models.open_set_image_segmenter import copy_weights

    copy_weights(closed, model)
    probe = keras_gss.data.normalize_images(images)
    assert np.array_equal(model.predict(probe, verbose=0), closed.predict(probe, verbose=0))
    hybrid, summary = train_recipe(recipe, str(tmp_path / "hybrid"), verbose=0)
    assert type(hybrid).__name__ == "DenseHybridImageSegmenter"
    assert {"model:discriminative", "model:generative"} <= set(summary["results"]["near-OOD"])
    assert 0.0 <= summary["results"]["near-OOD"]["model"]["open_miou"] <= 1.0


def test_a_gss_recipe_runs_its_stages_in_order(tmp_path):
    """Stage I (a tokenizer on natural crops, then frozen), II (the prior), III (the learned
    X⁻¹ alone); a rerun reuses Stage I; the preset carries the frozen tokenizer."""
    from keras_gss.models import DiscreteVAE

    tokenizer_recipe = dict(
        load_recipe(os.path.join(ROOT, "zoo", "recipes", "gss_tokenizer_natural_crops.json")),
        iterations=2, data={"name": "natural_crops", "count": 64, "side": 32, "seed": 0,
                            "reconstruction_scenes": 4})
    recipe = dict(TINY_RECIPE, name="tiny_gss", preset="gss_ftw_segformer_digitscenes",
                  model={}, callbacks={}, tokenizer={"recipe": tokenizer_recipe},
                  maskige_decoder_stage={"iterations": 2, "optimizer": {
                      "name": "adamw", "learning_rate": 1e-3, "weight_decay": 0.0}})
    out = str(tmp_path / "run")
    model, summary = train_recipe(recipe, out, verbose=0)
    with open(os.path.join(out, "tokenizer", "results.json")) as file:
        stage_one = json.load(file)["reconstruction_miou"]
    assert sorted(stage_one) == ["maximal_distance", "random"]
    assert all(0 <= r["miou"] <= 1 and len(r["iou"]) == 9 for r in stage_one.values())
    tokenizer = DiscreteVAE.from_preset(os.path.join(out, "tokenizer", "tokenizer"))
    for mine, stage in zip(model.tokenizer.weights, tokenizer.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(mine), ops.convert_to_numpy(stage))
    assert not model.tokenizer.trainable and model.learned_decoder is not None
    assert 0 <= summary["results"]["closed_set"]["miou"] <= 1
    # The preset reproduces the maskiges (the tokenizer's weights travel in it).
    images, _, _ = keras_gss.data.DigitScenes(image_size=32).generate("test", 2)
    images = keras_gss.data.normalize_images(images)
    reloaded = keras_gss.from_preset(os.path.join(out, "preset"))
    np.testing.assert_allclose(reloaded.predict_maskige(images, verbose=0),
                               model.predict_maskige(images, verbose=0), atol=1e-6)
    # A rerun's Stage I reuses the trained tokenizer's directory as it is.
    weights = os.path.join(out, "tokenizer", "tokenizer", "tokenizer.weights.h5")
    stamp = os.path.getmtime(weights)
    assert _tokenizer_stage(recipe["tokenizer"], out, verbose=0) == os.path.dirname(weights)
    assert os.path.getmtime(weights) == stamp

"""What the shared base gives every family: input checks, one-pass prediction, presets."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_gss
from keras_gss.models import GMMSegImageSegmenter
from keras_gss.models import SoftmaxImageSegmenter
from tests.test_case import make_scenes
from tests.test_case import tiny_segmenter

FAMILIES = {
    "gmmseg": (GMMSegImageSegmenter, dict(num_components=2, embedding_dim=8, memory_size=64)),
    "softmax": (SoftmaxImageSegmenter, {}),
}


def _model(family):
    cls, kwargs = FAMILIES[family]
    return tiny_segmenter(cls, **kwargs)


def _with_nan(images, index=1):
    bad = images.copy()
    bad[index, 5, 7, 0] = np.nan
    return bad


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_nan_images_raise_at_predict_naming_images(family):
    """A NaN pixel used to give NaN scores for every pixel of its 96×96 image, silently."""
    import tensorflow as tf

    model = _model(family)
    images, _ = make_scenes(4)
    bad = _with_nan(images)
    for call in (model.predict, model.predict_anomaly, model.predict_outputs):
        with pytest.raises(ValueError, match=r"`images` \[1\] \(by position\) hold NaN or Inf"):
            call(bad, verbose=0)
    stream = tf.data.Dataset.from_tensor_slices(bad).batch(2)  # the in-graph check
    with pytest.raises(ValueError, match=r"`images` \[1\]"):
        model.predict_anomaly(stream, verbose=0)
    with pytest.raises(ValueError, match="threshold"):
        model.predict_open_set(images, verbose=0)  # no calibrated threshold yet


# The check lives in the base: the plain step, and GMMSeg's stateful step under XLA, by
# default; the other two pairs with `pytest -m slow`.
@pytest.mark.parametrize("family, jit_compile", [
    ("softmax", False), ("gmmseg", True),
    pytest.param("softmax", True, marks=pytest.mark.slow),
    pytest.param("gmmseg", False, marks=pytest.mark.slow)])
def test_nan_images_raise_at_fit_naming_images(family, jit_compile):
    import tensorflow as tf

    if jit_compile and keras.backend.backend() != "tensorflow":
        pytest.skip("JAX always compiles; the False case covers it")
    model = _model(family)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    images, labels = make_scenes(4)
    bad = _with_nan(images)
    with pytest.raises(ValueError, match="`images` holds 1 non-finite"):
        model.fit(bad, labels, batch_size=2, verbose=0)  # arrays: checked before any step
    stream = tf.data.Dataset.from_tensor_slices((bad, labels.astype("int32"))).batch(2)
    with pytest.raises(ValueError, match="`images` held 1 non-finite values"):
        model.fit(stream, verbose=0)  # a stream: counted in the compiled step


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_one_pass_open_set_prediction(family, tmp_path):
    model = _model(family)
    images, _ = make_scenes(4)
    outputs = model.predict_outputs(images, verbose=0)
    threshold = float(np.median(outputs["anomaly_score"]))
    ids = model.predict_open_set(images, threshold=threshold, verbose=0)
    want = np.where(outputs["anomaly_score"] > threshold, 3, outputs["logits"].argmax(-1))
    np.testing.assert_array_equal(ids, want)
    assert 0 < (ids == 3).mean() < 1
    # The calibrated threshold travels with the preset.
    model.anomaly_threshold = threshold
    model.save_to_preset(str(tmp_path / "preset"))
    loaded = keras_gss.from_preset(str(tmp_path / "preset"))
    assert loaded.anomaly_threshold == threshold
    np.testing.assert_array_equal(loaded.predict_open_set(images, verbose=0), want)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unparsable_preset_files_raise_oserror_naming_the_file(family, tmp_path):
    model = _model(family)
    good = tmp_path / "good"
    model.save_to_preset(str(good))
    for name in ("task.json", "config.json", "keras_gss.json"):
        broken = tmp_path / f"broken_{name}"
        shutil.copytree(good, broken)
        (broken / name).write_text("{not json")
        with pytest.raises(OSError, match=rf"{name} is not valid JSON.*save_to_preset"):
            keras_gss.from_preset(str(broken))
    missing = tmp_path / "missing"
    shutil.copytree(good, missing)
    (missing / "model.weights.h5").unlink()
    with pytest.raises(OSError, match="has no model.weights.h5; pass load_weights=False"):
        keras_gss.from_preset(str(missing))
    assert type(keras_gss.from_preset(str(missing), load_weights=False)) is type(model)
    other = tmp_path / "other"
    shutil.copytree(good, other)
    task = json.loads((other / "task.json").read_text())
    task["class_name"] = "NoSuchSegmenter"
    task["registered_name"] = "keras_gss>NoSuchSegmenter"
    (other / "task.json").write_text(json.dumps(task))
    with pytest.raises(OSError, match="describes no model this keras_gss can build"):
        keras_gss.from_preset(str(other))


def test_cli_errors_are_one_line_with_debug_for_the_traceback(tmp_path):
    command = [sys.executable, "-m", "keras_gss.cli", "predict", "gmmseg_segformer_b9",
               str(tmp_path), "--out", str(tmp_path / "out")]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: Unknown preset 'gmmseg_segformer_b9': not a zoo name, an existing directory or "
        "an hf:// handle. Did you mean 'gmmseg_segformer_b5', 'gmmseg_segformer_b4', "
        "'gmmseg_segformer_b3'? keras_gss.list_presets() lists the zoo."], done.stderr
    assert done.stdout == ""
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True, timeout=300,
                           env=env)
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr


@pytest.mark.slow  # two fits of GMMSeg
def test_default_callbacks_are_added_once(monkeypatch):
    model = _model("gmmseg")
    images, labels = make_scenes(4)
    seen = []
    original_fit = keras.Model.fit

    def recording_fit(self, *args, callbacks=None, **kwargs):
        seen.append([type(c).__name__ for c in callbacks])
        return original_fit(self, *args, callbacks=callbacks, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    given = keras_gss.callbacks.SinkhornEM(update_interval=3)
    model.fit(images, labels, batch_size=4, verbose=0, callbacks=[given])
    model.fit(images, labels, batch_size=4, verbose=0)
    assert seen == [["_RaiseInputErrors", "SinkhornEM"]] * 2


def test_the_base_alone_has_no_head():
    from keras_gss.models import OpenSetImageSegmenter
    from tests.test_case import tiny_backbone

    with pytest.raises(TypeError, match="OpenSetImageSegmenter is the base of the families"):
        OpenSetImageSegmenter(tiny_backbone(), num_classes=3)


_SAME_START = """
import sys
import keras, numpy as np, keras_gss
from keras_gss.models import GMMSegImageSegmenter
from tests.test_case import make_scenes

keras.utils.set_random_seed(0)
images, labels = make_scenes(20)
backbone = keras_gss.models.segformer_backbone(
    variant=None, image_shape=(32, 32, 3), hidden_dims=[4, 8], projection_filters=8,
    drop_path_rate=0.0)
model = GMMSegImageSegmenter(backbone, num_classes=3, num_components=2, embedding_dim=8,
                             memory_size=256, samples_per_component=8, dropout=0.0)
for layer in model._flatten_layers():
    if isinstance(layer, keras.layers.Dropout):  # keras-hub MixFFN's: draws differ by backend
        layer.rate = 0.0
model.compile(optimizer=keras.optimizers.SGD(0.05))
model.feature_memory.build()  # its random fill travels with the weights, as the start does
if keras.backend.backend() == "tensorflow":
    model.save_weights(sys.argv[1])
else:
    model.load_weights(sys.argv[1])
start = np.array(keras.ops.convert_to_numpy(model.gmm_head.means))
history = model.fit(images, labels, batch_size=4, epochs=4, verbose=0,
                    callbacks=[keras_gss.callbacks.SinkhornEM(update_interval=2, mean_momentum=0.5)])
print("LOSSES", *history.history["loss"])
print("MEANS", *np.asarray(keras.ops.convert_to_numpy(model.gmm_head.means)).ravel()[:16])
print("MOVED", float(np.abs(keras.ops.convert_to_numpy(model.gmm_head.means) - start).max()))
"""


@pytest.mark.slow  # trains on both backends in fresh processes
def test_backends_train_alike_from_the_same_weights(tmp_path):
    """TensorFlow and JAX, started from the same weights, give the same GMMSeg training."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    weights = str(tmp_path / "start.weights.h5")
    runs = {}
    for backend in ("tensorflow", "jax"):  # TensorFlow first: it writes the weights
        done = subprocess.run([sys.executable, "-c", _SAME_START, weights], cwd=root,
                              capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, KERAS_BACKEND=backend,
                                       TF_CPP_MIN_LOG_LEVEL="3"))
        assert done.returncode == 0, done.stderr[-3000:]
        lines = {line.split()[0]: np.array(line.split()[1:], float)
                 for line in done.stdout.splitlines()
                 if line.startswith(("LOSSES", "MEANS", "MOVED"))}
        runs[backend] = lines
    # Float rounding differs by backend, and a Sinkhorn assignment can flip on it: 1.6e-3 apart
    # at most with M-steps every 2 steps (identical to 4 decimals without EM).
    np.testing.assert_allclose(runs["jax"]["LOSSES"], runs["tensorflow"]["LOSSES"], rtol=2e-3)
    np.testing.assert_allclose(runs["jax"]["MEANS"], runs["tensorflow"]["MEANS"], atol=1e-5)
    assert runs["tensorflow"]["LOSSES"][-1] < runs["tensorflow"]["LOSSES"][0]
    assert runs["tensorflow"]["MOVED"][0] > 0.05  # EM moved the means, so agreeing says something

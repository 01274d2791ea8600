"""Shared checks every segmenter family runs (as keras-hub's `TestCase`).

`run_segmenter_test` takes a family's class and tiny constructor arguments
and checks, with numbers: the serialization round trip, output shapes and
float32 dtypes (also under mixed precision), the anomaly score against the
family's own reference (so its sign, higher = more anomalous, is the
documented one), one `fit` step, save/load equality, and a preset loaded in
a fresh process that only did `import keras_gss`.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
from keras import ops

import keras_gss
from keras_gss.data import colour_scenes

SIZE = 32
CLASSES = 3


def tiny_backbone():
    return keras_gss.models.segformer_backbone(
        variant=None, image_shape=(SIZE, SIZE, 3), hidden_dims=[4, 8], projection_filters=8)


def tiny_segmenter(cls, **kwargs):
    """A compiled 32×32, 3-class segmenter of `cls` on a two-stage MiT."""
    model = cls(tiny_backbone(), num_classes=CLASSES, **kwargs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    return model


def make_scenes(n, seed=0):
    images, labels, _ = colour_scenes(n, size=SIZE, num_classes=CLASSES, seed=seed)
    return images, labels


def run_fresh(script, *args, timeout=600):
    """Run Python `script` in a new interpreter; its stdout."""
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


# Presets and their expected outputs, as argument pairs: only `import keras_gss` is imported.
_FRESH_PRESET = textwrap.dedent("""
    import sys
    import numpy as np, keras_gss
    for preset, path in zip(sys.argv[1::2], sys.argv[2::2]):
        expected = np.load(path)
        model = keras_gss.from_preset(preset)
        outputs = model.predict_outputs(expected["images"], verbose=0)
        for name in ("logits", "anomaly_score"):
            np.testing.assert_allclose(outputs[name], expected[name], atol=1e-6, err_msg=name)
        print("PRESET_OK", type(model).__name__)
""")


def presets_load_in_a_fresh_process(models, images, folder):
    """Save each model as a preset; one new interpreter loads them all and reproduces both
    outputs. Returns the class names it printed."""
    arguments = []
    for index, model in enumerate(models):
        preset = os.path.join(str(folder), f"preset_{index}")
        model.save_to_preset(preset)
        expected = os.path.join(str(folder), f"expected_{index}.npz")
        np.savez(expected, images=images, **model.predict_outputs(images, verbose=0))
        arguments += [preset, expected]
    out = run_fresh(_FRESH_PRESET, *arguments)
    return [line.split()[1] for line in out.splitlines() if line.startswith("PRESET_OK")]


def run_segmenter_test(cls, init_kwargs, reference_score, tmp_path):
    """The checks every family passes; returns the trained model.

    Args:
        cls: the task class.
        init_kwargs: tiny constructor arguments besides backbone and classes.
        reference_score: `(model, images) -> (B, H, W)` numpy: the
            family's anomaly score written independently of the model's
            serving graph (e.g. from its logits or its head's likelihood).
        tmp_path: a pytest temporary folder.
    """
    keras.utils.set_random_seed(0)
    images, labels = make_scenes(8)
    model = tiny_segmenter(cls, **init_kwargs)

    # Serialization round trip: the config rebuilds an equal model.
    config = model.get_config()
    clone = cls.from_config(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model)).get_config())
    assert type(clone) is cls
    for key, value in config.items():
        if key not in ("backbone", "name"):
            assert clone.get_config()[key] == value, key

    # Outputs: shapes, float32, the anomaly score as the family defines it.
    outputs = model.predict_outputs(images[:4], verbose=0)
    assert outputs["logits"].shape == (4, SIZE, SIZE, CLASSES)
    assert outputs["anomaly_score"].shape == (4, SIZE, SIZE)
    assert outputs["logits"].dtype == outputs["anomaly_score"].dtype == np.float32
    np.testing.assert_allclose(outputs["anomaly_score"], reference_score(model, images[:4]),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.predict(images[:4], verbose=0), outputs["logits"],
                               atol=1e-6)
    np.testing.assert_allclose(model.predict_anomaly(images[:4], verbose=0),
                               outputs["anomaly_score"], atol=1e-6)

    # One fit step moves the trainable weights and gives a finite loss.
    before = [ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    moved = [np.abs(ops.convert_to_numpy(w) - b).max() > 0
             for w, b in zip(model.trainable_weights, before)]
    assert np.mean(moved) > 0.8

    # Save / load: the .keras file and a preset reproduce both outputs.
    trained = model.predict_outputs(images[:4], verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    for name, value in loaded.predict_outputs(images[:4], verbose=0).items():
        np.testing.assert_allclose(value, trained[name], atol=1e-6, err_msg=name)
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    reloaded = keras_gss.from_preset(preset)
    for name, value in reloaded.predict_outputs(images[:4], verbose=0).items():
        np.testing.assert_allclose(value, trained[name], atol=1e-6, err_msg=name)

    # Mixed precision: the outputs stay float32.
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = tiny_segmenter(cls, **init_kwargs)
        for value in mixed.predict_outputs(images[:2], verbose=0).values():
            assert value.dtype == np.float32 and np.all(np.isfinite(value))
    finally:
        keras.config.set_dtype_policy("float32")
    return model

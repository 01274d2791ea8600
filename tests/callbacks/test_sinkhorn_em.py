import functools
import os
import subprocess
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
from keras import ops

from keras_gss.callbacks import SinkhornEM
from keras_gss.ops import momentum_m_step
from keras_gss.layers import FeatureMemory as _FeatureMemory
from keras_gss.layers import GaussianMixtureHead

# The storage mechanics are tested from an empty start; `fill="random"` tests say so.
FeatureMemory = functools.partial(_FeatureMemory, fill="empty")


def _filled(rng, c=3, m=2, d=16, per=400, sigma=None):
    """A memory written with samples from known components."""
    means = rng.normal(size=(c, m, d))
    means /= np.linalg.norm(means, axis=-1, keepdims=True)
    sigma = rng.uniform(0.03, 0.08, size=(c, m, d)) if sigma is None else sigma
    memory = FeatureMemory(c, m, d, capacity=per, samples_per_component=per,
                           correct_only=False)
    for i in range(c):
        for j in range(m):
            x = means[i, j] + sigma[i, j] * rng.normal(size=(per, d))
            memory.write(x.astype("float32"), np.full(per, i), np.full(per, j))
    np.testing.assert_array_equal(ops.convert_to_numpy(memory.present), np.eye(c)[-1])
    memory.present.assign(np.ones(c, "int32"))  # as if the last step held every class
    return memory, means, sigma


def test_m_step_without_momentum_recovers_components(rng):
    memory, means, sigma = _filled(rng)
    head = GaussianMixtureHead(3, 2, 16, variance_floor=1e-6)
    head(np.zeros((1, 1, 1, 4), "float32"))
    SinkhornEM(mean_momentum=0.0, scale_momentum=0.0).update(head, memory)
    got_means = ops.convert_to_numpy(head.means)
    got_scales = ops.convert_to_numpy(head.scales)
    assert np.abs(got_means - means).max() < 0.05
    assert np.abs(got_scales / sigma - 1.0).max() < 0.10
    # With the default floor the fitted scale is sqrt(σ² + floor).
    head_floor = GaussianMixtureHead(3, 2, 16, variance_floor=0.01)
    head_floor(np.zeros((1, 1, 1, 4), "float32"))
    SinkhornEM(mean_momentum=0.0).update(head_floor, memory)
    want = np.sqrt(sigma ** 2 + 0.01)
    assert np.abs(ops.convert_to_numpy(head_floor.scales) / want - 1.0).max() < 0.10


def test_momentum_moves_mean_by_exact_fraction(rng):
    memory, _, _ = _filled(rng, per=50)
    head = GaussianMixtureHead(3, 2, 16)
    head(np.zeros((1, 1, 1, 4), "float32"))
    old = ops.convert_to_numpy(head.means).astype(np.float64)
    count, mean, _ = (ops.convert_to_numpy(t) for t in memory.component_moments())
    fresh = mean / np.linalg.norm(mean, axis=-1, keepdims=True)
    gamma = 0.9  # fresh is the normalised queue mean
    SinkhornEM(mean_momentum=gamma).update(head, memory)
    moved = old + (1 - gamma) * (fresh - old)  # before re-normalisation
    want = moved / np.linalg.norm(moved, axis=-1, keepdims=True)
    np.testing.assert_allclose(ops.convert_to_numpy(head.means), want, atol=1e-6)


def test_empty_components_keep_parameters_and_scales_blend(rng):
    memory = FeatureMemory(2, 1, 4, capacity=8, correct_only=False)
    x = rng.normal(size=(6, 4)).astype("float32")
    memory.write(x, np.zeros(6, int), np.zeros(6, int))
    count, mean, mean_square = memory.component_moments()
    means = np.tile(np.eye(4, dtype="float32")[:1], (2, 1, 1))
    scales = np.full((2, 1, 4), 2.0, "float32")
    new_means, new_scales = (ops.convert_to_numpy(t) for t in momentum_m_step(
        count, mean, mean_square, means, scales, 0.5, 0.25, 0.01))
    np.testing.assert_array_equal(new_means[1], means[1])
    np.testing.assert_array_equal(new_scales[1], scales[1])
    fresh = x.mean(0) / np.linalg.norm(x.mean(0))
    fresh_scale = np.sqrt(((x - fresh) ** 2).mean(0) + 0.01)
    np.testing.assert_allclose(new_scales[0, 0], 0.25 * 2.0 + 0.75 * fresh_scale, atol=1e-5)


def test_m_step_refits_only_the_classes_present_in_the_last_write(rng):
    memory, _, _ = _filled(rng, per=50)
    memory.write(rng.normal(size=(4, 16)).astype("float32"), np.array([1, 1, 255, 1]),
                 np.zeros(4, int))
    np.testing.assert_array_equal(ops.convert_to_numpy(memory.present), [0, 1, 0])
    head = GaussianMixtureHead(3, 2, 16)
    head(np.zeros((1, 1, 1, 4), "float32"))
    means, scales = (ops.convert_to_numpy(v).copy() for v in (head.means, head.scales))
    SinkhornEM(mean_momentum=0.0).update(head, memory)
    new_means, new_scales = (ops.convert_to_numpy(v) for v in (head.means, head.scales))
    for c in (0, 2):
        np.testing.assert_array_equal(new_means[c], means[c])
        np.testing.assert_array_equal(new_scales[c], scales[c])
    count, mean, mean_square = memory.component_moments()
    want_means, want_scales = (ops.convert_to_numpy(t) for t in momentum_m_step(
        count, mean, mean_square, means, scales, 0.0, 0.0, head.variance_floor))
    np.testing.assert_allclose(new_means[1], want_means[1], atol=1e-6)
    np.testing.assert_allclose(new_scales[1], want_scales[1], atol=1e-6)
    assert not np.allclose(new_scales[1], scales[1])


def test_non_finite_parameters_are_refused():
    memory = FeatureMemory(1, 1, 2, capacity=4, correct_only=False)
    memory.write(np.ones((2, 2), "float32"), np.zeros(2, int), np.zeros(2, int))
    memory.total.assign(np.full((1, 1, 2), np.nan, "float32"))  # the M-step reads the running sums
    head = GaussianMixtureHead(1, 1, 2)
    head(np.zeros((1, 1, 1, 2), "float32"))
    before = ops.convert_to_numpy(head.means).copy()
    with pytest.raises(ValueError, match="non-finite GMM parameters"):
        SinkhornEM().update(head, memory)
    np.testing.assert_array_equal(ops.convert_to_numpy(head.means), before)


def test_starved_class_warns_once(rng):
    memory = FeatureMemory(3, 1, 4, capacity=32, samples_per_component=4)
    head = GaussianMixtureHead(3, 1, 4)
    head(np.zeros((1, 1, 1, 4), "float32"))
    callback = SinkhornEM(update_interval=2, mean_momentum=0.5, starvation_steps=10)
    callback.set_model(types.SimpleNamespace(gmm_head=head, feature_memory=memory))
    callback.on_train_begin()
    labels = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 0, 1, 1, 0, 1])  # class 2 is never classified correctly
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(30):
            x = rng.normal(size=(6, 4)).astype("float32")
            memory.write(x, labels, np.zeros(6, int), predictions=predictions)
            callback.on_train_batch_end(0)
    messages = [str(w.message) for w in caught if "SinkhornEM: class" in str(w.message)]
    assert callback.starved_classes == [2]
    # First M-step at step 2, so the warning comes at step 12, once.
    assert len(messages) == 1
    assert "class 2 has had no feature-memory write for 10 steps" in messages[0]
    assert "mean σ 1.000" in messages[0]  # never fitted: still the initial scale
    np.testing.assert_array_equal(ops.convert_to_numpy(memory.count)[:, 0], [32, 32, 0])  # full


def test_bad_arguments():
    with pytest.raises(ValueError, match="`mean_momentum` must lie in"):
        SinkhornEM(mean_momentum=1.0)
    with pytest.raises(ValueError, match="`update_interval` must be a positive"):
        SinkhornEM(update_interval=0)
    with pytest.raises(ValueError, match="`starvation_steps` must be a positive"):
        SinkhornEM(starvation_steps=0)


_SCRIPT = textwrap.dedent("""
    import numpy as np, keras, keras_gss
    from keras import ops
    keras.utils.set_random_seed(1)
    backbone = keras_gss.models.segformer_backbone(
        variant=None, image_shape=(32, 32, 3), hidden_dims=[4, 8],
        projection_filters=8)
    model = keras_gss.models.GMMSegImageSegmenter(
        backbone, num_classes=3, num_components=2, embedding_dim=8,
        memory_size=64, correct_only=False)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = np.random.rand(8, 32, 32, 3).astype("float32")
    y = np.random.randint(0, 3, (8, 32, 32))
    before = ops.convert_to_numpy(model.gmm_head.means).copy()
    model.fit(x, y, batch_size=4, epochs=3,  verbose=0,
              callbacks=[keras_gss.callbacks.SinkhornEM(update_interval=2,
                                                        mean_momentum=0.5)])
    after = ops.convert_to_numpy(model.gmm_head.means)
    print("RESULT", keras.backend.backend(),
          int(ops.convert_to_numpy(model.feature_memory.step)),
          float(np.abs(after - before).max()),
          int(ops.convert_to_numpy(model.feature_memory.count).sum()))
""")


# JAX's run is slow: `.ci/run`'s JAX pass runs this file's other tests on JAX.
@pytest.mark.parametrize("backend", ["tensorflow", pytest.param("jax", marks=pytest.mark.slow)])
def test_callback_fits_gmm_on_backend(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env,
                          capture_output=True, text=True, timeout=600)
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    _, name, step, shift, count = lines[0].split()
    assert name == backend and int(step) == 6
    assert float(shift) > 1e-3  # three M-steps with momentum 0.5 moved the means
    assert int(count) > 0

import functools
import keras
import numpy as np
import pytest
from keras import ops

from keras_gss.layers import FeatureMemory as _FeatureMemory

# The storage mechanics are tested from an empty start; `fill="random"` tests say so.
FeatureMemory = functools.partial(_FeatureMemory, fill="empty")


class ReferenceMemory:
    """Plain-python FIFO queues with the same sub-sampling rule."""

    def __init__(self, c, m, capacity, samples):
        self.queues = {(i, j): [] for i in range(c) for j in range(m)}
        self.capacity, self.samples = capacity, samples

    def write(self, features, labels, components, keep):
        for key, queue in self.queues.items():
            members = [n for n in range(len(labels))
                       if keep[n] and (labels[n], components[n]) == key]
            k = len(members)
            if k > self.samples:
                members = [members[j * (k - 1) // (self.samples - 1)]
                           for j in range(self.samples)]
            queue.extend(features[n] for n in members)
            del queue[: max(0, len(queue) - self.capacity)]


def _memory_state(memory):
    return (ops.convert_to_numpy(memory.queue), ops.convert_to_numpy(memory.pointer),
            ops.convert_to_numpy(memory.count))


def test_fifo_ring_matches_reference(rng):
    c, m, d, capacity, samples = 3, 2, 4, 7, 3
    memory = FeatureMemory(c, m, d, capacity=capacity, samples_per_component=samples,
                           correct_only=False)
    reference = ReferenceMemory(c, m, capacity, samples)
    for step in range(6):
        n = 40
        features = rng.normal(size=(n, d)).astype("float32")
        labels = rng.choice([0, 1, 2, 255], size=n, p=[0.3, 0.3, 0.1, 0.3])
        components = rng.integers(0, m, size=n)
        memory.write(features, labels, components)
        reference.write(features, labels, components, labels != 255)
    queue, pointer, count = _memory_state(memory)
    for (i, j), items in reference.queues.items():
        assert count[i, j] == len(items)
        # The ring holds the newest `capacity` entries ending before `pointer`.
        order = [(pointer[i, j] - len(items) + k) % capacity for k in range(len(items))]
        np.testing.assert_array_equal(queue[i, j, order], np.array(items).reshape(-1, d))
    assert int(ops.convert_to_numpy(memory.step)) == 6


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="tf.function(jit_compile=True); JAX compiles every write")
def test_xla_compiled_write_equals_eager_write(rng):
    import tensorflow as tf

    def build():
        return FeatureMemory(3, 2, 4, capacity=7, samples_per_component=3)

    eager, compiled = build(), build()
    compiled_write = tf.function(compiled.write, jit_compile=True)
    for step in range(6):
        n = 40
        features = rng.normal(size=(n, 4)).astype("float32")
        labels = rng.choice([0, 1, 2, 255], size=n, p=[0.3, 0.3, 0.1, 0.3])
        components = rng.integers(0, 2, size=n)
        predictions = np.where(rng.random(n) < 0.7, labels, 0)
        eager.write(features, labels, components, predictions=predictions)
        compiled_write(features, labels, components, predictions=predictions)
    for mine, theirs in zip(_memory_state(compiled) + (compiled.total, compiled.step),
                            _memory_state(eager) + (eager.total, eager.step)):
        np.testing.assert_array_equal(ops.convert_to_numpy(mine), ops.convert_to_numpy(theirs))
    assert ops.convert_to_numpy(eager.count).sum() > 0


def test_subsampling_is_evenly_spaced_and_deterministic():
    memory = FeatureMemory(1, 1, 1, capacity=10, samples_per_component=4,
                           correct_only=False)
    features = np.arange(13, dtype="float32")[:, None]
    memory.write(features, np.zeros(13, int), np.zeros(13, int))
    queue, pointer, count = _memory_state(memory)
    # torch.linspace(0, 12, 4).long() = [0, 4, 8, 12]
    np.testing.assert_array_equal(queue[0, 0, :4, 0], [0, 4, 8, 12])
    assert count[0, 0] == 4 and pointer[0, 0] == 4


def test_correct_only_writes_correct_pixels():
    memory = FeatureMemory(2, 1, 2, capacity=8, samples_per_component=8)
    features = np.eye(2, dtype="float32")[[0, 1, 0, 1]]
    labels = np.array([0, 0, 1, 1])
    predictions = np.array([0, 1, 1, 0])
    memory.write(features, labels, np.zeros(4, int), predictions=predictions)
    count = ops.convert_to_numpy(memory.count)
    np.testing.assert_array_equal(count, [[1], [1]])
    with pytest.raises(ValueError, match="`predictions` is required"):
        memory.write(features, labels, np.zeros(4, int))


def test_starved_fallback_writes_classes_with_no_correct_pixel():
    memory = FeatureMemory(3, 1, 1, capacity=8, samples_per_component=8,
                           starved_fallback=True)
    features = np.arange(7, dtype="float32")[:, None]
    labels = np.array([0, 0, 1, 1, 2, 255, 1])
    predictions = np.array([0, 1, 0, 2, 0, 0, 0])
    memory.write(features, labels, np.zeros(7, int), predictions=predictions)
    queue, _, count = _memory_state(memory)
    # Class 0 has a correct pixel: only it. Classes 1 and 2 have none: all their pixels.
    np.testing.assert_array_equal(count[:, 0], [1, 3, 1])
    np.testing.assert_array_equal(queue[0, 0, :1, 0], [0])
    np.testing.assert_array_equal(queue[1, 0, :3, 0], [2, 3, 6])
    np.testing.assert_array_equal(queue[2, 0, :1, 0], [4])


def test_eager_bad_inputs_raise():
    memory = FeatureMemory(2, 1, 2, capacity=8, correct_only=False)
    features = np.ones((3, 2), "float32")
    with pytest.raises(ValueError, match=r"`labels` holds class ids outside \[0, 2\)"):
        memory.write(features, np.array([0, 7, 255]), np.zeros(3, int))
    features[1, 0] = np.inf
    with pytest.raises(ValueError, match="`features` holds 1 non-finite"):
        memory.write(features, np.array([0, 1, 255]), np.zeros(3, int))


def test_component_moments_use_filled_entries_only(rng):
    memory = FeatureMemory(1, 2, 3, capacity=16, samples_per_component=16,
                           correct_only=False)
    features = rng.normal(size=(5, 3)).astype("float32")
    memory.write(features, np.zeros(5, int), np.array([0, 0, 0, 1, 1]))
    count, mean, mean_square = (ops.convert_to_numpy(t) for t in memory.component_moments())
    np.testing.assert_array_equal(count, [[3, 2]])
    np.testing.assert_allclose(mean[0, 0], features[:3].mean(0), atol=1e-6)
    np.testing.assert_allclose(mean_square[0, 1], (features[3:] ** 2).mean(0), atol=1e-6)


def test_running_moments_equal_exact_moments_through_wraparound(rng):
    """The running sums match a recomputation over the ring after it wraps many times."""
    memory = FeatureMemory(2, 2, 4, capacity=7, samples_per_component=3, correct_only=False)
    for _ in range(40):
        features = rng.normal(size=(30, 4)).astype("float32")
        memory.write(features, rng.integers(0, 2, 30), rng.integers(0, 2, 30))
    running = [ops.convert_to_numpy(t) for t in memory.component_moments()]
    queue, _, count = _memory_state(memory)
    assert np.all(count == 7)
    np.testing.assert_allclose(running[1], queue.mean(2), atol=1e-5)
    np.testing.assert_allclose(running[2], (queue ** 2).mean(2), atol=1e-5)
    memory.total.assign(np.zeros((2, 2, 4), "float32"))  # as if drifted
    memory.resync()
    np.testing.assert_allclose(ops.convert_to_numpy(memory.component_moments()[1]),
                               queue.mean(2), atol=1e-6)


@pytest.mark.parametrize("storage_dtype", ["float16", "bfloat16"])
def test_low_precision_storage_keeps_moments_close(rng, storage_dtype):
    kwargs = dict(capacity=64, samples_per_component=16, correct_only=False)
    full = FeatureMemory(2, 2, 8, **kwargs)
    half = FeatureMemory(2, 2, 8, storage_dtype=storage_dtype, **kwargs)
    for _ in range(5):
        features = rng.normal(size=(50, 8)).astype("float32")
        features /= np.linalg.norm(features, axis=-1, keepdims=True)
        labels, components = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
        full.write(features, labels, components)
        half.write(features, labels, components)
    assert half.queue.dtype == storage_dtype
    tolerance = 2e-3 if storage_dtype == "float16" else 1e-2  # 11 vs 8 mantissa bits
    for a, b in zip(full.component_moments(), half.component_moments()):
        assert b.dtype == "float32"
        np.testing.assert_allclose(ops.convert_to_numpy(b), ops.convert_to_numpy(a), atol=tolerance)
    with pytest.raises(ValueError, match="`storage_dtype` must be one of"):
        FeatureMemory(2, 2, 8, storage_dtype="int8")


def test_random_fill_starts_full_and_real_entries_replace_it(rng):
    """`fill="random"`: full queues of unit vectors whose moments and M-step match numpy."""
    from keras_gss.ops import momentum_m_step

    c, m, d, capacity = 2, 3, 8, 50
    memory = FeatureMemory(c, m, d, capacity=capacity, samples_per_component=5,
                           correct_only=False, fill="random")
    memory.build()
    queue, pointer, count = _memory_state(memory)
    assert np.all(count == capacity) and np.all(pointer == 0)
    np.testing.assert_allclose(np.linalg.norm(queue, axis=-1), 1.0, atol=1e-6)
    assert np.abs(queue[0, 0] @ queue[1, 2].T).mean() < 0.5  # independent directions
    count_, mean, mean_square = (ops.convert_to_numpy(t) for t in memory.component_moments())
    np.testing.assert_allclose(mean, queue.mean(2), atol=1e-6)
    np.testing.assert_allclose(mean_square, (queue ** 2).mean(2), atol=1e-6)
    # The first M-step sees broad Gaussians, not the initial σ = 1: around the normalised
    # mean direction the variance is 1/D per dimension plus that direction's own square.
    means, scales = momentum_m_step(count_, mean, mean_square, np.ones((c, m, d), "float32"),
                                    np.ones((c, m, d), "float32"), 0.0, 0.0, 0.01)
    direction = queue.mean(2) / np.linalg.norm(queue.mean(2), axis=-1, keepdims=True)
    expected = np.sqrt(((queue - direction[:, :, None]) ** 2).mean(2) + 0.01)
    np.testing.assert_allclose(ops.convert_to_numpy(scales), expected, rtol=1e-4)
    assert abs(float(np.mean(expected ** 2)) - (2 / d + 0.01)) < 0.15 * (2 / d + 0.01)
    features = rng.normal(size=(5, d)).astype("float32")
    memory.write(features, np.zeros(5, int), np.zeros(5, int))
    queue, pointer, count = _memory_state(memory)
    assert count[0, 0] == capacity and pointer[0, 0] == 5
    np.testing.assert_array_equal(queue[0, 0, :5], features)  # oldest random entries go first
    np.testing.assert_allclose(ops.convert_to_numpy(memory.component_moments()[1]),
                               queue.mean(2), atol=1e-6)
    restored = _FeatureMemory.from_config(memory.get_config())
    assert restored.fill == "random"
    restored.build()
    assert np.all(ops.convert_to_numpy(restored.count) == capacity)
    # reset() refills at random: full again, and no entry of the write survives.
    memory.reset()
    queue, pointer, count = _memory_state(memory)
    assert np.all(count == capacity) and np.all(pointer == 0)
    assert int(ops.convert_to_numpy(memory.step)) == 0
    np.testing.assert_allclose(np.linalg.norm(queue, axis=-1), 1.0, atol=1e-6)
    assert not np.any(np.all(np.isclose(queue[0, 0], features[0]), axis=-1))
    np.testing.assert_allclose(ops.convert_to_numpy(memory.component_moments()[1]),
                               queue.mean(2), atol=1e-6)
    with pytest.raises(ValueError, match=r"`fill` must be one of \['empty', 'random'\]"):
        FeatureMemory(c, m, d, fill="zeros")


def test_storage_is_allocated_on_first_use_and_reset_empties_it(rng):
    """Constructing a memory allocates nothing (inference never needs it); the first write
    does, and reset() returns it to the empty state."""
    memory = FeatureMemory(2, 2, 4, capacity=10**9, samples_per_component=3)
    assert memory.built and not memory.allocated and memory.weights == []
    assert not memory.allocated
    small = FeatureMemory(2, 2, 4, capacity=6, samples_per_component=3, correct_only=False)
    small.write(rng.normal(size=(20, 4)).astype("float32"), rng.integers(0, 2, size=20),
                rng.integers(0, 2, size=20))
    assert small.allocated and len(small.weights) == 7  # queue, sums, pointer, count, step, present
    assert ops.convert_to_numpy(small.count).sum() > 0
    small.reset()
    for variable in small.weights:
        assert not np.any(ops.convert_to_numpy(variable)), variable.path

import numpy as np
import pytest
from keras import ops

from keras_gss.layers import FeatureMemory


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


def test_eager_bad_inputs_raise():
    memory = FeatureMemory(2, 1, 2, capacity=8, correct_only=False)
    features = np.ones((3, 2), "float32")
    with pytest.raises(ValueError, match=r"`labels` holds class ids outside \[0, 2\)"):
        memory.write(features, np.array([0, 7, 255]), np.zeros(3, int))
    features[1, 0] = np.inf
    with pytest.raises(ValueError, match="`features` holds 1 non-finite"):
        memory.write(features, np.array([0, 1, 255]), np.zeros(3, int))


def test_counted_errors_raise_once():
    memory = FeatureMemory(2, 1, 2, capacity=8)
    memory.record_errors(3, 9, 0)
    with pytest.raises(ValueError, match=r"`y` holds class ids outside \[0, 2\).*\[9\]"):
        memory.raise_for_errors()
    memory.raise_for_errors()  # counters were reset
    memory.record_errors(0, 0, 5)
    with pytest.raises(ValueError, match="5 pixel embeddings were non-finite"):
        memory.raise_for_errors()


def test_component_moments_use_filled_entries_only(rng):
    memory = FeatureMemory(1, 2, 3, capacity=16, samples_per_component=16,
                           correct_only=False)
    features = rng.normal(size=(5, 3)).astype("float32")
    memory.write(features, np.zeros(5, int), np.array([0, 0, 0, 1, 1]))
    count, mean, mean_square = (ops.convert_to_numpy(t) for t in memory.component_moments())
    np.testing.assert_array_equal(count, [[3, 2]])
    np.testing.assert_allclose(mean[0, 0], features[:3].mean(0), atol=1e-6)
    np.testing.assert_allclose(mean_square[0, 1], (features[3:] ** 2).mean(0), atol=1e-6)


def test_record_invalid_labels_counts_then_raises():
    memory = FeatureMemory(3, 1, 2, capacity=8)
    memory.record_invalid_labels(np.array([[0, 2, 255], [4, -1, 1]]))
    np.testing.assert_array_equal(ops.convert_to_numpy(memory.errors), [2, 4, 0])
    with pytest.raises(ValueError, match=r"outside \[0, 3\).*\[4\]"):
        memory.raise_for_errors()
    memory.record_invalid_labels(np.array([0, 1, 2, 255]))
    memory.raise_for_errors()  # nothing counted, nothing raised

import numpy as np
import pytest

from keras_gss.data import colour_scenes


def test_deterministic_and_consistent():
    a = colour_scenes(4, size=24, anomalies=True, seed=3)
    b = colour_scenes(4, size=24, anomalies=True, seed=3)
    c = colour_scenes(4, size=24, anomalies=True, seed=4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])
    images, labels, mask = a
    assert set(np.unique(labels)) <= {0, 1, 2, 255}
    assert np.all(labels[mask] == 255) and mask.any()
    assert np.all(labels[:, :2, :2] == 255)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="`num_classes` must be 1, 2 or 3"):
        colour_scenes(1, num_classes=5)

import numpy as np
import pytest

from keras_gss.data import DigitScenes
from keras_gss.data.digit_scenes import KNOWN_DIGITS
from keras_gss.data.digit_scenes import NEAR_OOD_DIGITS


@pytest.fixture(scope="module")
def scenes():
    return DigitScenes(image_size=48, seed=7)


def test_deterministic_for_a_seed(scenes):
    a = scenes.generate("train", 3)
    b = DigitScenes(image_size=48, seed=7).generate("train", 3)
    c = DigitScenes(image_size=48, seed=8).generate("train", 3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


def test_digit_instances_are_disjoint_across_splits(scenes):
    split = {s: set(scenes._instances(s, KNOWN_DIGITS + NEAR_OOD_DIGITS).tolist())
             for s in ("train", "val", "test")}
    assert not split["train"] & split["val"]
    assert not split["train"] & split["test"]
    assert not split["val"] & split["test"]
    assert split["test"] == set(scenes._instances("test_near", KNOWN_DIGITS + NEAR_OOD_DIGITS).tolist())
    targets = scenes._targets[sorted(split["train"])]
    assert set(np.unique(targets)) == set(range(10))


def test_training_scenes_draw_only_training_instances_of_known_digits(monkeypatch):
    """No test instance and no anomaly source (digits 6-9, pictures) reaches training."""
    scenes = DigitScenes(image_size=48, seed=3)
    drawn, pictures = {}, []
    paste_digit, paste_picture = scenes._paste_digit, scenes._paste_picture

    def spy_digit(rng, image, label, cell, sample, *rest, **kwargs):
        drawn.setdefault(current, []).append(int(sample))
        return paste_digit(rng, image, label, cell, sample, *rest, **kwargs)

    def spy_picture(*a, **kwargs):
        pictures.append(current)
        return paste_picture(*a, **kwargs)

    monkeypatch.setattr(scenes, "_paste_digit", spy_digit)
    monkeypatch.setattr(scenes, "_paste_picture", spy_picture)
    for current in ("train", "val", "test", "test_near", "test_far"):
        scenes.generate(current, 40)
    train_pool = set(scenes._instances("train", KNOWN_DIGITS).tolist())
    assert set(drawn["train"]) <= train_pool and len(set(drawn["train"])) > 30
    assert set(scenes._targets[drawn["train"]]) <= set(KNOWN_DIGITS)
    for split in ("val", "test", "test_near", "test_far"):
        assert not set(drawn[split]) & train_pool, split
    assert set(scenes._targets[drawn["test_near"]]) & set(NEAR_OOD_DIGITS)
    assert set(pictures) == {"test_far"}


def test_one_digit_per_cell_with_dilated_labels(scenes):
    """Version 2 layout: each labelled digit lies in its own grid cell; labels cover the strokes."""
    images, labels, _ = scenes.generate("test", 20)
    cell = 48 // 2
    for label in labels:
        for row in range(2):
            for column in range(2):
                block = label[row * cell:(row + 1) * cell, column * cell:(column + 1) * cell]
                assert len(set(np.unique(block)) & set(range(3, 9))) <= 1
        digits = np.isin(label, range(3, 9))
        assert 1 <= len(set(np.unique(label[digits]))) <= 3
    # Dilated labels: a digit's label covers more than its ink.
    assert 0.02 < np.isin(labels, range(3, 9)).mean() < 0.3


@pytest.mark.parametrize("split", ["train", "test", "test_near", "test_far"])
def test_labels_and_anomalies(scenes, split):
    images, labels, anomaly = scenes.generate(split, 6)
    assert images.shape == (6, 48, 48, 3) and images.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(9)) | {255}
    assert np.all(labels[anomaly] == 255)
    if split.startswith("test_"):
        assert anomaly.any()
    else:
        assert not anomaly.any() and not np.any(labels == 255)
    assert len(set(np.unique(labels)) & {3, 4, 5, 6, 7, 8}) > 0  # digits present


def test_write_and_read_round_trip(scenes, tmp_path):
    scenes.write(str(tmp_path), sizes={"train": 3, "test_far": 2}, verbose=0)
    images, labels, anomaly = DigitScenes.read(str(tmp_path), "test_far")
    want = scenes.generate("test_far", 2)
    np.testing.assert_array_equal(images, want[0])
    np.testing.assert_array_equal(labels, want[1])
    np.testing.assert_array_equal(anomaly, want[2])
    assert DigitScenes.read(str(tmp_path), "train")[2] is None
    with pytest.raises(OSError, match="expected .*/images/\\*.png"):
        DigitScenes.read(str(tmp_path), "val")


def test_bad_arguments(scenes):
    with pytest.raises(ValueError, match="`split` must be one of"):
        scenes.generate("holdout", 1)
    with pytest.raises(ValueError, match="`image_size` must be at least 32"):
        DigitScenes(image_size=16)

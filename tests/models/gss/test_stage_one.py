import numpy as np

from keras_gss.layers import MaskigeCodec
from keras_gss.models.gss.stage_one import natural_image_crops
from keras_gss.models.gss.stage_one import reconstruction_miou


class _Lossless:
    """A tokenizer whose tokens are the maskige itself."""

    def encode(self, maskige):
        return maskige

    def decode(self, tokens):
        return tokens


class _Greyscale(_Lossless):
    """Loses colour: every pixel decodes to its grey level."""

    def decode(self, tokens):
        return np.repeat(np.asarray(tokens).mean(-1, keepdims=True), 3, -1)


def test_reconstruction_miou_of_a_lossless_and_a_lossy_tokenizer():
    codec = MaskigeCodec(5)
    labels = np.random.default_rng(0).integers(0, 5, (3, 8, 8))
    labels[0, 0] = 255
    lossless = reconstruction_miou(_Lossless(), codec, labels, batch_size=2)
    assert lossless["miou"] == 1.0 and np.all(lossless["iou"] == 1.0)
    lossy = reconstruction_miou(_Greyscale(), codec, labels)
    # Against the confusion of nearest-colour decoding done by hand.
    grey = np.repeat(np.asarray(codec.encode(labels)).mean(-1, keepdims=True), 3, -1)
    decoded = np.asarray(codec.decode(grey))
    known = labels < 5
    iou = [((decoded == k) & (labels == k)).sum() / (((decoded == k) & known) | (labels == k)).sum()
           for k in range(5)]
    np.testing.assert_allclose(lossy["iou"], iou)
    assert lossy["miou"] < 1.0


def test_natural_image_crops_are_deterministic_photographs_in_the_tokenizer_range():
    crops = natural_image_crops(6, 16, seed=1)
    assert crops.shape == (6, 16, 16, 3) and crops.dtype == np.float32
    assert crops.min() >= 0.1 - 1e-6 and crops.max() <= 0.9 + 1e-6
    np.testing.assert_array_equal(crops, natural_image_crops(6, 16, seed=1))
    assert not np.array_equal(crops, natural_image_crops(6, 16, seed=2))
    assert crops.std() > 0.02  # pictures, not flat colour

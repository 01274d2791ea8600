"""GSS Stage I at CPU scale: a small tokenizer trained on natural pictures, and its maskige test.

GSS's claim is that an off-the-shelf *natural-image* tokenizer reconstructs
maskiges with no mask-specific training. DALL-E's weights cannot be
downloaded here, so the stand-in is a `DiscreteVAE` of the same design
trained only on crops of the photographs and textures scikit-image ships
(never a maskige), then frozen; `reconstruction_miou` is the authors'
"reconstruction eval" (Tables 1, 2 and 9): ground truth → maskige → tokens →
decoded maskige → class ids, against the ground truth.
"""

import numpy as np

from keras_gss.data.digit_scenes import NEGATIVE_PICTURES
from keras_gss.data.digit_scenes import TEXTURES
from keras_gss.data.digit_scenes import picture_crops
from keras_gss.layers.maskige_codec import map_pixels
from keras_gss.metrics.segmentation import confusion_matrix
from keras_gss.metrics.segmentation import iou_from_confusion

# Photographs and textures only: what a natural-image tokenizer would have seen.
TOKENIZER_PICTURES = NEGATIVE_PICTURES + TEXTURES + ("retina",)


def natural_image_crops(count, side, seed=0, span=(1.0, 4.0)):
    """Crops of `TOKENIZER_PICTURES` with their colours permuted or inverted, as float32.

    Channel permutations and inversions move the pictures' colours over the
    whole RGB cube (they stay photographs); the result is in the
    tokenizer's range `[0.1, 0.9]`.

    Returns:
        float32 array `(count, side, side, 3)`.
    """
    rng = np.random.default_rng([seed, 17])
    crops = picture_crops(TOKENIZER_PICTURES, count, side, rng, span).astype("float32") / 255.0
    crops = np.stack([crop[..., rng.permutation(3)] for crop in crops])
    invert = rng.random(count) < 0.3
    crops[invert] = 1.0 - crops[invert]
    return map_pixels(crops)


def reconstruction_miou(tokenizer, codec, labels, method="nearest", batch_size=16):
    """Stage I's reconstruction metric: labels → maskige → tokens → maskige → labels.

    Args:
        tokenizer: a `DiscreteVAE`.
        codec: a `MaskigeCodec` of `K` classes.
        labels: int array `(N, H, W)`; pixels outside `[0, K)` do not count.
        method: the codec's decoding. Defaults to `"nearest"`.
        batch_size: int. Defaults to `16`.

    Returns:
        dict: `"miou"` and `"iou"` (per class) in `[0, 1]`.
    """
    num_classes = codec.num_classes
    confusion = np.zeros((num_classes, num_classes), np.int64)
    for start in range(0, len(labels), batch_size):
        batch = np.asarray(labels[start:start + batch_size])
        maskige = codec.encode(batch)
        decoded = np.asarray(codec.decode(tokenizer.decode(tokenizer.encode(maskige)), method))
        confusion += np.asarray(confusion_matrix(batch, decoded, num_classes))
    iou = iou_from_confusion(confusion)
    return {"miou": float(np.nanmean(iou)), "iou": iou}

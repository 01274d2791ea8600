"""GSS Stage I at CPU scale: a small tokenizer trained on natural pictures, and its maskige test.

GSS's claim is that an off-the-shelf *natural-image* tokenizer reconstructs
maskiges with no mask-specific training. DALL-E's weights cannot be
downloaded here, so the stand-in is a `DiscreteVAE` of the same design
trained only on crops of the photographs and textures scikit-image and
scikit-learn ship (never a maskige), then frozen; `reconstruction_miou` is the authors'
"reconstruction eval" (Tables 1, 2 and 9): ground truth → maskige → tokens →
decoded maskige → class ids, against the ground truth.
"""

import numpy as np

from keras_gss.data.digit_scenes import TEXTURES
from keras_gss.data.digit_scenes import picture_crops
from keras_gss.layers.maskige_codec import map_pixels
from keras_gss.metrics.segmentation import confusion_matrix
from keras_gss.metrics.segmentation import iou_from_confusion

# Colour and grey photographs and textures no DigitScenes split shows as an image (the
# far-OOD pictures stay out), plus `stereo_motorcycle` and scikit-learn's two sample photographs.
TOKENIZER_PICTURES = ("retina", "immunohistochemistry", "hubble_deep_field", "colorwheel",
                      "camera", "coins", "moon", "page", "clock", "text") + TEXTURES


def tokenizer_pictures():
    """The photographs `natural_image_crops` cuts (uint8 arrays), all shipped in PyPI packages."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    return ([getattr(skimage.data, name)() for name in TOKENIZER_PICTURES]
            + list(skimage.data.stereo_motorcycle()[:2]) + list(load_sample_images().images))


def natural_image_crops(count, side, seed=0, span=(1.0, 4.0), augment=0.5):
    """Crops of `tokenizer_pictures()` under photometric augmentations, as float32.

    Each crop's channels are permuted and, each with probability `augment`,
    its saturation is scaled by `U(1, 4)`, its contrast stretched to the
    full range per channel (autocontrast) and its colours posterized to 1–3
    bits (AutoAugment's operations); it is flipped with probability 0.5 and
    inverted with 0.3. The operations move photographs' colours over the
    whole RGB cube and give them flat regions and sharp edges; every crop
    is still a photograph, never a label map. The result is in the
    tokenizer's range `[0.1, 0.9]`.

    Returns:
        float32 array `(count, side, side, 3)`.
    """
    from skimage.color import hsv2rgb
    from skimage.color import rgb2hsv

    rng = np.random.default_rng([seed, 17])
    crops = picture_crops(tokenizer_pictures(), count, side, rng, span).astype("float32") / 255
    for i, crop in enumerate(crops):
        crop = crop[..., rng.permutation(3)]
        if rng.random() < augment:
            hsv = rgb2hsv(crop)
            hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1, 4), 0, 1)
            crop = hsv2rgb(hsv)
        if rng.random() < augment:
            low, high = crop.min((0, 1)), crop.max((0, 1))
            crop = (crop - low) / np.maximum(high - low, 1e-3)
        if rng.random() < augment:
            levels = 2 ** rng.integers(1, 4)
            crop = np.minimum(np.floor(crop * levels), levels - 1) / (levels - 1)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        if rng.random() < 0.3:
            crop = 1 - crop
        crops[i] = crop
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


def train_tokenizer(recipe, out_dir, steps=None, batch_size=None, verbose=1, command=None):
    """Stage I: train a tokenizer preset on natural-picture crops, freeze it, test it on maskiges.

    The recipe (a dict from `keras_gss.training.load_recipe` of, say,
    `zoo/recipes/gss_tokenizer_natural_crops.json`) names a
    `TOKENIZER_PRESETS` architecture, the crops (`data`: `count`, `side`,
    `seed`) and the optimizer. Writes `out_dir/tokenizer` (a
    `DiscreteVAE.from_preset` directory) and `out_dir/results.json` with
    the reconstruction mIoU of DigitScenes validation maskiges
    (`reconstruction_scenes` of them) for both palettes.

    Returns:
        `(tokenizer, summary)`.
    """
    import json
    import math
    import os
    import shlex
    import sys

    import keras

    from keras_gss.data.digit_scenes import DigitScenes
    from keras_gss.layers.maskige_codec import MaskigeCodec
    from keras_gss.models.gss.discrete_vae import DiscreteVAE
    from keras_gss.optimizers import build_optimizer
    from keras_gss.version import __version__

    steps = int(steps or recipe["iterations"])
    batch_size = int(batch_size or recipe["batch_size"])
    keras.utils.set_random_seed(recipe["seed"])
    data = recipe["data"]
    crops = natural_image_crops(data["count"], data["side"], seed=data.get("seed", 0))
    tokenizer = DiscreteVAE.from_preset(recipe["preset"], load_weights=False)
    tokenizer.compile(optimizer=build_optimizer(tokenizer, total_steps=steps, schedule=None,
                                                **recipe["optimizer"]))
    epochs = math.ceil(steps * batch_size / len(crops))
    if verbose:
        print(f"{recipe['name']}: {recipe['preset']} on {len(crops)} natural-picture crops of "
              f"{data['side']} px, {epochs} epochs of batch {batch_size}")
    tokenizer.fit(crops, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    tokenizer.trainable = False
    path = os.path.join(out_dir, "tokenizer")
    tokenizer.save_to_preset(path)
    scenes = DigitScenes(image_size=data.get("scene_size", 96), seed=0)
    _, labels, _ = scenes.generate("val", data.get("reconstruction_scenes", 200))
    results = {}
    for palette in ("maximal_distance", "random"):
        miou = reconstruction_miou(tokenizer, MaskigeCodec(scenes.num_classes, palette=palette),
                                   labels)
        results[palette] = {"miou": miou["miou"], "iou": miou["iou"].tolist()}
    summary = {"recipe": recipe, "steps": epochs * math.ceil(len(crops) / batch_size),
               "batch_size": batch_size, "keras_gss_version": __version__,
               "command": command or " ".join(shlex.quote(a) for a in sys.argv),
               "reconstruction_miou": results}
    with open(os.path.join(out_dir, "results.json"), "w") as file:
        json.dump(summary, file, indent=2)
    if verbose:
        print("DigitScenes validation maskiges, reconstruction mIoU (nearest colour): "
              + ", ".join(f"{p} {100 * r['miou']:.1f}" for p, r in results.items()))
        print(f"wrote {path}")
    return tokenizer, summary

"""Negative pasting (DenseHybrid Eq. 15) as a `tf.data` transform.

`x′ = (1 − m) ⊙ x⁺ + pad(x⁻, m)`: a negative crop `x⁻` is placed at a
random position of an inlier image `x⁺` and its pixels under the binary
mask `m` replace the inlier's (a hard paste, as the authors' code does).
`m` is a random rectangle of the crop with sides `min_size, min_size +
step, …` up to the crop's side, or the crop's own object mask (e.g. two
ADE20K classes), or either with probability 1/2 (`shape="mix"`, the
authors' "ADE20k-mix"). Labels under `m` become `negative_index`, which
every cross-entropy ignores and the dataset posterior reads as `d_out`.
The transform works on unbatched `(image, label)` elements of a fixed
size, before batching, so it runs under `tf.distribute` like any map.
"""

import tensorflow as tf

from keras_gss.utils.checks import check_choice
from keras_gss.utils.checks import check_positive

NEGATIVE_INDEX = 254
SHAPES = ("rectangle", "mask", "mix")


def _negative_stream(negatives, seed):
    """A repeated, shuffled stream of `(image, mask)` negatives."""
    if not isinstance(negatives, tf.data.Dataset):
        negatives = tf.data.Dataset.from_tensor_slices(negatives)
    spec = negatives.element_spec
    if not isinstance(spec, tuple):  # images alone: the whole crop may be pasted
        negatives = negatives.map(lambda image: (image, tf.ones(tf.shape(image)[:2], tf.bool)))
    size = negatives.cardinality()
    buffer = 1000 if size < 0 else tf.minimum(size, 1000)
    return negatives.repeat().shuffle(buffer, seed=seed)


def paste_negatives(dataset, negatives, probability=1.0, count=1, shape="rectangle",
                    min_size=16, step=8, negative_index=NEGATIVE_INDEX, seed=0):
    """Paste negative crops into the images of `dataset` (DenseHybrid Eq. 15).

    Args:
        dataset: `tf.data.Dataset` of unbatched `(image (H, W, 3), label
            (H, W))` with a static size.
        negatives: crops no test split uses: an array `(N, h, w, 3)`, a
            tuple `(images, masks (N, h, w) bool)`, or a `tf.data.Dataset`
            of such elements, `h, w ≤ H, W`, in the images' dtype and
            value range.
        probability: float. Chance that an image gets each paste. Defaults
            to `1.0` (the authors' code pastes into every crop).
        count: int. Pastes per image. Defaults to `1`.
        shape: `"rectangle"`, `"mask"` (the negative's own mask) or
            `"mix"`. Defaults to `"rectangle"`.
        min_size: int. Smallest rectangle side. Defaults to `16`.
        step: int. Rectangle sides grow in this step. Defaults to `8`.
        negative_index: int. Label of pasted pixels. Defaults to `254`.
        seed: int. Where each paste goes, its size and whether it happens are
            functions of `(seed, element index)`; which negative it is
            follows a seeded shuffle of `negatives`, which tf.data redraws
            for every new iterator.

    Returns:
        A dataset of `(x′, label)` with the same structure.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> images = np.zeros((2, 32, 32, 3), "float32")
    >>> labels = np.zeros((2, 32, 32), "int32")
    >>> data = tf.data.Dataset.from_tensor_slices((images, labels))
    >>> pasted = paste_negatives(data, np.ones((4, 24, 24, 3), "float32"))
    >>> image, label = next(iter(pasted))
    >>> bool(np.all((image.numpy()[..., 0] == 1) == (label.numpy() == 254)))
    True
    """
    check_choice("shape", shape, SHAPES)
    check_positive("min_size", min_size)
    check_positive("step", step)
    check_positive("count", count)
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"`probability` must be in [0, 1]; received {probability}.")
    image_spec = dataset.element_spec[0]
    height, width = image_spec.shape[0], image_spec.shape[1]
    if height is None or width is None:
        raise ValueError("`dataset` images need a static size (crop them first); received "
                         f"shape {tuple(image_spec.shape)}.")
    stream = _negative_stream(negatives, seed).batch(count, drop_remainder=True)
    neg_shape = stream.element_spec[0].shape
    if neg_shape[1] is not None and (neg_shape[1] > height or neg_shape[2] > width):
        raise ValueError(f"`negatives` crops ({neg_shape[1]}×{neg_shape[2]}) must fit in the "
                         f"images ({height}×{width}); crop or resize them smaller.")

    def paste(index, element, negative):
        image, label = element
        crops, masks = negative
        crops = tf.cast(crops, image.dtype)
        for k in range(count):
            seeds = tf.random.experimental.stateless_split(
                tf.stack([tf.cast(seed, tf.int64), index * count + k]), 6)
            crop, crop_mask = crops[k], masks[k]
            h, w = tf.shape(crop)[0], tf.shape(crop)[1]
            # Rectangle sides from {min_size, min_size + step, …} up to the crop's side.
            sides = tf.stack([(h - min_size) // step + 1, (w - min_size) // step + 1])
            draws = tf.random.stateless_uniform([2], seeds[0], 0.0, 1.0)
            rect = min_size + step * tf.cast(draws * tf.cast(sides, tf.float32), tf.int32)
            rect = tf.minimum(rect, tf.stack([h, w]))
            corner = tf.cast(tf.random.stateless_uniform([2], seeds[1], 0.0, 1.0)
                             * tf.cast(tf.stack([h, w]) - rect + 1, tf.float32), tf.int32)
            rows, columns = tf.range(h)[:, None], tf.range(w)[None, :]
            rectangle = ((rows >= corner[0]) & (rows < corner[0] + rect[0])
                         & (columns >= corner[1]) & (columns < corner[1] + rect[1]))
            use_mask = {"rectangle": False, "mask": True}.get(shape)
            if use_mask is None:  # "mix": each with probability 1/2
                use_mask = tf.random.stateless_uniform([], seeds[2]) < 0.5
            region = tf.where(use_mask, tf.cast(crop_mask, tf.bool), rectangle)
            region &= tf.random.stateless_uniform([], seeds[3]) < probability
            # The crop goes to a random place of the image (pad of Eq. 15).
            place = tf.cast(tf.random.stateless_uniform([2], seeds[4], 0.0, 1.0)
                            * tf.cast(tf.stack([height - h, width - w]) + 1, tf.float32),
                            tf.int32)
            padding = [[place[0], height - h - place[0]], [place[1], width - w - place[1]]]
            region = tf.pad(region, padding)
            region = tf.ensure_shape(region, [height, width])
            placed = tf.pad(crop, padding + [[0, 0]])
            image = tf.where(region[..., None], placed, image)
            label = tf.where(region, tf.cast(negative_index, label.dtype), label)
        return image, label

    return tf.data.Dataset.zip((dataset, stream)).enumerate().map(
        lambda index, pair: paste(index, *pair), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)


def object_negatives(dataset, size, classes_per_mask=2, seed=0):
    """`(crop, mask)` negatives from a labelled dataset, as the authors take ADE20K's.

    Each image is resized so its shorter side is `2 × size`, cropped at a
    random `size × size` place, and its mask is the union of
    `classes_per_mask` classes drawn (with replacement) from those in the
    crop, void included as the authors' code does.

    Args:
        dataset: `tf.data.Dataset` of `(image, label)` (e.g.
            `read_dataset("ade20k", root)`).
        size: int. Side of the crops.
        classes_per_mask: int. Defaults to `2`.
        seed: int. Defaults to `0`.
    """
    check_positive("size", size)

    def crop(index, image, label):
        seeds = tf.random.experimental.stateless_split(
            tf.stack([tf.cast(seed, tf.int64), index]), 2)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = 2.0 * size / tf.reduce_min(shape)
        new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
        image = tf.image.resize(tf.cast(image, tf.float32), new)
        label = tf.image.resize(tf.cast(label[..., None], tf.float32), new, method="nearest")
        both = tf.image.stateless_random_crop(tf.concat([image, label], -1),
                                              [size, size, 4], seeds[0])
        image, label = tf.cast(both[..., :3] + 0.5, tf.uint8), tf.cast(both[..., 3], tf.int32)
        present, _ = tf.unique(tf.reshape(label, [-1]))
        picks = tf.random.stateless_uniform([classes_per_mask], seeds[1], 0,
                                            tf.size(present), tf.int32)
        mask = tf.reduce_any(label[..., None] == tf.gather(present, picks), axis=-1)
        return image, mask

    return dataset.enumerate().map(lambda i, e: crop(i, *e[:2]),
                                   num_parallel_calls=tf.data.AUTOTUNE)

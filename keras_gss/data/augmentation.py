"""Joint image + mask augmentation for `tf.data` pipelines.

Each transform is called as `transform(image, label, *masks)` and returns
the same structure, so `dataset.map(transform)` works directly on the
readers' `(image, label)` and `(image, label, anomaly)` elements. Geometry is
applied identically to the image and every mask: images are resampled
bilinearly and keep their dtype, masks by nearest neighbour; padding fills
masks with `ignore_index`. Elements may be single `(H, W, 3)` images or
batches `(B, H, W, 3)` (one draw per batch). The transforms are TensorFlow
ops rather than Keras layers so the same pipeline runs under every Keras
backend (a Keras layer would convert tf.data's graph tensors to the
backend's arrays).

Defaults follow the mmsegmentation training pipeline the GMMSeg code uses:
resize by a ratio in [0.5, 2], crop (padding labels with 255), flip with
probability 0.5, photometric distortion.

>>> import numpy as np
>>> augment = Compose([RandomScale((2.0, 2.0)), RandomCrop(6, 6), RandomFlip(1.0)])
>>> image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
>>> label = np.arange(16, dtype=np.int32).reshape(4, 4)
>>> image, label = augment(image, label)
>>> tuple(image.shape), tuple(label.shape), image.dtype.name
((6, 6, 3), (6, 6), 'uint8')
"""

import abc

import tensorflow as tf

from keras_gss.utils.checks import check_positive


def _as_tensors(image, masks):
    image = tf.convert_to_tensor(image)
    if image.shape.rank not in (3, 4):
        raise ValueError(
            "`image` must be (height, width, 3) or (batch, height, width, 3); "
            f"received shape {tuple(image.shape)}."
        )
    return image, [tf.convert_to_tensor(mask) for mask in masks]


def _resize_image(image, size):
    resized = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
    return _restore_dtype(resized, image.dtype)


def _restore_dtype(values, dtype):
    if dtype.is_integer:
        values = tf.clip_by_value(tf.round(values), dtype.min, dtype.max)
    return tf.cast(values, dtype)


def _resize_mask(mask, size):
    resized = tf.image.resize(mask[..., None], size, method="nearest")
    return resized[..., 0]


class JointTransform(abc.ABC):
    """Base class: `transform(image, label, *masks)` -> same structure."""

    def __init__(self, seed=None):
        self.seed = seed

    def __call__(self, image, *masks):
        if not masks:
            raise ValueError(
                "Call a joint transform with `(image, label, *masks)`; "
                "received only an image."
            )
        image, masks = _as_tensors(image, masks)
        image, masks = self.transform(image, masks)
        return (image, *masks)

    @abc.abstractmethod
    def transform(self, image, masks):
        """`(image, [masks])` tensors -> transformed `(image, [masks])`."""

    def _uniform(self, low, high, shape=()):
        return tf.random.uniform(shape, low, high, seed=self.seed)

    def get_config(self):
        return {"seed": self.seed}


class RandomScale(JointTransform):
    """Resize by a ratio drawn uniformly from `scale_range`.

    With `base_size=(long, short)` the ratio applies to the size that fits
    the image, aspect kept, within `long × short` (mmseg's `img_scale` with
    `ratio_range`, e.g. `(2048, 512)` for ADE20K); otherwise to its own size.

    Args:
        scale_range: `(low, high)` resize ratios. Defaults to `(0.5, 2.0)`.
        base_size: `(long, short)` reference size, or `None`.
        seed: optional op seed.
    """

    def __init__(self, scale_range=(0.5, 2.0), base_size=None, seed=None):
        super().__init__(seed)
        if base_size is not None:
            if len(base_size) != 2 or min(base_size) <= 0:
                raise ValueError(f"`base_size` must be (long, short) in pixels; "
                                 f"received {base_size}.")
            base_size = (float(max(base_size)), float(min(base_size)))
        self.base_size = base_size
        low, high = scale_range
        check_positive("scale_range[0]", low)
        if high < low:
            raise ValueError(
                f"`scale_range` must be (low, high) with low <= high; "
                f"received {scale_range}."
            )
        self.scale_range = (float(low), float(high))

    def transform(self, image, masks):
        ratio = self._uniform(*self.scale_range) if self.scale_range[0] < self.scale_range[1] \
            else tf.constant(self.scale_range[0])
        hw = tf.cast(tf.shape(image)[-3:-1], tf.float32)
        if self.base_size is not None:
            long, short = self.base_size
            ratio = ratio * tf.minimum(long / tf.reduce_max(hw), short / tf.reduce_min(hw))
        size = tf.maximum(tf.cast(tf.round(hw * ratio), tf.int32), 1)
        return _resize_image(image, size), [_resize_mask(m, size) for m in masks]

    def get_config(self):
        return {**super().get_config(), "scale_range": self.scale_range,
                "base_size": self.base_size}


class RandomCrop(JointTransform):
    """Crop `(height, width)` at a random offset, padding when smaller.

    Images are padded at the bottom and right with `fill_value`, masks with
    `ignore_index`, so padded pixels never count as a class.

    Args:
        height, width: crop size.
        ignore_index: mask value of padded pixels. Defaults to `255`.
        fill_value: image value of padded pixels. Defaults to `0`.
        seed: optional op seed.
    """

    def __init__(self, height, width, ignore_index=255, fill_value=0, seed=None):
        super().__init__(seed)
        check_positive("height", height, integer=True)
        check_positive("width", width, integer=True)
        self.height, self.width = height, width
        self.ignore_index, self.fill_value = ignore_index, fill_value

    def transform(self, image, masks):
        shape = tf.shape(image)
        pad_h = tf.maximum(self.height - shape[-3], 0)
        pad_w = tf.maximum(self.width - shape[-2], 0)
        batch = [[0, 0]] if image.shape.rank == 4 else []
        image = tf.pad(image, batch + [[0, pad_h], [0, pad_w], [0, 0]],
                       constant_values=tf.cast(self.fill_value, image.dtype))
        masks = [tf.pad(m, batch + [[0, pad_h], [0, pad_w]],
                        constant_values=tf.cast(self.ignore_index, m.dtype)) for m in masks]
        shape = tf.shape(image)
        top = tf.random.uniform((), 0, shape[-3] - self.height + 1, tf.int32, seed=self.seed)
        left = tf.random.uniform((), 0, shape[-2] - self.width + 1, tf.int32, seed=self.seed)

        def crop(x):
            return x[..., top:top + self.height, left:left + self.width, :]

        image = crop(image)
        masks = [crop(m[..., None])[..., 0] for m in masks]
        return image, masks

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width,
                "ignore_index": self.ignore_index, "fill_value": self.fill_value}


class RandomFlip(JointTransform):
    """Flip left-right with `probability`.

    Args:
        probability: chance of a flip. Defaults to `0.5`.
        seed: optional op seed.
    """

    def __init__(self, probability=0.5, seed=None):
        super().__init__(seed)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"`probability` must be in [0, 1]; received {probability}.")
        self.probability = probability

    def transform(self, image, masks):
        flip = self._uniform(0.0, 1.0) < self.probability
        width_axis = image.shape.rank - 2

        def apply(x, axis):
            return tf.cond(flip, lambda: tf.reverse(x, [axis]), lambda: x)

        return apply(image, width_axis), [apply(m, width_axis) for m in masks]

    def get_config(self):
        return {**super().get_config(), "probability": self.probability}


class PhotometricDistortion(JointTransform):
    """Random brightness, contrast, saturation and hue; masks unchanged.

    Each distortion is applied with probability 0.5 (mmsegmentation's
    `PhotoMetricDistortion`). Values are in 0..255 image units.

    Args:
        brightness_delta: largest brightness shift. Defaults to `32`.
        contrast_range: contrast factor range. Defaults to `(0.5, 1.5)`.
        saturation_range: saturation factor range. Defaults to `(0.5, 1.5)`.
        hue_delta: largest hue shift in OpenCV units (180 = full turn).
            Defaults to `18`.
        seed: optional op seed.
    """

    def __init__(self, brightness_delta=32, contrast_range=(0.5, 1.5),
                 saturation_range=(0.5, 1.5), hue_delta=18, seed=None):
        super().__init__(seed)
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = tuple(float(v) for v in contrast_range)
        self.saturation_range = tuple(float(v) for v in saturation_range)
        self.hue_delta = float(hue_delta)

    def transform(self, image, masks):
        values = tf.cast(image, tf.float32)

        def maybe(fn, x):
            return tf.cond(self._uniform(0.0, 1.0) < 0.5, lambda: fn(x), lambda: x)

        values = maybe(lambda x: x + self._uniform(-self.brightness_delta, self.brightness_delta),
                       values)
        values = maybe(lambda x: tf.image.adjust_contrast(x, self._uniform(*self.contrast_range)),
                       values)
        values = tf.clip_by_value(values, 0.0, 255.0) / 255.0
        values = maybe(lambda x: tf.image.adjust_saturation(
            x, self._uniform(*self.saturation_range)), values)
        values = maybe(lambda x: tf.image.adjust_hue(
            x, self._uniform(-self.hue_delta, self.hue_delta) / 180.0), values)
        values = tf.clip_by_value(values, 0.0, 1.0) * 255.0
        return _restore_dtype(values, image.dtype), masks

    def get_config(self):
        return {**super().get_config(), "brightness_delta": self.brightness_delta,
                "contrast_range": self.contrast_range,
                "saturation_range": self.saturation_range, "hue_delta": self.hue_delta}


class Compose(JointTransform):
    """Apply joint transforms in order.

    Args:
        transforms: list of `JointTransform`s.
    """

    def __init__(self, transforms):
        super().__init__(None)
        self.transforms = list(transforms)

    def transform(self, image, masks):
        for transform in self.transforms:
            image, masks = transform.transform(image, masks)
        return image, masks

    def get_config(self):
        return {"transforms": [(type(t).__name__, t.get_config()) for t in self.transforms]}


def training_augmentation(crop_size, scale_range=(0.5, 2.0), ignore_index=255,
                          photometric=True, base_size=None, seed=None):
    """The standard segmentation training pipeline, as one transform.

    Random resize by `scale_range`, random crop to `crop_size` (padding
    labels with `ignore_index`), random flip and, if `photometric`,
    photometric distortion.

    Args:
        crop_size: int or `(height, width)`.
        base_size: `(long, short)` reference size of the resize (see
            `RandomScale`), or `None` for the image's own size.
    """
    height, width = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
    transforms = [RandomScale(scale_range, base_size, seed),
                  RandomCrop(height, width, ignore_index, seed=seed),
                  RandomFlip(0.5, seed)]
    if photometric:
        transforms.append(PhotometricDistortion(seed=seed))
    return Compose(transforms)

"""Inference on images larger than, or shaped unlike, the model's fixed input."""

import numpy as np

from keras_gss.models.open_set_image_segmenter import predict_logits_and_scores
from keras_gss.utils.checks import check_positive


def window_starts(size, crop, stride):
    """Top (or left) offsets of the windows along one axis (mmseg's slide mode).

    The last window ends at the border; a side shorter than `crop` gets one
    window over the padded image.

    Example:

    >>> window_starts(1024, 512, 341)
    [0, 341, 512]
    >>> window_starts(300, 512, 341)
    [0]
    """
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, max(size, crop)) - crop, 0) for i in range(count)]


def rescaled_size(height, width, scale):
    """`(height, width)` after mmseg's keep-ratio resize to `scale = (long, short)` bounds.

    The factor is the largest that keeps the long side within `max(scale)`
    and the short side within `min(scale)` (mmcv's `imrescale`); sides round
    to the nearest pixel.

    Example:

    >>> rescaled_size(480, 640, (2048, 512))     # a COCO image
    (512, 683)
    >>> rescaled_size(1024, 2048, (2048, 1024))  # Cityscapes: unchanged
    (1024, 2048)
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def window_settings(recorded, crop, stride=None):
    """`predict_sliding_window` arguments for a model of input `crop` from a record's settings.

    The recorded stride holds when the recorded crop is the model's (else
    2/3 of `crop`); a recorded `scale` always holds; `stride` overrides.

    Example:

    >>> window_settings({"crop": 512, "stride": 341, "scale": (2048, 512)}, 64)
    {'crop': 64, 'stride': 42, 'scale': (2048, 512)}
    >>> window_settings(None, 512)
    {'crop': 512, 'stride': 341}
    """
    recorded = recorded or {}
    window = {"crop": crop, "stride": stride or (
        recorded["stride"] if recorded.get("crop") == crop else 2 * crop // 3)}
    if recorded.get("scale"):
        window["scale"] = tuple(recorded["scale"])
    return window


def _resize(array, size):
    import keras  # half-pixel bilinear, as PyTorch's align_corners=False

    return keras.ops.convert_to_numpy(keras.ops.image.resize(array, size, interpolation="bilinear"))


def predict_sliding_window(model, images, crop, stride, batch_size=8, verbose=0, scale=None):
    """Logits (and anomaly scores) of any-size images from fixed-size windows.

    Each image is padded at the bottom and right to at least `crop` (pixels
    the model then sees as zeros, i.e. the mean colour after
    normalisation), cut into `crop × crop` windows `stride` apart whose last
    one meets the border, and every window is predicted. Logits and scores
    are averaged over the windows covering each pixel; padding is cut off.

    Args:
        model: a segmenter with a square `crop × crop` input; for a
            keras_gss segmenter, anomaly scores come from the same pass.
        images: array `(N, H, W, 3)`, prepared as the model expects.
        crop: int. Window side; must equal the model's input size.
        stride: int. Step between windows, at most `crop`.
        batch_size: int. Windows per `predict` call. Defaults to `8`.
        verbose: int. Keras progress bars. Defaults to `0`.
        scale: `(long, short)` or None. Resize each image first, keeping its
            aspect ratio (`rescaled_size`), and the logits and scores back to
            the image's size after (bilinear), as mmseg's test pipelines with
            `img_scale` do. Defaults to `None`: the images as they are.

    Returns:
        dict: `"logits"` `(N, H, W, C)` float32 and, for open-set models,
        `"anomaly_score"` `(N, H, W)` float32.

    Example:

    ```python
    out = keras_gss.predict_sliding_window(model, cityscapes_images, crop=768, stride=512)
    classes = out["logits"].argmax(-1)     # (N, 1024, 2048)
    ```
    """
    check_positive("crop", crop, integer=True)
    check_positive("stride", stride, integer=True)
    if stride > crop:
        raise ValueError(f"`stride`={stride} must not exceed `crop`={crop}: pixels between "
                         "windows would get no prediction.")
    input_size = tuple(model.input.shape[1:3])
    if input_size != (crop, crop):
        raise ValueError(f"`crop`={crop} must equal the model's input size {input_size}; "
                         "build the model with image_shape=(crop, crop, 3).")
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"`images` must have shape (N, H, W, 3); received {images.shape}.")
    count, height, width, _ = images.shape
    if scale is not None:
        if len(scale) != 2 or min(scale) <= 0:
            raise ValueError(f"`scale` must be (long side, short side) bounds such as (2048, 512); "
                             f"received {scale!r}.")
        size = rescaled_size(height, width, scale)
        out = predict_sliding_window(model, _resize(images, size), crop, stride,
                                     batch_size=batch_size, verbose=verbose)
        result = {"logits": _resize(out["logits"], (height, width))}
        if "anomaly_score" in out:
            score = _resize(out["anomaly_score"][..., None], (height, width))
            result["anomaly_score"] = score[..., 0]
        return result
    padded_h, padded_w = max(height, crop), max(width, crop)
    padded = np.zeros((count, padded_h, padded_w, 3), np.float32)
    padded[:, :height, :width] = images
    tops, lefts = window_starts(height, crop, stride), window_starts(width, crop, stride)
    boxes = [(top, left) for top in tops for left in lefts]
    logits = scores = None
    with_scores = False
    covered = np.zeros((padded_h, padded_w, 1), np.float32)
    for top, left in boxes:
        covered[top:top + crop, left:left + crop] += 1.0
    for index in range(count):
        windows = np.stack([padded[index, t:t + crop, l:l + crop] for t, l in boxes])
        window_logits, window_scores = predict_logits_and_scores(
            model, windows, batch_size=batch_size, verbose=verbose)
        with_scores = window_scores is not None
        if logits is None:
            logits = np.zeros((count, padded_h, padded_w, window_logits.shape[-1]), np.float32)
            scores = np.zeros((count, padded_h, padded_w, 1), np.float32)
        for k, (top, left) in enumerate(boxes):
            logits[index, top:top + crop, left:left + crop] += window_logits[k]
            if with_scores:
                scores[index, top:top + crop, left:left + crop, 0] += window_scores[k]
    result = {"logits": (logits / covered)[:, :height, :width]}
    if with_scores:
        result["anomaly_score"] = (scores / covered)[:, :height, :width, 0]
    return result

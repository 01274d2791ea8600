"""Tiny generated scenes: noisy coloured rectangles, with optional anomalies."""

import numpy as np

# Known classes are red, green and blue regions; anomalies are yellow.
PALETTE = np.array(
    [[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9], [0.9, 0.9, 0.7]],
    "float32",
)


def colour_scenes(n, size=32, num_classes=3, anomalies=False, seed=0,
                  noise=0.1, ignore_index=255):
    """Images of overlapping noisy rectangles, one class per colour.

    Deterministic for a seed. With `anomalies=True` every image also holds
    one rectangle of a colour no class has; its pixels are labelled
    `ignore_index` and marked in the anomaly mask. The top-left 2×2 pixels
    are always void, so ignore handling is exercised.

    Args:
        n: int. Number of images.
        size: int. Height and width. Defaults to `32`.
        num_classes: int. Known classes, at most 3. Defaults to `3`.
        anomalies: bool. Add an unknown-colour rectangle. Defaults to
            `False`.
        seed: int. Defaults to `0`.
        noise: float. Pixel noise std. Defaults to `0.1`.
        ignore_index: int. Void label. Defaults to `255`.

    Returns:
        `(images float32 (n, size, size, 3), labels int32 (n, size, size),
        anomaly_mask bool (n, size, size))`.

    Example:

    >>> images, labels, mask = colour_scenes(2, size=16, anomalies=True)
    >>> images.shape, labels.dtype.name, bool(mask.any())
    ((2, 16, 16, 3), 'int32', True)
    """
    if not 1 <= num_classes <= 3:
        raise ValueError(f"`num_classes` must be 1, 2 or 3; received {num_classes}.")
    rng = np.random.default_rng(seed)
    colour = np.empty((n, size, size), "int32")
    for i in range(n):
        colour[i] = rng.integers(num_classes)
        for _ in range(3):
            y0, x0 = rng.integers(0, size - size // 4, size=2)
            h, w = rng.integers(size // 4, size // 2, size=2)
            colour[i, y0:y0 + h, x0:x0 + w] = rng.integers(num_classes)
        if anomalies:
            y0, x0 = rng.integers(0, size - size // 4, size=2)
            h, w = rng.integers(size // 5, size // 3, size=2)
            colour[i, y0:y0 + h, x0:x0 + w] = len(PALETTE) - 1
    images = PALETTE[colour] + noise * rng.normal(size=colour.shape + (3,))
    anomaly_mask = colour == len(PALETTE) - 1
    labels = np.where(anomaly_mask, ignore_index, colour).astype("int32")
    labels[:, :2, :2] = ignore_index
    return images.astype("float32"), labels, anomaly_mask

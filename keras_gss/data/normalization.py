"""Image normalisation shared by the examples, the CLI and the zoo records."""

import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_images(images, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """uint8 `(..., 3)` images -> float32 `(x / 255 - mean) / std`.

    Example:

    >>> normalize_images(np.full((1, 1, 3), 255, np.uint8), mean=(0.5,) * 3, std=(0.5,) * 3)
    array([[[1., 1., 1.]]], dtype=float32)
    """
    images = np.asarray(images, np.float32) / 255.0
    return ((images - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).astype(np.float32)

"""GSS's maskige codec: class ids to colour images and back (the linear map X and X^-1)."""

import keras
import numpy as np
from keras import ops

from keras_gss.utils.checks import check_choice

PALETTES = ("maximal_distance", "random")
DECODINGS = ("nearest", "least_squares")
_EPS = 0.1  # DALL-E's logit-Laplace ε: the tokenizer sees pixels in [ε, 1 − ε]


def map_pixels(rgb):
    """`[0, 1]` RGB to the tokenizer's input range `[0.1, 0.9]` (`0.8·v + 0.1`)."""
    return (1.0 - 2.0 * _EPS) * rgb + _EPS


def unmap_pixels(pixels):
    """The tokenizer's `[0.1, 0.9]` back to `[0, 1]` RGB, clipped."""
    return ops.clip((pixels - _EPS) / (1.0 - 2.0 * _EPS), 0.0, 1.0)


def maximal_distance_palette(num_colours, jitter=15, seed=0):
    """Colours spread over the RGB cube by GSS's maximal-distance assumption.

    Eqs. 16–20 (App. B): per channel an arithmetic sequence (16–17) whose
    Cartesian product (18) holds at least `num_colours` colours, start points
    misaligned across channels (0, 1, 2; Eq. 19), and a random additive
    factor `t ∈ [0, jitter]` per value (Eq. 20). The paper does not say which
    colours of the product a class gets when it holds more than needed:
    ours are chosen greedily, farthest first, starting from the colour
    farthest from grey (App. B step iv keeps colours away from the cube's
    centre), so the minimum pairwise distance stays large.

    Args:
        num_colours: int. Number of colours.
        jitter: int. The largest additive factor `T`. Defaults to `15`
            (the paper's).
        seed: int. Seed of the additive factors. Defaults to `0`.

    Returns:
        int32 array `(num_colours, 3)` in `[0, 255]`.

    Example:

    >>> palette = maximal_distance_palette(9)
    >>> palette.shape, int(palette.min()) >= 0, int(palette.max()) <= 255
    ((9, 3), True, True)
    """
    if num_colours < 1:
        raise ValueError(f"`num_colours` must be at least 1; received {num_colours}.")
    sizes = [1, 1, 1]
    while np.prod(sizes) < num_colours:  # Eq. 18: the smallest even grid that holds them
        sizes[int(np.argmin(sizes))] += 1
    rng = np.random.default_rng(seed)
    channels = []
    for start, size in zip((0, 1, 2), sizes):  # Eq. 19: misaligned start points
        interval = (255 - start - jitter) // max(size - 1, 1)  # Eq. 17, room for the jitter
        values = start + interval * np.arange(size) + rng.integers(0, jitter + 1, size)  # Eq. 20
        channels.append(values)
    grid = np.stack(np.meshgrid(*channels, indexing="ij"), axis=-1).reshape(-1, 3)
    grid = grid.astype("float64")
    chosen = [int(np.argmax(np.sum((grid - 127.5) ** 2, axis=-1)))]
    nearest = np.sum((grid - grid[chosen[0]]) ** 2, axis=-1)
    for _ in range(num_colours - 1):
        chosen.append(int(np.argmax(nearest)))
        nearest = np.minimum(nearest, np.sum((grid - grid[chosen[-1]]) ** 2, axis=-1))
    return grid[chosen].astype("int32")


def random_palette(num_colours, seed=0):
    """Uniformly random colours (GSS-FF-R's β). Returns int32 `(num_colours, 3)`."""
    return np.random.default_rng(seed).integers(0, 256, (num_colours, 3)).astype("int32")


@keras.saving.register_keras_serializable(package="keras_gss")
class MaskigeCodec(keras.layers.Layer):
    """Masks as colour images ("maskiges") and back: GSS's `X` and `X⁻¹`.

    `encode` paints each class with its palette colour `β_k` (the linear map
    `x = cβ` of §3.3) and pixels of no known class with one extra colour,
    then maps the image to the tokenizer's input range (`0.8·v + 0.1`,
    DALL-E's `map_pixels`). `decode` inverts a (reconstructed) maskige in
    that range: `"nearest"` assigns each pixel its nearest class colour
    (squared RGB distance, the ignore colour excluded: the authors' code),
    `"least_squares"` takes `argmax_k (x γ)_k` with `γ = (βᵀβ)⁻¹βᵀ` (Eq. 15,
    the paper's training-free `X⁻¹`). The two differ: `βγ` is a rank-3
    projection, so least squares can misread even an exact maskige.
    Computed in float32 whatever the dtype policy; nothing is trainable.

    Args:
        num_classes: int. Number of classes `K`.
        palette: `"maximal_distance"` (Eqs. 16–20, GSS-FF), `"random"`
            (GSS-FF-R), or an int array `(K + 1, 3)` of RGB values in
            `[0, 255]`, the last row the colour of unlabelled pixels.
            Defaults to `"maximal_distance"`.
        seed: int. Seed of the palette's random parts. Defaults to `0`.

    Example:

    >>> import numpy as np
    >>> codec = MaskigeCodec(num_classes=3)
    >>> labels = np.array([[[0, 1], [2, 255]]])
    >>> maskige = codec.encode(labels)
    >>> tuple(maskige.shape), float(ops.min(maskige)) >= 0.1
    ((1, 2, 2, 3), True)
    >>> np.asarray(codec.decode(maskige)).tolist()
    [[[0, 1], [2, 0]]]

    Reference:
        Chen et al., "Generative Semantic Segmentation", CVPR 2023 (GSS),
        §3.3 and App. B.
    """

    def __init__(self, num_classes, palette="maximal_distance", seed=0, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if isinstance(palette, str):
            check_choice("palette", palette, PALETTES)
            make = maximal_distance_palette if palette == "maximal_distance" else random_palette
            colours = make(num_classes + 1, seed=seed)
        else:
            colours = np.asarray(palette)
            if colours.shape != (num_classes + 1, 3) or colours.min() < 0 or colours.max() > 255:
                raise ValueError(
                    f"`palette` must be `(num_classes + 1, 3)` = ({num_classes + 1}, 3) RGB "
                    f"values in [0, 255], the last row for unlabelled pixels; received shape "
                    f"{colours.shape}, range [{colours.min()}, {colours.max()}].")
            palette = colours.astype("int32").tolist()
        self.num_classes = num_classes
        self.palette = palette
        self.seed = seed
        self.colours = colours.astype("int32")  # (K + 1, 3), the last for unlabelled pixels

    @property
    def class_colours(self):
        """`β`: float32 `(K, 3)` class colours in `[0, 1]`."""
        return self.colours[: self.num_classes].astype("float32") / 255.0

    def encode(self, labels):
        """Class ids `(..., H, W)` to a maskige `(..., H, W, 3)` in `[0.1, 0.9]`.

        Any label outside `[0, K)` (an ignore index such as 255) gets the
        extra colour.
        """
        labels = ops.cast(labels, "int32")
        known = ops.logical_and(labels >= 0, labels < self.num_classes)
        index = ops.where(known, labels, self.num_classes)
        rgb = ops.take(ops.convert_to_tensor(self.colours / 255.0, "float32"), index, axis=0)
        return map_pixels(rgb)

    def call(self, labels):
        return self.encode(labels)

    def decode_scores(self, maskige, method="nearest"):
        """Per-class scores `(..., H, W, K)` of a maskige in `[0.1, 0.9]`; argmax decodes.

        `"nearest"`: minus the squared distance to each class colour;
        `"least_squares"`: `x γ` (Eq. 15).
        """
        check_choice("method", method, DECODINGS)
        rgb = unmap_pixels(ops.cast(maskige, "float32"))
        beta = ops.convert_to_tensor(self.class_colours)
        if method == "least_squares":
            beta_np = self.class_colours.astype("float64")
            gamma = np.linalg.pinv(beta_np.T @ beta_np) @ beta_np.T  # Eq. 15: (βᵀβ)⁻¹βᵀ, 3 × K
            return ops.matmul(rgb, ops.convert_to_tensor(gamma, "float32"))
        # ‖x − β_k‖² expanded: one matrix product, no (..., K, 3) broadcast.
        return (2.0 * ops.matmul(rgb, ops.transpose(beta)) - ops.sum(beta**2, axis=-1)
                - ops.sum(rgb**2, axis=-1, keepdims=True))

    def decode(self, maskige, method="nearest"):
        """A maskige `(..., H, W, 3)` in `[0.1, 0.9]` to class ids `(..., H, W)` (int32)."""
        return ops.cast(ops.argmax(self.decode_scores(maskige, method), axis=-1), "int32")

    def compute_output_spec(self, labels):
        return keras.KerasTensor(tuple(labels.shape) + (3,), "float32")

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "palette": self.palette,
                       "seed": self.seed})
        return config

"""A stack of Swin Transformer blocks on a feature map (GSS's MLA and its FT-W decoder)."""

import keras
import numpy as np
from keras import ops


def _relative_position_index(window):
    """`(w², w²)` index of each query-key offset into the `(2w − 1)²` bias table."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    coords = coords.reshape(2, -1)
    relative = (coords[:, :, None] - coords[:, None, :]).transpose(1, 2, 0) + window - 1
    return (relative[..., 0] * (2 * window - 1) + relative[..., 1]).astype("int32")


def _shift_mask(height, width, window, shift):
    """`(windows, w², w²)` additive mask: a shifted window attends only within one region."""
    regions = np.zeros((height, width), "int32")
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(bounds):
        for j, columns in enumerate(bounds):
            regions[rows, columns] = 3 * i + j
    regions = regions.reshape(height // window, window, width // window, window)
    regions = regions.transpose(0, 2, 1, 3).reshape(-1, window * window)
    return np.where(regions[:, :, None] != regions[:, None, :], -100.0, 0.0).astype("float32")


@keras.saving.register_keras_serializable(package="keras_gss")
class SwinBlock(keras.layers.Layer):
    """One Swin Transformer block on `(B, H, W, C)`: (shifted) window attention, then an MLP.

    Pre-norm, both residual; multi-head self-attention inside `window`² windows with a
    learned relative position bias; with `shift > 0` the map is rolled by `shift` first
    and attention is masked to each window's original region (SW-MSA). The map is
    zero-padded to whole windows, as Swin does.
    """

    def __init__(self, num_heads, window_size=7, shift=0, mlp_ratio=2.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = shift
        self.mlp_ratio = mlp_ratio

    def build(self, input_shape):
        height, width, channels = input_shape[1:]
        if height is None or width is None:
            raise ValueError(f"{type(self).__name__} needs a static height and width; "
                             f"received input shape {tuple(input_shape)}.")
        # Swin's rule: a map no larger than a window is one window, unshifted.
        self.window = min(self.window_size, height, width)
        self.shift_size = self.shift if min(height, width) > self.window_size else 0
        self.padded = (-(-height // self.window) * self.window,
                       -(-width // self.window) * self.window)
        self.norm1 = keras.layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy,
                                                     name="norm1")
        self.qkv = keras.layers.Dense(3 * channels, dtype=self.dtype_policy, name="qkv")
        self.proj = keras.layers.Dense(channels, dtype=self.dtype_policy, name="proj")
        self.norm2 = keras.layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy,
                                                     name="norm2")
        self.fc1 = keras.layers.Dense(int(channels * self.mlp_ratio), activation="gelu",
                                      dtype=self.dtype_policy, name="fc1")
        self.fc2 = keras.layers.Dense(channels, dtype=self.dtype_policy, name="fc2")
        self.relative_position_bias = self.add_weight(
            ((2 * self.window - 1) ** 2, self.num_heads), name="relative_position_bias",
            initializer=keras.initializers.TruncatedNormal(stddev=0.02))
        tokens = (None, channels)
        self.norm1.build(input_shape)
        self.qkv.build(tokens)
        self.proj.build(tokens)
        self.norm2.build(input_shape)
        self.fc1.build(tokens)
        self.fc2.build((None, int(channels * self.mlp_ratio)))

    def _attention(self, x):
        batch, channels = ops.shape(x)[0], x.shape[-1]
        (height, width), window, heads = self.padded, self.window, self.num_heads
        rows, columns = height // window, width // window
        windows = ops.reshape(x, (batch, rows, window, columns, window, channels))
        windows = ops.reshape(ops.transpose(windows, (0, 1, 3, 2, 4, 5)),
                              (-1, window * window, channels))
        qkv = ops.reshape(self.qkv(windows), (-1, window * window, 3, heads, channels // heads))
        query, key, value = (ops.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))
        scores = ops.matmul(query * (channels // heads) ** -0.5,
                            ops.transpose(key, (0, 1, 3, 2)))
        bias = ops.take(self.relative_position_bias, _relative_position_index(window), axis=0)
        scores = scores + ops.cast(ops.transpose(bias, (2, 0, 1)), scores.dtype)
        if self.shift_size:
            mask = _shift_mask(height, width, window, self.shift_size)
            area = window * window
            scores = ops.reshape(scores, (batch, rows * columns, heads, area, area))
            scores = ops.reshape(scores + ops.cast(mask[:, None], scores.dtype),
                                 (-1, heads, area, area))
        attended = ops.matmul(ops.softmax(scores, axis=-1), value)
        attended = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)),
                               (batch, rows, columns, window, window, channels))
        attended = ops.transpose(attended, (0, 1, 3, 2, 4, 5))
        return self.proj(ops.reshape(attended, (batch, height, width, channels)))

    def call(self, x):
        height, width = x.shape[1], x.shape[2]
        shortcut, x = x, self.norm1(x)
        x = ops.pad(x, ((0, 0), (0, self.padded[0] - height), (0, self.padded[1] - width),
                        (0, 0)))
        if self.shift_size:
            x = ops.roll(x, (-self.shift_size, -self.shift_size), axis=(1, 2))
        x = self._attention(x)
        if self.shift_size:
            x = ops.roll(x, (self.shift_size, self.shift_size), axis=(1, 2))
        x = shortcut + x[:, :height, :width]
        return x + self.fc2(self.fc1(self.norm2(x)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "window_size": self.window_size,
                       "shift": self.shift, "mlp_ratio": self.mlp_ratio})
        return config


@keras.saving.register_keras_serializable(package="keras_gss")
class SwinBlocks(keras.layers.Layer):
    """`depth` Swin Transformer blocks on a `(B, H, W, C)` map, windows alternately shifted.

    Each block (`SwinBlock`) is pre-norm window attention with relative
    position bias (W-MSA, then SW-MSA shifted by half a window) and a GELU
    MLP, both residual. GSS stacks them in its multi-level aggregation
    (dim 512, 16 heads, window 7, FFN 1024; D = 2 or 6) and in the GSS-FT-W
    maskige decoder (dim 128, 4 heads, window 7, FFN 256). Height and width
    must be known when the layer is built.

    Args:
        num_heads: int. Attention heads; must divide the channel count.
        depth: int. Number of blocks. Defaults to `2`.
        window_size: int. Defaults to `7`.
        mlp_ratio: float. FFN width over the channel count. Defaults to `2.0`
            (GSS's 1024 / 512 and 256 / 128).

    Example:

    >>> import numpy as np
    >>> blocks = SwinBlocks(num_heads=2, depth=2, window_size=4)
    >>> tuple(blocks(np.zeros((1, 8, 8, 16), "float32")).shape)
    (1, 8, 8, 16)

    Reference:
        Liu et al., "Swin Transformer: Hierarchical Vision Transformer using
        Shifted Windows", ICCV 2021.
    """

    def __init__(self, num_heads, depth=2, window_size=7, mlp_ratio=2.0, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.depth = depth
        self.window_size = window_size
        self.mlp_ratio = mlp_ratio
        self.blocks = [SwinBlock(num_heads, window_size, 0 if i % 2 == 0 else window_size // 2,
                                 mlp_ratio, dtype=self.dtype_policy, name=f"block_{i + 1}")
                       for i in range(depth)]

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels % self.num_heads:
            raise ValueError(f"`num_heads` ({self.num_heads}) must divide the channel count "
                             f"({channels}).")
        for block in self.blocks:
            block.build(input_shape)

    def call(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "depth": self.depth,
                       "window_size": self.window_size, "mlp_ratio": self.mlp_ratio})
        return config

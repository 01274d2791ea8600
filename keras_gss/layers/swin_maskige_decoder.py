"""GSS-FT-W's learned maskige decoder: windowed attention from colours to class logits."""

import keras

from keras_gss.layers.maskige_codec import unmap_pixels
from keras_gss.layers.swin_blocks import SwinBlocks


@keras.saving.register_keras_serializable(package="keras_gss")
class SwinMaskigeDecoder(keras.layers.Layer):
    """GSS-FT-W's `X⁻¹`: Swin blocks on the maskige's colours (§3.3, App. D(iii)).

    Reads a (reconstructed) maskige in the tokenizer's range `[0.1, 0.9]`,
    maps it back to `[0, 1]` RGB, then 1×1 convolution (no bias) + BN +
    ReLU to `embedding_dim`, `depth` Swin blocks (`SwinBlocks`, alternately
    shifted windows), LayerNorm and a 1×1 convolution to class logits
    `(B, H, W, K)`: the authors' head (embedding 128, 4 heads, window 7,
    FFN 256; depth 1 for Cityscapes, 2 for ADE20K).

    Args:
        num_classes: int. Number of classes `K`.
        embedding_dim: int. Defaults to `128`.
        num_heads: int. Defaults to `4`.
        window_size: int. Defaults to `7`.
        depth: int. Swin blocks. Defaults to `2`.

    Example:

    >>> import numpy as np
    >>> decoder = SwinMaskigeDecoder(num_classes=5, embedding_dim=16, depth=1)
    >>> tuple(decoder(np.full((1, 14, 14, 3), 0.5, "float32")).shape)
    (1, 14, 14, 5)
    """

    def __init__(self, num_classes, embedding_dim=128, num_heads=4, window_size=7, depth=2,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.window_size = window_size
        self.depth = depth
        self.embed = keras.layers.Conv2D(embedding_dim, 1, use_bias=False,
                                         dtype=self.dtype_policy, name="embed")
        self.embed_norm = keras.layers.BatchNormalization(dtype=self.dtype_policy,
                                                          name="embed_norm")
        self.swin_blocks = SwinBlocks(num_heads, depth=depth, window_size=window_size,
                                      dtype=self.dtype_policy, name="swin_blocks")
        self.norm = keras.layers.LayerNormalization(epsilon=1e-5, dtype=self.dtype_policy,
                                                    name="norm")
        self.classifier = keras.layers.Conv2D(num_classes, 1, dtype=self.dtype_policy,
                                              name="classifier")

    def call(self, maskige, training=None):
        x = keras.activations.relu(self.embed_norm(self.embed(unmap_pixels(maskige)),
                                                   training=training))
        return self.classifier(self.norm(self.swin_blocks(x)))

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "embedding_dim": self.embedding_dim,
                       "num_heads": self.num_heads, "window_size": self.window_size,
                       "depth": self.depth})
        return config

"""GSS-FT's learned maskige decoder: a 1×1–3×3–1×1 CNN from colours to class logits."""

import keras

from keras_gss.layers.maskige_codec import unmap_pixels


@keras.saving.register_keras_serializable(package="keras_gss")
class ConvMaskigeDecoder(keras.layers.Layer):
    """GSS-FT's `X⁻¹`: "two conv 1×1 layers enclosing a conv 3×3 layer" (App. D(iii)).

    Reads a (reconstructed) maskige in the tokenizer's range `[0.1, 0.9]`,
    maps it back to `[0, 1]` RGB, and returns class logits `(B, H, W, K)`
    from 1×1 → ReLU → 3×3 → ReLU → 1×1 convolutions. The paper gives no
    widths; ours default to 64.

    Args:
        num_classes: int. Number of classes `K`.
        hidden_dim: int. Width of the hidden layers. Defaults to `64`.

    Example:

    >>> import numpy as np
    >>> decoder = ConvMaskigeDecoder(num_classes=5)
    >>> tuple(decoder(np.full((1, 8, 8, 3), 0.5, "float32")).shape)
    (1, 8, 8, 5)
    """

    def __init__(self, num_classes, hidden_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.hidden_dim = hidden_dim
        self.convs = [
            keras.layers.Conv2D(hidden_dim, 1, activation="relu", dtype=self.dtype_policy,
                                name="conv_1"),
            keras.layers.Conv2D(hidden_dim, 3, padding="same", activation="relu",
                                dtype=self.dtype_policy, name="conv_2"),
            keras.layers.Conv2D(num_classes, 1, dtype=self.dtype_policy, name="conv_3"),
        ]

    def build(self, input_shape):
        shape = tuple(input_shape)
        for conv in self.convs:
            conv.build(shape)
            shape = shape[:-1] + (conv.filters,)

    def call(self, maskige):
        x = unmap_pixels(maskige)
        for conv in self.convs:
            x = conv(x)
        return x

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.num_classes,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "hidden_dim": self.hidden_dim})
        return config

"""DALL-E's discrete VAE (the GSS tokenizer) in Keras, at any width and depth."""

import keras
import numpy as np
from keras import ops

from keras_gss.utils.checks import check_rank


@keras.saving.register_keras_serializable(package="keras_gss")
class ResidualBlock(keras.layers.Layer):
    """A dVAE block: `id_path(x) + post_gain · res_path(x)`.

    `res_path` is ReLU–conv four times with kernel sizes `kernel_sizes`,
    through `n_out / 4` hidden channels; `id_path` is a 1×1 convolution
    where the channel count changes, else the identity; `post_gain` is
    `1 / n_layers²` (n_layers = every block of the network).
    """

    def __init__(self, input_dim, output_dim, post_gain, kernel_sizes, **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.post_gain = post_gain
        self.kernel_sizes = tuple(kernel_sizes)
        hidden = output_dim // 4
        widths = [hidden] * (len(kernel_sizes) - 1) + [output_dim]
        self.id_path = (keras.layers.Conv2D(output_dim, 1, dtype=self.dtype_policy,
                                            name="id_path")
                        if input_dim != output_dim else None)
        self.res_path = [keras.layers.Conv2D(w, k, padding="same", dtype=self.dtype_policy,
                                             name=f"res_path_conv_{i + 1}")
                         for i, (w, k) in enumerate(zip(widths, kernel_sizes))]

    def build(self, input_shape):
        shape = tuple(input_shape)
        if self.id_path is not None:
            self.id_path.build(shape)
        for conv in self.res_path:
            conv.build(shape)
            shape = shape[:-1] + (conv.filters,)

    def call(self, x):
        residual = x
        for conv in self.res_path:
            residual = conv(ops.relu(residual))
        shortcut = x if self.id_path is None else self.id_path(x)
        return shortcut + self.post_gain * residual

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.output_dim,)

    def get_config(self):
        config = super().get_config()
        config.update({"input_dim": self.input_dim, "output_dim": self.output_dim,
                       "post_gain": self.post_gain, "kernel_sizes": list(self.kernel_sizes)})
        return config


@keras.saving.register_keras_serializable(package="keras_gss")
class TokenEmbedding(keras.layers.Layer):
    """The decoder's input: a 1×1 convolution on one-hot tokens, read as a row lookup.

    Called on int tokens `(..., h, w)` it gathers kernel rows (no
    `vocab_size`-channel one-hot is made); on float token probabilities
    `(..., h, w, V)` (a relaxed one-hot while training) it is the matrix
    product. Both add the bias.
    """

    def __init__(self, vocab_size, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.output_dim = output_dim

    def build(self, input_shape):
        self.kernel = self.add_weight((self.vocab_size, self.output_dim), name="kernel",
                                      initializer=keras.initializers.RandomNormal(
                                          stddev=self.vocab_size**-0.5))
        self.bias = self.add_weight((self.output_dim,), name="bias", initializer="zeros")

    def call(self, tokens):
        if "int" in str(tokens.dtype):
            return ops.take(self.kernel, tokens, axis=0) + self.bias
        return ops.matmul(tokens, ops.cast(self.kernel, tokens.dtype)) + self.bias

    def compute_output_spec(self, tokens):
        shape = tuple(tokens.shape) if "int" in str(tokens.dtype) else tuple(tokens.shape)[:-1]
        return keras.KerasTensor(shape + (self.output_dim,), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"vocab_size": self.vocab_size, "output_dim": self.output_dim})
        return config


@keras.saving.register_keras_serializable(package="keras_gss")
class DiscreteVAE(keras.Model):
    """DALL-E's discrete VAE: an image to a grid of tokens, and tokens back to an image.

    The encoder is a 7×7 convolution, then `group_count` groups of
    `blocks_per_group` residual blocks of widths `hidden_dim · (1, 2, 4,
    8, …)` with 2× max pooling after every group but the last, then ReLU
    and a 1×1 convolution to `vocab_size` token logits: tokens are their
    argmax, at `2^(group_count − 1)`× down-sampling (8× for DALL-E's four
    groups). The decoder mirrors it from a token embedding of width
    `init_dim` (a 1×1 convolution on one-hot tokens), with nearest 2×
    up-sampling, to `2 · image_channels` outputs: the logit-Laplace means
    (the first `image_channels`, through a sigmoid) and log-scales. Inputs
    and reconstructions live in the tokenizer's pixel range `[0.1, 0.9]`
    (`keras_gss.layers.maskige_codec.map_pixels`). With the defaults it is
    the released DALL-E tokenizer's architecture (97.6 M parameters);
    `keras_gss.convert.dall_e` reads its weights.

    `fit(images)` trains it as an autoencoder through its discrete
    bottleneck: the decoder reads the argmax token, the gradient reaches
    the encoder through the softmax (straight-through), and the loss is the
    L1 error of the decoded means plus an optional KL term. (DALL-E trained
    with a Gumbel-softmax relaxation annealed towards the argmax; the
    straight-through form decodes in training exactly what inference
    decodes, which suits a small tokenizer trained in minutes.)

    Args:
        vocab_size: int. Number of tokens. Defaults to `8192`.
        hidden_dim: int. Width of the first group. Defaults to `256`.
        blocks_per_group: int. Residual blocks per group. Defaults to `2`.
        group_count: int. Groups (down-samplings + 1). Defaults to `4`.
        init_dim: int. Width of the decoder's token embedding. Defaults
            to `128`.
        image_channels: int. Defaults to `3`.
        kl_weight: float. Weight of the KL divergence of the token
            posterior from the uniform prior in the training loss (the
            dVAE's ELBO term, which spreads token use). Defaults to `0.0`.

    Example:

    >>> import numpy as np
    >>> dvae = DiscreteVAE(vocab_size=16, hidden_dim=8, blocks_per_group=1,
    ...                    group_count=3, init_dim=8)
    >>> tokens = dvae.encode(np.full((1, 16, 16, 3), 0.5, "float32"))
    >>> tuple(tokens.shape), tuple(dvae.decode(tokens).shape)
    ((1, 4, 4), (1, 16, 16, 3))

    Reference:
        Ramesh et al., "Zero-Shot Text-to-Image Generation", ICML 2021
        (the dVAE), as the GSS tokenizer (Chen et al., CVPR 2023, §3.3).
    """

    def __init__(self, vocab_size=8192, hidden_dim=256, blocks_per_group=2, group_count=4,
                 init_dim=128, image_channels=3, kl_weight=0.0, **kwargs):
        super().__init__(**kwargs)
        # === Layers ===
        post_gain = 1.0 / (group_count * blocks_per_group) ** 2
        widths = [hidden_dim * 2**g for g in range(group_count)]

        def group_blocks(prefix, g, width_in, width, kernel_sizes):
            return [ResidualBlock(width_in if b == 0 else width, width, post_gain, kernel_sizes,
                                  name=f"{prefix}_group_{g + 1}_block_{b + 1}")
                    for b in range(blocks_per_group)]

        images = keras.Input((None, None, image_channels), name="images")
        x = keras.layers.Conv2D(hidden_dim, 7, padding="same", name="encoder_input")(images)
        width_in = hidden_dim
        for g, width in enumerate(widths):
            for block in group_blocks("encoder", g, width_in, width, (3, 3, 3, 1)):
                x = block(x)
            width_in = width
            if g < group_count - 1:
                x = keras.layers.MaxPooling2D(2, name=f"encoder_group_{g + 1}_pool")(x)
        logits = keras.layers.Conv2D(vocab_size, 1, name="encoder_output")(ops.relu(x))
        self.encoder = keras.Model(images, logits, name="encoder")

        self.token_embedding = TokenEmbedding(vocab_size, init_dim, name="decoder_input")
        embedded = keras.Input((None, None, init_dim), name="embedded")
        x, width_in = embedded, init_dim
        for g, width in enumerate(reversed(widths)):
            for block in group_blocks("decoder", g, width_in, width, (1, 3, 3, 3)):
                x = block(x)
            width_in = width
            if g < group_count - 1:
                x = keras.layers.UpSampling2D(2, name=f"decoder_group_{g + 1}_upsample")(x)
        outputs = keras.layers.Conv2D(2 * image_channels, 1, name="decoder_output")(ops.relu(x))
        self.decoder_trunk = keras.Model(embedded, outputs, name="decoder_trunk")
        self.token_embedding.build((None, None, None, vocab_size))

        # === Config ===
        self.vocab_size = vocab_size
        self.hidden_dim = hidden_dim
        self.blocks_per_group = blocks_per_group
        self.group_count = group_count
        self.init_dim = init_dim
        self.image_channels = image_channels
        self.kl_weight = kl_weight
        self.build((None, None, None, image_channels))

    def build(self, input_shape):
        self.built = True

    @property
    def downsampling(self):
        """The side of the image patch one token stands for."""
        return 2 ** (self.group_count - 1)

    def token_logits(self, images):
        """Token logits `(B, h, w, V)` of images `(B, H, W, C)` in `[0.1, 0.9]`."""
        check_rank("images", images, 4, "(batch, height, width, channels)")
        if images.shape[1] is not None and (images.shape[1] % self.downsampling
                                            or images.shape[2] % self.downsampling):
            raise ValueError(f"`images` height and width must be multiples of "
                             f"{self.downsampling} (the tokenizer's down-sampling); received "
                             f"shape {tuple(images.shape)}. Pad or resize them.")
        return self.encoder(images)

    def encode(self, images):
        """Tokens `(B, h, w)` (int32): the argmax of the encoder's logits."""
        return ops.cast(ops.argmax(self.token_logits(images), axis=-1), "int32")

    def decoder_outputs(self, tokens):
        """The decoder's `2·C` outputs of int tokens `(B, h, w)` or probabilities `(…, V)`."""
        return self.decoder_trunk(self.token_embedding(tokens))

    def decode(self, tokens):
        """Images `(B, H, W, C)` in the tokenizer's range: the sigmoid of the means."""
        outputs = self.decoder_outputs(tokens)
        return ops.sigmoid(ops.cast(outputs[..., : self.image_channels], "float32"))

    def call(self, images, training=False):
        """Token logits and the reconstruction through straight-through tokens.

        The forward pass decodes the argmax token (one-hot) in training and
        inference alike; in training the gradient passes to the encoder
        through the softmax (the straight-through estimator).
        """
        logits = self.encoder(images)
        hard = ops.one_hot(ops.argmax(logits, axis=-1), self.vocab_size, dtype=logits.dtype)
        soft = ops.softmax(logits, axis=-1)
        tokens = soft + ops.stop_gradient(hard - soft)
        return {"token_logits": logits, "reconstruction": self.decoder_outputs(tokens)}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """L1 of the reconstructed means against the images, plus `kl_weight`·KL(q ‖ uniform)."""
        images = ops.cast(x, "float32")
        means = ops.sigmoid(ops.cast(y_pred["reconstruction"][..., : self.image_channels],
                                     "float32"))
        loss = ops.mean(ops.abs(means - images))
        if self.kl_weight:
            log_q = ops.log_softmax(ops.cast(y_pred["token_logits"], "float32"), axis=-1)
            kl = ops.sum(ops.exp(log_q) * (log_q + float(np.log(self.vocab_size))), axis=-1)
            loss = loss + self.kl_weight * ops.mean(kl)
        return loss

    def get_config(self):
        return {"vocab_size": self.vocab_size, "hidden_dim": self.hidden_dim,
                "blocks_per_group": self.blocks_per_group, "group_count": self.group_count,
                "init_dim": self.init_dim, "image_channels": self.image_channels,
                "kl_weight": self.kl_weight, "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

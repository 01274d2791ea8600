"""DALL-E's discrete VAE (the GSS tokenizer) in Keras, at any width and depth."""

import json
import warnings
import os

import keras
import numpy as np
from keras import ops

from keras_gss.models.gss.gss_presets import TOKENIZER_PRESETS
from keras_gss.preset_files import TOKENIZER_CONFIG_FILE
from keras_gss.preset_files import TOKENIZER_WEIGHTS_FILE
from keras_gss.preset_files import VERSION_FILE
from keras_gss.preset_files import check_version
from keras_gss.preset_files import read_json
from keras_gss.preset_files import write_version
from keras_gss.utils.checks import check_rank
from keras_gss.utils.checks import close_matches


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

    `fit(images)` trains it as a VQ-VAE written in this design (ours; DALL-E
    trained a Gumbel-softmax relaxation, which collapsed to a few tokens at
    CPU scale): the decoder's token embedding is the codebook, the encoder's
    ReLU features take their nearest code (straight-through gradient), the
    loss is the L1 error of the decoded means plus the codebook and
    commitment terms (`commitment_weight`), unused codes restart at encoder
    features every `restart_interval` steps, and when `fit` returns the
    encoder's output convolution holds the codebook's distances (kernel
    `2·Cᵀ`, bias `−‖c‖²`), so its argmax is the nearest code. It needs
    `init_dim` equal to the last group's width, `hidden_dim ·
    2^(group_count − 1)`.

    Args:
        vocab_size: int. Number of tokens. Defaults to `8192`.
        hidden_dim: int. Width of the first group. Defaults to `256`.
        blocks_per_group: int. Residual blocks per group. Defaults to `2`.
        group_count: int. Groups (down-samplings + 1). Defaults to `4`.
        init_dim: int. Width of the decoder's token embedding. Defaults
            to `128`.
        image_channels: int. Defaults to `3`.
        commitment_weight: float. Weight of the commitment term in `fit`'s
            loss (VQ-VAE's β). Defaults to `0.25`.
        restart_interval: int. Every this many steps, `fit` (on arrays or a
            `tf.data.Dataset`) restarts the codes no feature of 256 training
            images chose.
            Defaults to `100`; `0` never restarts.

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
                 init_dim=128, image_channels=3, commitment_weight=0.25, restart_interval=100,
                 **kwargs):
        trainable = kwargs.pop("trainable", True)  # set once the layers exist (a frozen preset)
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
        features = keras.layers.ReLU(name="encoder_features")(x)
        logits = keras.layers.Conv2D(vocab_size, 1, name="encoder_output")(features)
        self.encoder = keras.Model(images, logits, name="encoder")
        self.encoder_features = keras.Model(images, features, name="encoder_features")

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
        self.commitment_weight = commitment_weight
        self.restart_interval = restart_interval
        self.build((None, None, None, image_channels))
        self.trainable = trainable

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
        """Token logits and reconstruction; in training, the VQ form `fit` trains.

        Inference decodes the argmax token. Training quantises the encoder's
        features to their nearest code (a row of the token embedding) and
        passes the gradient straight through to the encoder.
        """
        if not training:
            logits = self.encoder(images)
            tokens = ops.cast(ops.argmax(logits, axis=-1), "int32")
            return {"token_logits": logits, "reconstruction": self.decoder_outputs(tokens)}
        features = self.encoder_features(images, training=True)
        codes = self.nearest_codes(features)
        quantised = ops.take(self.token_embedding.kernel, codes, axis=0)
        decoder_input = features + ops.stop_gradient(quantised - features)
        return {"features": features, "quantised": quantised,
                "reconstruction": self.decoder_trunk(decoder_input + self.token_embedding.bias)}

    def nearest_codes(self, features):
        """The nearest row of the token embedding (the codebook) to each feature vector."""
        codebook = self.token_embedding.kernel
        distances = (ops.sum(codebook**2, axis=-1)
                     - 2.0 * ops.einsum("...c,vc->...v", features, codebook))
        return ops.cast(ops.argmin(distances, axis=-1), "int32")

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """L1 of the decoded means, plus the codebook and commitment terms of the VQ form."""
        images = ops.cast(x, "float32")
        means = ops.sigmoid(ops.cast(y_pred["reconstruction"][..., : self.image_channels],
                                     "float32"))
        loss = ops.mean(ops.abs(means - images))
        if "quantised" in y_pred:
            features, quantised = y_pred["features"], y_pred["quantised"]
            loss = (loss + ops.mean((ops.stop_gradient(features) - quantised) ** 2)
                    + self.commitment_weight
                    * ops.mean((features - ops.stop_gradient(quantised)) ** 2))
        return loss

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        """Train the VQ form (see the class docstring); the encoder's logits follow the codebook."""
        width = self.hidden_dim * 2 ** (self.group_count - 1)
        if self.init_dim != width:
            raise ValueError(f"`fit` trains the token embedding as the codebook of the encoder's "
                             f"{width}-wide features; this tokenizer has init_dim="
                             f"{self.init_dim}. Build it with init_dim={width}.")
        callbacks = list(callbacks or [])
        sample = _restart_sample(x) if self.restart_interval else None
        if sample is not None:
            callbacks.append(_CodeRestarts(self.restart_interval, sample))
        elif self.restart_interval:
            warnings.warn("DiscreteVAE.fit restarts unused codes on a sample of arrays or of a "
                          "tf.data.Dataset; this input is neither, so codes will not restart. "
                          "Pass arrays or a tf.data.Dataset, or restart_interval=0 to silence.",
                          stacklevel=2)
        output = self.encoder.get_layer("encoder_output")
        output.trainable = False  # written from the codebook when training ends
        try:
            return super().fit(x, y, *args, callbacks=callbacks, **kwargs)
        finally:
            output.trainable = True
            self.write_codebook_logits()

    def write_codebook_logits(self):
        """Set the encoder's output convolution to the codebook's distances (argmax = nearest)."""
        codebook = ops.convert_to_numpy(self.token_embedding.kernel)
        output = self.encoder.get_layer("encoder_output")
        output.kernel.assign(2.0 * codebook.T[None, None])
        output.bias.assign(-np.sum(codebook**2, axis=-1))

    def save_to_preset(self, preset_dir):
        """Write the tokenizer (config and weights) to a directory `from_preset` reads."""
        os.makedirs(preset_dir, exist_ok=True)
        config = keras.saving.serialize_keras_object(self)
        config.pop("compile_config", None)  # a frozen tokenizer keeps no training state
        with open(os.path.join(preset_dir, TOKENIZER_CONFIG_FILE), "w") as file:
            json.dump(config, file, indent=2)
        optimizer = getattr(self, "optimizer", None)
        keras.saving.save_weights(self, os.path.join(preset_dir, TOKENIZER_WEIGHTS_FILE),
                                  objects_to_skip=[optimizer] if optimizer else None)
        write_version(preset_dir)

    @classmethod
    def from_preset(cls, preset, load_weights=True):
        """A tokenizer from a name in `TOKENIZER_PRESETS`, a `save_to_preset` directory, or
        that directory published on the Hub (`"hf://org/repo[@revision]"`).

        A name builds the architecture (its weights are converted or trained
        locally, never downloaded: the record says how); pass
        `load_weights=False` for it.

        Example:

        >>> dvae = DiscreteVAE.from_preset("gss_tokenizer_natural_crops", load_weights=False)
        >>> dvae.vocab_size, dvae.downsampling
        (1024, 4)
        """
        if preset in TOKENIZER_PRESETS:
            record = TOKENIZER_PRESETS[preset]
            if load_weights:
                raise ValueError(f"Tokenizer preset {preset!r} ships as an architecture; its "
                                 f"weights: {record['weights']}. Load that directory, or pass "
                                 "load_weights=False.")
            return cls(**record["config"], name=preset)
        if str(preset).startswith("hf://"):  # a published tokenizer: its two files
            from keras_gss.hub import download_files

            preset = download_files(preset, (TOKENIZER_CONFIG_FILE, TOKENIZER_WEIGHTS_FILE,
                                             VERSION_FILE))
        path = os.path.join(str(preset), TOKENIZER_CONFIG_FILE)
        if not os.path.isfile(path):
            matches = close_matches(str(preset), TOKENIZER_PRESETS)
            hint = f" Did you mean {', '.join(map(repr, matches))}?" if matches else ""
            raise ValueError(f"Unknown tokenizer preset {preset!r}: not a name in "
                             f"{sorted(TOKENIZER_PRESETS)} nor a directory holding "
                             f"{TOKENIZER_CONFIG_FILE} (written by save_to_preset).{hint}")
        check_version(preset)
        fix = "Save the tokenizer again with tokenizer.save_to_preset(directory)."
        tokenizer = keras.saving.deserialize_keras_object(read_json(path, fix))
        if load_weights:
            tokenizer.load_weights(os.path.join(preset, TOKENIZER_WEIGHTS_FILE))
        return tokenizer

    def get_config(self):
        return {"vocab_size": self.vocab_size, "hidden_dim": self.hidden_dim,
                "blocks_per_group": self.blocks_per_group, "group_count": self.group_count,
                "init_dim": self.init_dim, "image_channels": self.image_channels,
                "commitment_weight": self.commitment_weight,
                "restart_interval": self.restart_interval,
                "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _restart_sample(x, count=256):
    """Up to `count` training images to find unused codes on: drawn from arrays, the first
    batches of a tf.data.Dataset (of images, or tuples led by them); None for other inputs."""
    if hasattr(x, "shape"):
        return np.asarray(x[np.random.default_rng(0).permutation(len(x))[:count]])
    if not hasattr(x, "as_numpy_iterator"):
        return None
    images, seen = [], 0
    for element in x.as_numpy_iterator():
        batch = np.asarray(element[0] if isinstance(element, tuple) else element)
        images.append(batch if batch.ndim == 4 else batch[None])  # unbatched: one image
        seen += len(images[-1])
        if seen >= count:
            break
    return np.concatenate(images)[:count] if images else None


class _CodeRestarts(keras.callbacks.Callback):
    """Every `interval` steps, codes no feature of `sample` chose restart at its features.

    Stops for the last tenth of training, so the decoder settles on the final codes.
    """

    def __init__(self, interval, sample):
        super().__init__()
        self.interval, self.sample = interval, sample
        self.rng = np.random.default_rng(0)
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        total = (self.params.get("epochs") or 1) * (self.params.get("steps") or 0)
        if self.steps % self.interval or (total and self.steps > 0.9 * total):
            return
        model = self.model
        features = ops.convert_to_numpy(model.encoder_features.predict(
            self.sample, batch_size=64, verbose=0)).reshape(-1, model.init_dim)
        codes = ops.convert_to_numpy(model.nearest_codes(features))
        dead = np.setdiff1d(np.arange(model.vocab_size), codes)
        if len(dead):
            codebook = ops.convert_to_numpy(model.token_embedding.kernel).copy()
            picked = features[self.rng.integers(0, len(features), len(dead))]
            codebook[dead] = picked + 0.01 * self.rng.normal(size=picked.shape)
            model.token_embedding.kernel.assign(codebook)

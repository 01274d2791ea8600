"""A small fully convolutional normalizing flow: DenseHybrid's synthetic-negative generator."""

import math

import keras
import numpy as np
from keras import ops

_LOG_2PI = math.log(2.0 * math.pi)


def _squeeze(x):
    """(B, H, W, C) → (B, H/2, W/2, 4C): each 2×2 block becomes channels."""
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height // 2, 2, width // 2, 2, channels))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, height // 2, width // 2, 4 * channels))


def _unsqueeze(x):
    _, height, width, channels = x.shape
    x = ops.reshape(x, (-1, height, width, 2, 2, channels // 4))
    x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
    return ops.reshape(x, (-1, 2 * height, 2 * width, channels // 4))


def _pixels(x):
    return float(x.shape[1] * x.shape[2])


@keras.saving.register_keras_serializable(package="keras_gss")
class ActNorm(keras.layers.Layer):
    """Per-channel affine `y = (x + b)·exp(s)` (Glow); `initialize` sets unit-variance outputs."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")
        self.log_scale = self.add_weight(shape=(channels,), initializer="zeros",
                                         name="log_scale")

    def call(self, x, reverse=False):
        if reverse:
            return x * ops.exp(-self.log_scale) - self.bias
        return (x + self.bias) * ops.exp(self.log_scale), _pixels(x) * ops.sum(self.log_scale)

    def initialize(self, x):
        """Data-dependent initialisation from a batch (eager)."""
        x = ops.convert_to_numpy(x).reshape(-1, x.shape[-1])
        self.bias.assign(-x.mean(0))
        self.log_scale.assign(-np.log(x.std(0) + 1e-6))


@keras.saving.register_keras_serializable(package="keras_gss")
class InvertibleConv1x1(keras.layers.Layer):
    """Invertible 1×1 convolution `y = x W` (Glow), `W` a random rotation at start."""

    def __init__(self, seed=0, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed

    def build(self, input_shape):
        channels = input_shape[-1]
        rotation = np.linalg.qr(np.random.default_rng(self.seed).normal(
            size=(channels, channels)))[0].astype("float32")
        self.kernel = self.add_weight(shape=(channels, channels), name="kernel",
                                      initializer=lambda shape, dtype=None: rotation)

    def call(self, x, reverse=False):
        if reverse:
            return ops.matmul(x, ops.inv(self.kernel))
        return ops.matmul(x, self.kernel), _pixels(x) * ops.slogdet(self.kernel)[1]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


@keras.saving.register_keras_serializable(package="keras_gss")
class AffineCoupling(keras.layers.Layer):
    """Affine coupling (RealNVP/Glow): half the channels shift and scale the other half.

    `y_b = (x_b + t(x_a))·σ(h(x_a) + 2)` with a 3×3–1×1–3×3 conv net whose
    last layer starts at zero, so the coupling starts near the identity.
    """

    def __init__(self, hidden=32, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden

    def build(self, input_shape):
        channels = input_shape[-1]
        self.half = channels // 2
        self.net = keras.Sequential([
            keras.layers.Conv2D(self.hidden, 3, padding="same", activation="relu"),
            keras.layers.Conv2D(self.hidden, 1, activation="relu"),
            keras.layers.Conv2D(2 * (channels - self.half), 3, padding="same",
                                kernel_initializer="zeros"),
        ], name="net")
        self.net.build(tuple(input_shape[:-1]) + (self.half,))

    def call(self, x, reverse=False):
        x_a, x_b = x[..., :self.half], x[..., self.half:]
        h = self.net(x_a)
        shift, raw = h[..., 0::2], h[..., 1::2]
        scale = ops.sigmoid(raw + 2.0)
        if reverse:
            return ops.concatenate([x_a, x_b / scale - shift], axis=-1)
        y_b = (x_b + shift) * scale
        return (ops.concatenate([x_a, y_b], axis=-1),
                ops.sum(ops.log(scale), axis=(1, 2, 3)))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden}


@keras.saving.register_keras_serializable(package="keras_gss")
class NormalizingFlow(keras.Model):
    """A multi-scale Glow-style flow over image patches of any size divisible by `2^levels`.

    Each level squeezes 2×2 blocks into channels, then applies `steps`
    × (actnorm, invertible 1×1 conv, affine coupling); every level but the
    last factors out half its channels as latent. Latents are standard
    normal. Fully convolutional, so it evaluates and samples any patch
    size; DenseHybrid samples negatives from it (Eq. 16-18).

    This flow stands in for DenseFlow-45-6, the paper's flow, whose
    architecture the paper does not give and which is far too large for
    a CPU benchmark: a few thousand parameters per coupling instead.

    Args:
        levels: int. Squeeze / factor-out levels. Defaults to `2`.
        steps: int. Flow steps per level. Defaults to `4`.
        hidden: int. Width of the coupling nets. Defaults to `32`.
        channels: int. Image channels. Defaults to `3`.
        seed: int. Seeds the 1×1 convolutions and sampling. Defaults to `0`.

    Example:

    >>> import numpy as np
    >>> flow = NormalizingFlow(levels=2, steps=1, hidden=8)
    >>> x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    >>> z = flow.encode(x)
    >>> float(np.abs(flow.decode(z) - x).max()) < 1e-4
    True
    >>> tuple(flow.sample(3, 12, 16).shape)
    (3, 12, 16, 3)
    """

    def __init__(self, levels=2, steps=4, hidden=32, channels=3, seed=0, **kwargs):
        kwargs.setdefault("dtype", "float32")  # log-determinants stay in float32
        super().__init__(**kwargs)
        self.levels = levels
        self.steps = steps
        self.hidden = hidden
        self.channels = channels
        self.seed = seed
        self.blocks = [[(ActNorm(name=f"actnorm_{l}_{k}"),
                         InvertibleConv1x1(seed=seed * 1000 + l * 100 + k,
                                           name=f"conv1x1_{l}_{k}"),
                         AffineCoupling(hidden, name=f"coupling_{l}_{k}"))
                        for k in range(steps)] for l in range(levels)]
        self.seed_generator = keras.random.SeedGenerator(seed, name="sample_seed")

    def build(self, input_shape=None):
        size, channels = 2 ** self.levels, self.channels
        for level, block in enumerate(self.blocks):
            size, channels = size // 2, channels * 4
            for layer in (layer for step in block for layer in step):
                if not layer.built:
                    layer.build((None, size, size, channels))
            if level < self.levels - 1:
                channels //= 2
        self.built = True

    def _check(self, height, width):
        factor = 2 ** self.levels
        if height % factor or width % factor:
            raise ValueError(f"Patch size {height}×{width} must be divisible by "
                             f"2^levels = {factor}.")

    def forward(self, x, initialize=False):
        """`(latents per level, log|det ∂z/∂x| per example)`."""
        self._check(x.shape[1], x.shape[2])
        if not self.built:
            self.build()
        latents, log_det = [], 0.0
        for level, block in enumerate(self.blocks):
            x = _squeeze(x)
            for actnorm, conv, coupling in block:
                if initialize:
                    actnorm.initialize(x)
                for layer in (actnorm, conv, coupling):
                    x, term = layer(x)
                    log_det = log_det + term
            if level < self.levels - 1:
                half = x.shape[-1] // 2
                latents.append(x[..., :half])
                x = x[..., half:]
        latents.append(x)
        return latents, log_det

    def encode(self, x):
        """Latents of images `(B, H, W, C)`, one array per level."""
        return self.forward(ops.cast(x, "float32"))[0]

    def decode(self, latents):
        """Images from latents (the inverse of `encode`)."""
        if not self.built:
            self.build()
        x = latents[-1]
        for level in reversed(range(self.levels)):
            if level < self.levels - 1:
                x = ops.concatenate([latents[level], x], axis=-1)
            for actnorm, conv, coupling in reversed(self.blocks[level]):
                for layer in (coupling, conv, actnorm):
                    x = layer(x, reverse=True)
            x = _unsqueeze(x)
        return x

    def log_likelihood(self, x):
        """`ln p(x)` per example, in nats (change of variables, standard normal latents)."""
        latents, log_det = self.forward(ops.cast(x, "float32"))
        prior = sum(-0.5 * ops.sum(z * z + _LOG_2PI, axis=(1, 2, 3)) for z in latents)
        return prior + log_det

    def call(self, x):
        """Negative log-likelihood per dimension, in nats, per example."""
        dims = float(np.prod(x.shape[1:]))
        return -self.log_likelihood(x) / dims

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return ops.mean(y_pred)  # maximum likelihood (Eq. 16)

    def initialize(self, x):
        """Data-dependent actnorm initialisation from a batch of patches (eager)."""
        self.forward(ops.cast(x, "float32"), initialize=True)

    def sample(self, count, height, width, temperature=1.0):
        """`count` patches `(count, height, width, C)` from the flow."""
        self._check(height, width)
        shapes, size_h, size_w, channels = [], height, width, self.channels
        for level in range(self.levels):
            size_h, size_w, channels = size_h // 2, size_w // 2, channels * 4
            if level < self.levels - 1:
                channels //= 2
                shapes.append((count, size_h, size_w, channels))
        shapes.append((count, size_h, size_w, channels))
        latents = [temperature * keras.random.normal(shape, seed=self.seed_generator)
                   for shape in shapes]
        return self.decode(latents)

    def get_config(self):
        return {**super().get_config(), "levels": self.levels, "steps": self.steps,
                "hidden": self.hidden, "channels": self.channels, "seed": self.seed}


def pretrain_flow(flow, images, patch_size=32, steps=500, batch_size=32, learning_rate=1e-3,
                  seed=0, verbose=0):
    """Maximum-likelihood pre-training on random inlier patches (before joint training).

    Patches are random `patch_size` crops of `images` (normalised float
    arrays `(N, H, W, C)`), dequantised with uniform noise of one 8-bit
    level, as the paper pre-trains on 64×64 inlier crops.

    Returns:
        The Keras `History`; `history.history["loss"]` is nats per dimension.
    """
    import tensorflow as tf

    images = np.asarray(images, "float32")
    level = float(np.std(images)) / 64.0  # one 8-bit level in normalised units, roughly

    def crop(image):
        patch = tf.image.random_crop(image, (patch_size, patch_size, images.shape[-1]),
                                     seed=seed)
        return patch + tf.random.uniform(tf.shape(patch), -level / 2, level / 2, seed=seed)

    stream = (tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=seed)
              .repeat().map(crop).batch(batch_size, drop_remainder=True).prefetch(2))
    flow.initialize(next(iter(stream)))
    flow.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return flow.fit(stream, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=verbose)

"""Dense Gaussian-mixture classifier head (GMMSeg)."""

import math

import keras
from keras import ops

from keras_gss.utils.numerics import l2_normalize

from keras_gss.utils.checks import check_channels
from keras_gss.utils.checks import check_choice
from keras_gss.utils.checks import check_finite
from keras_gss.utils.checks import check_positive
from keras_gss.utils.checks import check_rank


def diagonal_gaussian_log_likelihood(x, means, scales):
    """`log N(x; μ_cm, diag(σ_cm²))` for every class × component.

    The quadratic form is expanded so that all `C·M` components cost one
    matrix product over `[x², x]`; no `(N, C·M, D)` tensor is formed:
    `-½ x²·(1/σ²) + x·(μ/σ²) - ½ Σ μ²/σ² - Σ log σ - (D/2) log 2π`.
    Always computed in float32.

    Args:
        x: float tensor `(..., D)`. Embeddings.
        means: float tensor `(C, M, D)`. Component means `μ`.
        scales: float tensor `(C, M, D)`. Per-dimension standard
            deviations `σ` (not variances).

    Returns:
        float32 tensor `(..., C, M)` of log-densities.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((1, 2), "float32")
    >>> means = np.zeros((1, 1, 2), "float32")
    >>> scales = np.ones((1, 1, 2), "float32")
    >>> ll = diagonal_gaussian_log_likelihood(x, means, scales)
    >>> round(float(np.asarray(ll)[0, 0, 0]), 4)  # -log(2π)
    -1.8379
    """
    x = ops.cast(x, "float32")
    means = ops.cast(means, "float32")
    scales = ops.cast(scales, "float32")
    num_classes, num_components, dim = means.shape
    precision = ops.reshape(1.0 / ops.square(scales), (-1, dim))
    weighted_means = ops.reshape(means, (-1, dim)) * precision
    constant = (
        -0.5 * ops.sum(weighted_means * ops.reshape(means, (-1, dim)), axis=-1)
        - ops.reshape(ops.sum(ops.log(scales), axis=-1), (-1,))
        - 0.5 * dim * math.log(2.0 * math.pi)
    )
    # One product: [x², x] @ [-½ prec; μ·prec]ᵀ gives both quadratic terms.
    kernel = ops.transpose(
        ops.concatenate([-0.5 * precision, weighted_means], axis=-1)
    )
    features = ops.concatenate([ops.square(x), x], axis=-1)
    ll = ops.matmul(features, kernel) + constant
    return ops.reshape(
        ll, tuple(ops.shape(x)[:-1]) + (num_classes, num_components)
    )


@keras.saving.register_keras_serializable(package="keras_gss")
class GaussianMixtureHead(keras.layers.Layer):
    """Dense Gaussian-mixture classifier: class scores from GMM likelihoods.

    Each pixel feature is projected to an `embedding_dim`-d embedding
    (1×1 conv + BN + ReLU), layer-normalised and L2-normalised onto the unit
    sphere. Every class `c` is a mixture of `num_components` diagonal
    Gaussians; the class score is the best component's log-likelihood
    (winner-take-all, GMMSeg §3.3) or the mixture log-likelihood, and the
    logits are those scores, optionally layer-normalised over classes as in
    the authors' code. Means and scales are non-trainable: they are fitted by
    Sinkhorn EM (`keras_gss.callbacks.SinkhornEM`), never by gradient.

    The layer returns a dict:
    - `"logits"` `(B, H, W, C)`: class logits.
    - `"class_log_likelihood"` `(B, H, W, C)`: `log p(x | c)`.
    - `"component_log_likelihood"` `(B, H, W, C, M)`.
    - `"embeddings"` `(B, H, W, D)`: the unit-norm embeddings.
    - `"anomaly_score"` `(B, H, W)`: `-max_c log p(x | c)`, higher is more
      anomalous (with the default `"max"` reduction this is
      `-max_{c,m} log N(x; μ_cm, σ_cm)`).
    All are float32, whatever the dtype policy.

    Args:
        num_classes: int. Number of known classes `C`.
        num_components: int. Gaussian components per class `M`. Defaults
            to `5` (the paper; the authors use 8 on ADE20K).
        embedding_dim: int. Embedding dimension `D`. Defaults to `64`.
        component_reduction: `"max"` or `"logsumexp"`. How component
            log-likelihoods become `log p(x | c)`: winner-take-all (paper
            and code) or the uniform mixture `logsumexp_m - log M` (Eq. 4).
            Defaults to `"max"`.
        class_norm: bool. Layer-normalise the class scores (learnable
            per-class affine) before they become logits, as the authors'
            code does. Defaults to `True`.
        variance_floor: float. Added to every fitted variance, so
            `σ ≥ sqrt(variance_floor)`. Defaults to `0.01`.

    Example:

    >>> import numpy as np
    >>> head = GaussianMixtureHead(num_classes=3, num_components=2,
    ...                            embedding_dim=8)
    >>> out = head(np.random.rand(2, 4, 4, 16).astype("float32"))
    >>> tuple(out["logits"].shape), tuple(out["anomaly_score"].shape)
    ((2, 4, 4, 3), (2, 4, 4))

    Reference:
        Liang et al., "GMMSeg: Gaussian Mixture based Generative Semantic
        Segmentation Models", NeurIPS 2022, Eqs. 3-4.
    """

    def __init__(
        self,
        num_classes,
        num_components=5,
        embedding_dim=64,
        component_reduction="max",
        class_norm=True,
        variance_floor=0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("num_classes", num_classes, integer=True)
        check_positive("num_components", num_components, integer=True)
        check_positive("embedding_dim", embedding_dim, integer=True)
        check_choice(
            "component_reduction", component_reduction, ("max", "logsumexp")
        )
        check_positive("variance_floor", variance_floor)

        # === Layers ===
        self.projection = keras.layers.Conv2D(
            embedding_dim,
            1,
            use_bias=False,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection_norm = keras.layers.BatchNormalization(
            dtype=self.dtype_policy, name="projection_norm"
        )
        # Likelihood math is float32 under any policy (DESIGN contract 3).
        self.feature_norm = keras.layers.LayerNormalization(
            epsilon=1e-5, dtype="float32", name="feature_norm"
        )
        self.class_score_norm = (
            keras.layers.LayerNormalization(
                epsilon=1e-5, dtype="float32", name="class_score_norm"
            )
            if class_norm
            else None
        )

        # === Config ===
        self.num_classes = num_classes
        self.num_components = num_components
        self.embedding_dim = embedding_dim
        self.component_reduction = component_reduction
        self.class_norm = class_norm
        self.variance_floor = variance_floor
        self.input_channels = None

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "`GaussianMixtureHead` takes dense features of shape "
                f"(batch, height, width, channels); received {input_shape}."
            )
        self.input_channels = input_shape[-1]
        self.projection.build(input_shape)
        embedding_shape = tuple(input_shape[:-1]) + (self.embedding_dim,)
        self.projection_norm.build(embedding_shape)
        self.feature_norm.build(embedding_shape)
        if self.class_score_norm is not None:
            self.class_score_norm.build(
                tuple(input_shape[:-1]) + (self.num_classes,)
            )
        shape = (self.num_classes, self.num_components, self.embedding_dim)
        self.means = self.add_weight(
            shape=shape,
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
            trainable=False,
            autocast=False,
            dtype="float32",
            name="means",
        )
        # Means live on the unit sphere, like the embeddings.
        self.means.assign(
            l2_normalize(self.means)
        )
        self.scales = self.add_weight(
            shape=shape,
            initializer="ones",
            trainable=False,
            autocast=False,
            dtype="float32",
            name="scales",
        )
        self.built = True

    def embed(self, inputs, training=None):
        """Unit-norm float32 embeddings `(B, H, W, D)` of dense features."""
        x = self.projection(inputs)
        x = self.projection_norm(x, training=training)
        x = ops.relu(x)
        x = self.feature_norm(ops.cast(x, "float32"))
        return l2_normalize(x)

    def class_log_likelihood(self, component_log_likelihood):
        """Reduce `(..., C, M)` component scores to `log p(x | c)`."""
        if self.component_reduction == "max":
            return ops.max(component_log_likelihood, axis=-1)
        return ops.logsumexp(component_log_likelihood, axis=-1) - math.log(
            self.num_components
        )

    def call(self, inputs, training=None):
        check_rank("features", inputs, 4, "(batch, height, width, channels)")
        check_channels(
            "features",
            inputs,
            self.input_channels,
            "The head was built for this many backbone channels; build a "
            "new head for another backbone.",
        )
        check_finite(
            "features",
            inputs,
            "The backbone produced NaN/Inf: check the input images and the "
            "learning rate (and loss scaling under mixed_float16).",
        )
        embeddings = self.embed(inputs, training=training)
        component_ll = diagonal_gaussian_log_likelihood(
            embeddings, self.means, self.scales
        )
        class_ll = self.class_log_likelihood(component_ll)
        logits = class_ll
        if self.class_score_norm is not None:
            logits = self.class_score_norm(class_ll)
        return {
            "logits": logits,
            "class_log_likelihood": class_ll,
            "component_log_likelihood": component_ll,
            "embeddings": embeddings,
            # Paper §3.4: outliers lie where max_c p(x|c) is low.
            "anomaly_score": -ops.max(class_ll, axis=-1),
        }

    def compute_output_shape(self, input_shape):
        spatial = tuple(input_shape[:-1])
        return {
            "logits": spatial + (self.num_classes,),
            "class_log_likelihood": spatial + (self.num_classes,),
            "component_log_likelihood": spatial
            + (self.num_classes, self.num_components),
            "embeddings": spatial + (self.embedding_dim,),
            "anomaly_score": spatial,
        }

    def compute_output_spec(self, inputs, training=None):
        shapes = self.compute_output_shape(inputs.shape)
        return {
            key: keras.KerasTensor(shape, dtype="float32")
            for key, shape in shapes.items()
        }

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "num_components": self.num_components,
                "embedding_dim": self.embedding_dim,
                "component_reduction": self.component_reduction,
                "class_norm": self.class_norm,
                "variance_floor": self.variance_floor,
            }
        )
        return config

"""Dense Gaussian-mixture classifier head (GMMSeg)."""

import keras
from keras import ops

from keras_gss.ops.gaussian_mixture import COMPONENT_REDUCTIONS
from keras_gss.ops.gaussian_mixture import diagonal_gaussian_log_likelihood
from keras_gss.ops.gaussian_mixture import reduce_components
from keras_gss.utils.checks import check_channels
from keras_gss.utils.checks import check_choice
from keras_gss.utils.checks import check_finite
from keras_gss.utils.checks import check_positive
from keras_gss.utils.numerics import l2_normalize


@keras.saving.register_keras_serializable(package="keras_gss")
class GaussianMixtureHead(keras.layers.Layer):
    """Dense Gaussian-mixture classifier: class scores from GMM likelihoods.

    Each feature vector (the last axis of an input of any rank: a pixel of
    a dense map `(B, H, W, F)` or an image's `(B, F)`) is projected to an
    `embedding_dim`-d embedding (linear + BN + ReLU, a 1×1 convolution on
    maps), layer-normalised and L2-normalised onto the unit sphere. Every
    class `c` is a mixture of `num_components` diagonal Gaussians; the class score is the best component's log-likelihood
    (winner-take-all, GMMSeg §3.3) or the mixture log-likelihood, and the
    logits are those scores, optionally layer-normalised over classes as in
    the authors' code. By default means and scales are non-trainable: they
    are fitted by Sinkhorn EM (`keras_gss.callbacks.SinkhornEM`), never by
    gradient (GMMSeg). With `trainable_mixture=True` they are trained by
    gradient instead (L-GMM's generative loss `L_G`, see
    `keras_gss.models.LGMMImageClassifier`), and the head's own forward pass
    stops their gradient: the logits (and so the discriminative loss `L_D`)
    train the encoder only, L-GMM's collaborative routing. The class score
    is then the π-weighted mixture `log Σ_k π_ck N(x; μ_ck, σ_ck)` with
    `"logsumexp"`, and the logits add the class prior `log π_c`; both
    priors come from counts (`class_counts`, `component_counts`, with one
    added to every count, so an empty count is uniform). The scales are
    read as `sqrt(σ² + variance_floor)`, so a gradient step cannot make a
    Gaussian vanish.

    The layer returns a dict (`...` is the input's leading axes):
    - `"logits"` `(..., C)`: class logits.
    - `"class_log_likelihood"` `(..., C)`: `log p(x | c)`.
    - `"component_log_likelihood"` `(..., C, M)`.
    - `"embeddings"` `(..., D)`: the unit-norm embeddings.
    - `"anomaly_score"` `(...)`: `-max_c log p(x | c)`, higher is more
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
        trainable_mixture: bool. Train means and scales by gradient
            (L-GMM) instead of EM, with count-based priors. Defaults to
            `False`.
        projection_norm: bool. BatchNorm and ReLU after the projection
            (GMMSeg's head). Without them the embedding is the linear
            projection, layer- and L2-normalised (L-GMM: a "simple
            convolutional layer"). Defaults to `True`.
        norm_epsilon: float. That BatchNorm's epsilon. Defaults to Keras'
            `1e-3`; the authors' PyTorch code (and its converted
            checkpoints) use `1e-5`.

    Example:

    >>> import numpy as np
    >>> head = GaussianMixtureHead(num_classes=3, num_components=2,
    ...                            embedding_dim=8)
    >>> out = head(np.random.rand(2, 4, 4, 16).astype("float32"))
    >>> tuple(out["logits"].shape), tuple(out["anomaly_score"].shape)
    ((2, 4, 4, 3), (2, 4, 4))
    >>> vectors = GaussianMixtureHead(num_classes=3, embedding_dim=8)
    >>> tuple(vectors(np.random.rand(5, 16).astype("float32"))["logits"].shape)
    (5, 3)

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
        trainable_mixture=False,
        projection_norm=True,
        norm_epsilon=1e-3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("num_classes", num_classes, integer=True)
        check_positive("num_components", num_components, integer=True)
        check_positive("embedding_dim", embedding_dim, integer=True)
        check_choice("component_reduction", component_reduction, COMPONENT_REDUCTIONS)
        check_positive("variance_floor", variance_floor)

        # === Layers ===
        # A dense layer on the last axis: a 1×1 convolution on maps, any rank.
        self.projection = keras.layers.Dense(
            embedding_dim,
            use_bias=False,
            dtype=self.dtype_policy,
            name="projection",
        )
        self.projection_norm = (
            keras.layers.BatchNormalization(epsilon=norm_epsilon, dtype=self.dtype_policy,
                                            name="projection_norm")
            if projection_norm
            else None
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
        self.trainable_mixture = trainable_mixture
        self.projection_norm_enabled = projection_norm
        self.norm_epsilon = norm_epsilon
        self.input_channels = None
        self.input_rank = None

    def build(self, input_shape):
        if len(input_shape) < 2:
            raise ValueError(
                "`GaussianMixtureHead` takes features of shape (..., channels), "
                f"e.g. (batch, height, width, channels); received {input_shape}."
            )
        self.input_channels = input_shape[-1]
        self.input_rank = len(input_shape)
        self.projection.build(input_shape)
        embedding_shape = tuple(input_shape[:-1]) + (self.embedding_dim,)
        if self.projection_norm is not None:
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
            trainable=self.trainable_mixture,
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
            trainable=self.trainable_mixture,
            autocast=False,
            dtype="float32",
            name="scales",
        )
        if self.trainable_mixture:
            # Counts, not gradients, give the priors (L-GMM §3.2); equal on every replica.
            state = {"initializer": "zeros", "trainable": False, "autocast": False,
                     "dtype": "float32", "aggregation": "only_first_replica"}
            self.class_counts = self.add_weight(
                shape=(self.num_classes,), name="class_counts", **state)
            self.component_counts = self.add_weight(
                shape=(self.num_classes, self.num_components), name="component_counts",
                **state)
        self.built = True

    def embed(self, inputs, training=None):
        """Unit-norm float32 embeddings `(..., D)` of features `(..., F)`."""
        x = self.projection(inputs)
        if self.projection_norm is not None:
            x = ops.relu(self.projection_norm(x, training=training))
        x = self.feature_norm(ops.cast(x, "float32"))
        return l2_normalize(x)

    def class_log_likelihood(self, component_log_likelihood):
        """Reduce `(..., C, M)` component scores to `log p(x | c)`."""
        return reduce_components(component_log_likelihood, self.component_reduction,
                                 self.log_mixture_weights())

    def log_mixture_weights(self):
        """`log π_ck` `(C, M)` from the component counts; `None` (uniform) under EM."""
        if not self.trainable_mixture:
            return None
        counts = self.component_counts + 1.0
        return ops.log(counts / ops.sum(counts, axis=-1, keepdims=True))

    def log_class_prior(self):
        """`log π_c` `(C,)` from the class counts; `None` under EM (uniform)."""
        if not self.trainable_mixture:
            return None
        counts = self.class_counts + 1.0
        return ops.log(counts / ops.sum(counts))

    def mixture_scales(self):
        """The σ the density uses: gradient-trained scales keep the floor."""
        if not self.trainable_mixture:
            return self.scales
        return ops.sqrt(ops.square(self.scales) + self.variance_floor)

    def generative_log_likelihood(self, embeddings):
        """Component log-densities `(..., C, M)` for `L_G`: live means and
        scales, no gradient to the embeddings (the encoder)."""
        return diagonal_gaussian_log_likelihood(
            ops.stop_gradient(embeddings), self.means, self.mixture_scales())

    def call(self, inputs, training=None):
        if len(inputs.shape) != self.input_rank:  # maps and vectors need separate heads
            raise ValueError(
                f"`features` must have rank {self.input_rank}, as when the head was "
                f"built; received shape {tuple(inputs.shape)}. Build a new head for "
                "features of another rank."
            )
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
        means, scales = self.means, self.mixture_scales()
        if self.trainable_mixture:  # L-GMM: the discriminative path trains the encoder only
            means, scales = ops.stop_gradient(means), ops.stop_gradient(scales)
        component_ll = diagonal_gaussian_log_likelihood(embeddings, means, scales)
        class_ll = self.class_log_likelihood(component_ll)
        logits = class_ll
        if self.trainable_mixture:
            logits = class_ll + self.log_class_prior()  # Eq. 7's π_y
        if self.class_score_norm is not None:
            logits = self.class_score_norm(logits)
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
                "trainable_mixture": self.trainable_mixture,
                "projection_norm": self.projection_norm_enabled,
                "norm_epsilon": self.norm_epsilon,
            }
        )
        return config

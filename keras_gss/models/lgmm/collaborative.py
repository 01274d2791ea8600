"""L-GMM's collaborative latent GMM, shared by its classifier and its segmenter."""

from keras import ops

from keras_gss.layers.feature_memory import FeatureMemory
from keras_gss.layers.gaussian_mixture_head import GaussianMixtureHead
from keras_gss.losses import latent_gmm_terms
from keras_gss.ops.gaussian_mixture import GROUND_METRICS
from keras_gss.ops.gaussian_mixture import component_responsibilities
from keras_gss.ops.gaussian_mixture import own_class_log_likelihood
from keras_gss.utils.checks import check_choice
from keras_gss.utils.distribution import all_gather
from keras_gss.utils.distribution import reduce_sum

_IGNORE = 255  # the memory's label for examples of no known class


class LatentGMM:
    """The parts of an L-GMM task beside its encoder (a mixin of the L-GMM tasks).

    It builds the head and the memory, then the task (`super().__init__`),
    and owns `head_outputs`, the generative loss and the config; the
    arguments are documented on `LGMMImageClassifier`.

    - `gmm_head`: a `GaussianMixtureHead` with `trainable_mixture=True`,
      the π-weighted mixture (`"logsumexp"`) and no class LayerNorm; its
      forward pass stops the gradient to μ and σ, so the discriminative loss
      `L_D` (Eq. 7, the cross-entropy of `log π_y + log p(z|y)`) trains the
      encoder only.
    - `generative_loss`: `L_G = −L_mle + λ_one·L_one + λ_avg·L_avg`
      (Eqs. 5–6, `keras_gss.losses.latent_gmm_terms`) on embeddings with
      their gradient stopped, so it trains μ and σ only. The two gradients
      are disjoint, so one optimizer minimises `L_D + L_G`.
    - `feature_memory`: the last `memory_size` embeddings of each class (a
      `FeatureMemory` with one queue per class; the paper's 2000 per class,
      App. B.2). It feeds `L_avg`'s component usage `p(k|y)` (the mean
      responsibility of the class's memory under the current θ) and the
      component counts `π_yk` (hard assignments of the memory); the class
      counts `π_y` are running label counts.
    """

    loss_description = "L_D (cross-entropy of the GMM posterior) + L_G; tune the lambdas"

    def __init__(self, backbone, num_classes, num_components=3, embedding_dim=128,
                 variance_floor=0.01, memory_size=2000, samples_per_class=64,
                 lambda_one=1.0, lambda_avg=1.0, ground_metric="discrete", **kwargs):
        check_choice("ground_metric", ground_metric, GROUND_METRICS)
        # === Layers ===
        self.gmm_head = GaussianMixtureHead(
            num_classes=num_classes, num_components=num_components,
            embedding_dim=embedding_dim, component_reduction="logsumexp", class_norm=False,
            variance_floor=variance_floor, trainable_mixture=True, projection_norm=False,
            name="gmm_head")
        self.feature_memory = FeatureMemory(
            num_classes=num_classes, num_components=1, embedding_dim=embedding_dim,
            capacity=memory_size, samples_per_component=samples_per_class,
            correct_only=False, ignore_index=_IGNORE, fill="empty", name="feature_memory")
        self.num_components = num_components
        self.embedding_dim = embedding_dim
        self.variance_floor = variance_floor
        self.memory_size = memory_size
        self.samples_per_class = samples_per_class
        self.lambda_one = lambda_one
        self.lambda_avg = lambda_avg
        self.ground_metric = ground_metric

        # === Functional Model ===
        super().__init__(backbone, num_classes, **kwargs)
        # σ of unit-norm embeddings spread over the sphere, not N(0, 1)'s.
        head = self.gmm_head
        head.scales.assign(ops.full(head.scales.shape, embedding_dim**-0.5, "float32"))

    def head_outputs(self, features):
        return self.gmm_head(features)

    def training_state_layers(self):
        return [self.feature_memory]

    def generative_loss(self, embeddings, labels, replicas):
        """`L_G` of a step, and the priors' and memory's updates.

        Args:
            embeddings: float `(..., D)`: the head's unit-norm embeddings.
            labels: int `(N,)`: their classes (any other value: no class).
            replicas: the `tf.distribute` replica context, or None.
        """
        head, memory = self.gmm_head, self.feature_memory
        num_classes = head.num_classes
        z = ops.reshape(ops.cast(embeddings, "float32"), (-1, head.embedding_dim))
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        known = ops.logical_and(labels >= 0, labels < num_classes)
        safe = ops.where(known, labels, 0)
        log_weights = head.log_mixture_weights()
        component_ll = head.generative_log_likelihood(z)  # live θ, no gradient to z
        own_ll = ops.take_along_axis(component_ll, safe[:, None, None], axis=1)[:, 0, :]

        memory.build()
        queue = ops.reshape(ops.cast(memory.queue.value, "float32"),
                            (num_classes, memory.capacity, head.embedding_dim))
        filled = ops.arange(memory.capacity)[None, :] < memory.count.value[:, :1]
        memory_ll = own_class_log_likelihood(queue, head.means, head.mixture_scales())
        terms = latent_gmm_terms(own_ll, known, ops.take(log_weights, safe, axis=0),
                                 memory_ll, filled, log_weights, self.ground_metric,
                                 reduce_sum(replicas))
        avg = terms["avg"]
        if replicas is not None:  # the same memory on every replica; Keras sums their gradients
            avg = avg / replicas.num_replicas_in_sync
        loss = terms["nll"] + self.lambda_one * terms["one"] + self.lambda_avg * avg

        # Counts, not gradients, give the priors.
        hard = ops.one_hot(ops.argmax(component_responsibilities(
            ops.stop_gradient(memory_ll), log_weights[:, None, :]), axis=-1),
            head.num_components)
        head.component_counts.assign(
            ops.sum(hard * ops.cast(filled, "float32")[..., None], axis=1))
        all_z, all_labels = z, ops.where(known, labels, _IGNORE)
        if replicas is not None:  # every replica writes the global batch: memories agree
            all_z, all_labels = all_gather(replicas, z), all_gather(replicas, all_labels)
        all_known = all_labels != _IGNORE
        head.class_counts.assign(head.class_counts.value + ops.segment_sum(
            ops.cast(all_known, "float32"), ops.where(all_known, all_labels, num_classes),
            num_segments=num_classes + 1)[:num_classes])
        memory.write(all_z, all_labels, ops.zeros_like(all_labels))
        return loss

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "embedding_dim": self.embedding_dim,
            "variance_floor": self.variance_floor,
            "memory_size": self.memory_size,
            "samples_per_class": self.samples_per_class,
            "lambda_one": self.lambda_one,
            "lambda_avg": self.lambda_avg,
            "ground_metric": self.ground_metric,
        }

"""GMMSeg: a segmenter whose classifier is a Gaussian mixture fitted by EM."""

import keras
from keras import ops

from keras_gss.callbacks.sinkhorn_em import SinkhornEM
from keras_gss.layers.feature_memory import FeatureMemory
from keras_gss.layers.gaussian_mixture_head import GaussianMixtureHead
from keras_gss.losses import sparse_categorical_crossentropy
from keras_gss.models.open_set_image_segmenter import OpenSetImageSegmenter
from keras_gss.ops.sinkhorn import sinkhorn_knopp
from keras_gss.utils.distribution import all_gather
from keras_gss.utils.distribution import local_rows
from keras_gss.utils.distribution import reduce_sum


@keras.saving.register_keras_serializable(package="keras_gss")
class GMMSegImageSegmenter(OpenSetImageSegmenter):
    """GMMSeg semantic segmenter with an open-set anomaly score.

    A backbone gives dense stride-4 features; a `GaussianMixtureHead` turns
    them into class logits through class-conditional Gaussian mixtures.
    Training (`fit`) minimises the cross-entropy of the GMM posterior
    (GMMSeg Eq. 11b, ignore index 255) plus `contrast_loss_weight` × the
    component-level cross-entropy on Sinkhorn assignments (authors' code),
    and writes the step's embeddings to a `FeatureMemory`; the `SinkhornEM`
    callback fits the mixture from that memory (one is added to `fit` with
    default settings if none is given). No gradient ever reaches the GMM.
    The anomaly score is `-max_c log p(x | c)` (§3.4), higher is more
    anomalous. With `dataset_posterior=True` it is fused with DenseHybrid's
    dataset posterior instead, `ln P(d_out|x) − max_c log p(x|c)` (a
    combination neither paper evaluated), trained with pasted negatives. Everything else (checks, graphs, prediction, export,
    presets) comes from `OpenSetImageSegmenter`.

    Args:
        backbone: `keras_hub.models.SegFormerBackbone`,
            `keras_hub.models.DeepLabV3Backbone`, or any Keras model
            mapping images to dense features.
        num_classes: int. Number of known classes `C`.
        num_components: int. Gaussians per class `M`. Defaults to `5`.
        embedding_dim: int. Embedding dimension `D`. Defaults to `64`.
        component_reduction: `"max"` or `"logsumexp"`. Defaults to `"max"`.
        class_norm: bool. LayerNorm over class scores. Defaults to `True`.
        variance_floor: float. Added to fitted variances. Defaults to `0.01`.
        memory_size: int. Entries per (class, component) queue. Defaults
            to `32000` (the paper). The memory is training state: allocated
            when training starts, left out of presets unless
            `save_to_preset(..., include_training_state=True)`.
        samples_per_component: int. Most entries written per queue and
            step. Defaults to `20`.
        correct_only: bool. Write only correctly classified pixels.
            Defaults to `True`.
        starved_fallback: bool. With `correct_only`, a class with no
            correctly classified pixel in the step writes its labelled
            pixels instead. Defaults to `False`.
        memory_dtype: storage dtype of the feature memory (`"float32"`,
            `"float16"`, `"bfloat16"`). Defaults to `"float32"`.
        memory_fill: `"random"` starts every queue full of random unit
            vectors, as the authors' code does; `"empty"` starts it empty.
            Defaults to `"random"`.
        sinkhorn_epsilon: float. Entropic weight of the E-step. Defaults to
            `0.05`.
        sinkhorn_iterations: int. Sinkhorn iterations. Defaults to `3`.
        contrast_loss_weight: float. Weight of the component-level
            cross-entropy. Defaults to `0.01`.
        norm_epsilon: float. The head's BatchNorm epsilon. Defaults to
            Keras' `1e-3`; `1e-5` (PyTorch's) for the authors' converted
            checkpoints.
        **kwargs: `dropout`, `ignore_index`, `anomaly_threshold` and the
            rest of `OpenSetImageSegmenter`'s arguments.

    Example:

    ```python
    backbone = keras_gss.models.segformer_backbone(
        variant=None, image_shape=(32, 32, 3), hidden_dims=[4, 8],
        projection_filters=8)
    model = keras_gss.models.GMMSegImageSegmenter(
        backbone, num_classes=3, num_components=2, embedding_dim=8,
        memory_size=64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, labels, epochs=1)        # adds SinkhornEM()
    logits = model.predict(images)             # (B, 32, 32, 3)
    scores = model.predict_anomaly(images)     # (B, 32, 32)
    ```

    Reference:
        Liang et al., "GMMSeg: Gaussian Mixture based Generative Semantic
        Segmentation Models", NeurIPS 2022.
    """

    loss_description = ("GMM-posterior cross-entropy + component cross-entropy; tune "
                        "`contrast_loss_weight` instead")

    def __init__(
        self,
        backbone,
        num_classes,
        num_components=5,
        embedding_dim=64,
        component_reduction="max",
        class_norm=True,
        variance_floor=0.01,
        memory_size=32000,
        samples_per_component=20,
        correct_only=True,
        starved_fallback=False,
        memory_dtype="float32",
        memory_fill="random",
        sinkhorn_epsilon=0.05,
        sinkhorn_iterations=3,
        contrast_loss_weight=0.01,
        norm_epsilon=1e-3,
        **kwargs,
    ):
        # === Layers ===
        self.gmm_head = GaussianMixtureHead(
            num_classes=num_classes, num_components=num_components,
            embedding_dim=embedding_dim, component_reduction=component_reduction,
            class_norm=class_norm, variance_floor=variance_floor, norm_epsilon=norm_epsilon,
            name="gmm_head")
        self.feature_memory = FeatureMemory(
            num_classes=num_classes, num_components=num_components,
            embedding_dim=embedding_dim, capacity=memory_size,
            samples_per_component=samples_per_component, correct_only=correct_only,
            starved_fallback=starved_fallback,
            ignore_index=kwargs.get("ignore_index", 255), storage_dtype=memory_dtype,
            fill=memory_fill, name="feature_memory")

        # === Functional Model ===
        super().__init__(backbone, num_classes, **kwargs)

        # === Config ===
        self.num_components = num_components
        self.embedding_dim = embedding_dim
        self.component_reduction = component_reduction
        self.class_norm = class_norm
        self.variance_floor = variance_floor
        self.norm_epsilon = norm_epsilon
        self.memory_size = memory_size
        self.samples_per_component = samples_per_component
        self.correct_only = correct_only
        self.starved_fallback = starved_fallback
        self.memory_dtype = memory_dtype
        self.memory_fill = memory_fill
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.contrast_loss_weight = contrast_loss_weight

    @property
    def score_name(self):
        if self.dataset_posterior:
            return "ln P(d_out|x) - max_c log p(x|c)"
        return "-max_c log p(x|c)"

    def head_outputs(self, features):
        return self.gmm_head(features)

    def log_likelihood(self, head, logits):
        return -self.score_anomaly(head, logits)  # max_c log p(x|c), GMMSeg §3.4

    def default_callbacks(self, **options):
        return [SinkhornEM(**options)]

    def training_state_layers(self):
        return [self.feature_memory]

    def head_loss(self, labels, outputs, replicas):
        num_classes, m = self.num_classes, self.num_components
        component_ll = outputs["dense_component_log_likelihood"]
        coarse = self.labels_at(labels, component_ll)
        component_ll = ops.reshape(component_ll, (-1, num_classes, m))
        known = ops.logical_and(coarse >= 0, coarse < num_classes)
        safe = ops.where(known, coarse, 0)
        own_ll = ops.take_along_axis(component_ll, safe[:, None, None], axis=1)[:, 0, :]
        predictions = ops.reshape(ops.argmax(outputs["dense_logits"], axis=-1), (-1,))
        embeddings = ops.reshape(outputs["dense_embeddings"], (-1, self.embedding_dim))
        all_coarse = coarse
        if replicas is not None:
            # Every replica sees the global batch, so E-step and memory agree everywhere.
            own_ll, all_coarse, embeddings, predictions = (
                all_gather(replicas, v) for v in (own_ll, coarse, embeddings, predictions))
        all_known = ops.logical_and(all_coarse >= 0, all_coarse < num_classes)
        # Eq. 10: equipartitioned E-step within each class of the batch.
        _, all_components = sinkhorn_knopp(
            own_ll, epsilon=self.sinkhorn_epsilon, iterations=self.sinkhorn_iterations,
            segment_ids=ops.where(all_known, all_coarse, -1), num_segments=num_classes)
        components = all_components
        if replicas is not None:  # this replica's rows of the global batch
            components = local_rows(replicas, all_components, ops.shape(coarse)[0])
        loss = 0.0
        if self.contrast_loss_weight:
            target = ops.where(known, safe * m + components, -1)
            loss = self.contrast_loss_weight * sparse_categorical_crossentropy(
                target, ops.reshape(component_ll, (-1, num_classes * m)), ignore_index=-1,
                reduce_sum=reduce_sum(replicas))
        skipped = self.feature_memory.write(embeddings, all_coarse, all_components,
                                            predictions=predictions)
        self.input_errors.add_counts(nonfinite_features=skipped)
        return loss

    def get_config(self):
        config = super().get_config()
        config.update({
            "num_components": self.num_components,
            "embedding_dim": self.embedding_dim,
            "component_reduction": self.component_reduction,
            "class_norm": self.class_norm,
            "variance_floor": self.variance_floor,
            "norm_epsilon": self.norm_epsilon,
            "memory_size": self.memory_size,
            "samples_per_component": self.samples_per_component,
            "correct_only": self.correct_only,
            "starved_fallback": self.starved_fallback,
            "memory_dtype": self.memory_dtype,
            "memory_fill": self.memory_fill,
            "sinkhorn_epsilon": self.sinkhorn_epsilon,
            "sinkhorn_iterations": self.sinkhorn_iterations,
            "contrast_loss_weight": self.contrast_loss_weight,
        })
        return config

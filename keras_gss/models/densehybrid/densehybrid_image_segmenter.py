"""DenseHybrid: a softmax segmenter with a dataset posterior and the hybrid anomaly score."""

import keras
from keras import ops

from keras_gss.models.densehybrid.normalizing_flow import NormalizingFlow
from keras_gss.models.softmax_image_segmenter import SoftmaxImageSegmenter

# DenseHybrid Eq. 17's weight of the flow's Jensen-Shannon term (every setting of the paper).
JSD_WEIGHT = 0.03


def jensen_shannon_to_uniform(logits):
    """`JSD(softmax(s) ‖ U)` per pixel, in nats (DenseHybrid §4.2's L_jsd, minimised)."""
    log_p = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    p = ops.exp(log_p)
    classes = logits.shape[-1]
    log_u = -ops.log(float(classes))
    log_m = ops.log(0.5 * (p + 1.0 / classes))
    return 0.5 * ops.sum(p * (log_p - log_m), axis=-1) + 0.5 * ops.sum(
        (log_u - log_m) / classes, axis=-1)


@keras.saving.register_keras_serializable(package="keras_gss")
class DenseHybridImageSegmenter(SoftmaxImageSegmenter):
    """DenseHybrid open-set segmenter: class logits, dataset posterior, hybrid score.

    The closed-set softmax model (`SoftmaxImageSegmenter`) plus a
    `DatasetPosteriorHead` on its pre-logit features. The anomaly score is
    `HybridAnomalyScore`: `s_H = ln P(d_out|x) − LSE(s)` (Eq. 9), with its
    parts as the `"discriminative_score"` and `"generative_score"` outputs.
    Training minimises Eq. 41 on mixed-content images: cross-entropy on
    inlier pixels, the dataset posterior's binary cross-entropy, and
    `β4·LSE(s)` on negative pixels (labelled `negative_index`).

    Negatives are real (pasted into the training stream by
    `keras_gss.data.paste_negatives`), synthetic, or both. With a `flow`,
    each training image gets, with probability `synthetic_probability`
    (`1 − b` of Eq. 18), a flow sample of `patch_size`² pasted in-graph as a
    random rectangle of `min_size…patch_size` in steps of 8. The flow is
    trained jointly (Eq. 17): maximum likelihood on the inlier patches the
    pastes replace, plus `jsd_weight` (λ = 0.03) × the Jensen-Shannon
    divergence between the segmenter's posterior on generated pixels and
    the uniform one. Gradients are routed as the paper's flow loss says: the
    segmentation loss sees the samples through `stop_gradient`, so it never
    trains the flow; the Jensen-Shannon term is computed on a second copy
    of the first `jsd_batch` mixed images, whose pasted pixels carry the
    flow's gradient. That copy's term also reaches the segmenter (weight λ,
    pushing its posterior on generated pixels toward uniform), which the
    paper leaves open (spec §11.2). The flow (`NormalizingFlow`) stands in
    for DenseFlow-45-6.

    Args:
        backbone: a keras-hub backbone or any Keras model mapping images to
            dense features.
        num_classes: int. Number of known classes `K`.
        flow: a pre-trained `NormalizingFlow`, or `None` (real negatives
            only). Defaults to `None`.
        synthetic_probability: float. Chance an image gets a synthetic
            negative. Defaults to `1.0`.
        patch_size: int. Side of flow samples (divisible by `2^levels`).
            Defaults to `32`.
        min_size: int. Smallest pasted rectangle side. Defaults to `16`.
        jsd_weight: float. λ of Eq. 17. Defaults to `0.03`.
        jsd_batch: int. Images per step whose pasted pixels train the flow.
            Defaults to `4`.
        **kwargs: `betas` (Eq. 41's β1…β4, default `(1, 0.3, 0.3, 0.03)`),
            `negative_index`, `dropout`, `ignore_index`, `anomaly_threshold`.

    Example:

    >>> import numpy as np
    >>> import keras_gss
    >>> backbone = keras_gss.models.segformer_backbone(
    ...     variant=None, image_shape=(32, 32, 3), hidden_dims=[4, 8],
    ...     projection_filters=8)
    >>> model = DenseHybridImageSegmenter(backbone, num_classes=3)
    >>> outputs = model.predict_outputs(np.zeros((1, 32, 32, 3), "float32"), verbose=0)
    >>> sorted(outputs)
    ['anomaly_score', 'discriminative_score', 'generative_score', 'logits']

    Reference:
        Grcić and Šegvić, "Hybrid Open-set Segmentation with Synthetic
        Negative Data", IEEE TPAMI 2024 (DenseHybrid, ECCV 2022).
    """

    loss_description = ("Eq. 41: cross-entropy + dataset-posterior BCE + β4·LSE on negatives; "
                        "tune `betas` instead")

    def __init__(self, backbone, num_classes, flow=None, synthetic_probability=1.0,
                 patch_size=32, min_size=16, jsd_weight=JSD_WEIGHT, jsd_batch=4, **kwargs):
        kwargs.pop("dataset_posterior", None)
        kwargs.pop("anomaly_score", None)
        if isinstance(flow, dict):
            flow = keras.saving.deserialize_keras_object(flow)
        if flow is not None and not isinstance(flow, NormalizingFlow):
            raise ValueError("`flow` must be a keras_gss NormalizingFlow or None; received "
                             f"{type(flow).__name__}.")
        if flow is not None and patch_size % (2 ** flow.levels):
            raise ValueError(f"`patch_size` ({patch_size}) must be divisible by 2^levels = "
                             f"{2 ** flow.levels} of the flow.")
        # === Layers ===
        self.flow = flow
        self.paste_seed = keras.random.SeedGenerator(flow.seed if flow else 0,
                                                     name="paste_seed")

        # === Functional Model ===
        super().__init__(backbone, num_classes, anomaly_score="energy",
                         dataset_posterior=True, **kwargs)

        # === Config ===
        self.synthetic_probability = synthetic_probability
        self.patch_size = patch_size
        self.min_size = min_size
        self.jsd_weight = jsd_weight
        self.jsd_batch = jsd_batch

    @classmethod
    def from_closed_set(cls, model, **kwargs):
        """A DenseHybrid model from a trained softmax segmenter: same weights, new head.

        The paper fine-tunes a closed-set model with negatives; its class
        logits are unchanged until then.
        """
        return model.with_dataset_posterior(cls=cls, **kwargs)

    # === Synthetic negatives (Eqs. 15-18) ===

    def _paste_synthetic(self, images):
        """`(mixed with stop-gradient samples, mixed with live samples, mask, MLE patches)`."""
        batch = ops.shape(images)[0]
        height, width = images.shape[1], images.shape[2]
        size = self.patch_size
        seed = self.paste_seed
        samples = ops.cast(ops.clip(self.flow.sample(batch, size, size), -4.0, 4.0),
                           images.dtype)
        corner_y = keras.random.randint((batch,), 0, height - size + 1, seed=seed)
        corner_x = keras.random.randint((batch,), 0, width - size + 1, seed=seed)
        sides = (size - self.min_size) // 8 + 1
        rect_h = self.min_size + 8 * keras.random.randint((batch,), 0, sides, seed=seed)
        rect_w = self.min_size + 8 * keras.random.randint((batch,), 0, sides, seed=seed)
        rows = ops.arange(height)[None, :] - corner_y[:, None]
        columns = ops.arange(width)[None, :] - corner_x[:, None]
        in_rows = ops.logical_and(rows >= 0, rows < rect_h[:, None])
        in_columns = ops.logical_and(columns >= 0, columns < rect_w[:, None])
        chosen = keras.random.uniform((batch,), seed=seed) < self.synthetic_probability
        mask = ops.logical_and(ops.logical_and(in_rows[:, :, None], in_columns[:, None, :]),
                               chosen[:, None, None])

        def place(patches):  # pad(x⁻) of Eq. 15, by gathering rows then columns
            rows_in = ops.clip(rows, 0, size - 1)[:, :, None, None]
            columns_in = ops.clip(columns, 0, size - 1)[:, None, :, None]
            placed = ops.take_along_axis(patches, rows_in, axis=1)
            placed = ops.take_along_axis(placed, columns_in, axis=2)
            return ops.where(mask[..., None], placed, images)

        # The inlier patches under the pastes: the flow's maximum-likelihood data (Eq. 16).
        offsets = ops.arange(size)
        inliers = ops.take_along_axis(
            images, (corner_y[:, None] + offsets)[:, :, None, None], axis=1)
        inliers = ops.take_along_axis(
            inliers, (corner_x[:, None] + offsets)[:, None, :, None], axis=2)
        return place(ops.stop_gradient(samples)), place(samples), mask, inliers

    def call(self, inputs, training=None, mask=None):
        if not training or self.flow is None:
            return super().call(inputs, training=training, mask=mask)
        mixed, live, pasted, inliers = self._paste_synthetic(inputs)
        batch, extra = ops.shape(inputs)[0], min(self.jsd_batch, inputs.shape[0] or 1)
        outputs = self._graphs.train(ops.concatenate([mixed, live[:extra]], axis=0),
                                     training=True)
        jsd_logits = outputs["logits"][batch:]
        outputs = {k: v[:batch] for k, v in outputs.items()}
        weight = ops.cast(pasted[:extra], "float32")
        jsd = ops.sum(jensen_shannon_to_uniform(jsd_logits) * weight) / ops.maximum(
            ops.sum(weight), 1.0)
        nll = ops.mean(self.flow(ops.cast(inliers, "float32")))  # nats per dimension
        outputs["synthetic_negative"] = pasted
        outputs["flow_loss"] = nll + self.jsd_weight * jsd
        return outputs

    def loss_labels(self, labels, outputs):
        if "synthetic_negative" not in outputs:
            return labels
        return ops.where(outputs["synthetic_negative"], self.negative_index, labels)

    def head_loss(self, labels, outputs, replicas):
        if "flow_loss" not in outputs:
            return 0.0
        if replicas is not None:  # Keras sums replicas' gradients
            return outputs["flow_loss"] / replicas.num_replicas_in_sync
        return outputs["flow_loss"]

    def training_state_layers(self):
        return [] if self.flow is None else [self.flow]

    def get_config(self):
        config = super().get_config()
        for key in ("anomaly_score", "dataset_posterior"):
            config.pop(key, None)
        config.update({
            "flow": None if self.flow is None else keras.saving.serialize_keras_object(
                self.flow),
            "synthetic_probability": self.synthetic_probability,
            "patch_size": self.patch_size, "min_size": self.min_size,
            "jsd_weight": self.jsd_weight, "jsd_batch": self.jsd_batch,
        })
        return config


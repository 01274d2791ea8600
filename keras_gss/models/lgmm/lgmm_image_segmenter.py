"""L-GMM semantic segmenter: the latent GMM per pixel, on the shared segmenter base."""

import keras

from keras_gss.models.lgmm.collaborative import LatentGMM
from keras_gss.models.open_set_image_segmenter import OpenSetImageSegmenter


@keras.saving.register_keras_serializable(package="keras_gss")
class LGMMImageSegmenter(LatentGMM, OpenSetImageSegmenter):
    """L-GMM segmenter: a collaboratively trained latent GMM on every pixel.

    The same per-pixel latent and mixture as `LGMMImageClassifier` (§5.2:
    "exactly as classification") on the shared base's dense stride-4
    features: the cross-entropy of the GMM posterior trains the encoder,
    `L_G` trains μ and σ (`LatentGMM`), labels are resampled (nearest) to
    the stride-4 grid for `L_G` and the memory, and the anomaly score is
    `−max_y log p(z|y)` (Table 6: "confidence derived from a generative
    formulation"), higher is more anomalous. The paper gives no
    segmentation `d`, `G` or memory; the defaults are the classifier's
    (128, 3, 2000 per class).

    Args:
        backbone: a keras-hub SegFormer or DeepLabV3+ backbone, or any Keras
            model mapping images to dense features.
        num_classes: int. Number of known classes `C`.
        num_components, embedding_dim, variance_floor, memory_size,
        samples_per_class, lambda_one, lambda_avg, ground_metric: as
            `LGMMImageClassifier`'s (pixels instead of images).
        **kwargs: `dropout`, `ignore_index`, `anomaly_threshold`,
            `dataset_posterior` and the rest of `OpenSetImageSegmenter`'s.

    Example:

    ```python
    backbone = keras_gss.models.segformer_backbone(
        variant=None, image_shape=(32, 32, 3), hidden_dims=[4, 8],
        projection_filters=8)
    model = keras_gss.models.LGMMImageSegmenter(backbone, num_classes=3,
                                                embedding_dim=16, memory_size=64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, labels, epochs=1)
    scores = model.predict_anomaly(images)     # (B, 32, 32)
    ```
    """

    @property
    def score_name(self):
        if self.dataset_posterior:
            return "ln P(d_out|x) - max_y log p(z|y)"
        return "-max_y log p(z|y)"

    def log_likelihood(self, head, logits):
        return -self.score_anomaly(head, logits)

    def head_loss(self, labels, outputs, replicas):
        embeddings = outputs["dense_embeddings"]
        return self.generative_loss(embeddings, self.labels_at(labels, embeddings), replicas)

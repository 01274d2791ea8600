"""L-GMM image classifier: a latent GMM trained collaboratively on an image encoder."""

import keras

from keras_gss.models.lgmm.collaborative import LatentGMM
from keras_gss.models.open_set_image_classifier import OpenSetImageClassifier


@keras.saving.register_keras_serializable(package="keras_gss")
class LGMMImageClassifier(LatentGMM, OpenSetImageClassifier):
    """L-GMM: closed-set and open-set recognition with one latent Gaussian mixture.

    An image encoder (a keras-hub ResNet or MiT, or `DigitCNNBackbone` for
    28×28 digits) is average-pooled and projected to a `d`-dimensional
    unit-norm latent (the "simple convolutional layer to reduce the
    dimension to 128" of §5.1: a linear map on the pooled features, which
    equals a 1×1 convolution before the pooling, then BN, ReLU, LayerNorm).
    Each class is a mixture of `G` diagonal Gaussians. Training is
    collaborative (`LatentGMM`): the cross-entropy of
    `log π_y + log Σ_k π_yk N(z; μ_yk, σ_yk)` (Eq. 7) trains the encoder
    only, and `L_G` (Eqs. 5–6) trains μ and σ only. The anomaly score is
    `−max_y log p(z|y)` (the paper thresholds "the probability" without
    saying which: the class likelihood, as GMMSeg, is ours to choose).

    Choices where the paper is silent or inconsistent (specs §2.11): the
    mixture is π-weighted (Eq. 4), not Algorithm 1's winner-take-all;
    responsibilities are a softmax over log-densities; the NLL enters with
    the sign Eq. 5 gives (Algorithm 1 flips it); `L_one` is Eq. 6's, on
    responsibilities (not Algorithm 1's means-to-centroids MSE); λ's are not
    given, so both default to 1.

    Args:
        backbone: an image backbone (see `OpenSetImageClassifier`).
        num_classes: int. Number of known classes `C`.
        num_components: int. Gaussians per class `G`. Defaults to `3`
            (Table 7d).
        embedding_dim: int. Latent dimension `d`. Defaults to `128` (§5.1).
        variance_floor: float. Added to every variance (σ ≥ 0.1 by default,
            GMMSeg's floor): without it gradient-trained σ collapse onto
            near-constant embedding dimensions, where the NLL rewards
            `−log σ` without bound. Defaults to `0.01`.
        memory_size: int. Embeddings kept per class. Defaults to `2000`.
        samples_per_class: int. Most embeddings written per class and
            step. Defaults to `64`.
        lambda_one: float. Weight of `L_one`. Defaults to `1.0`.
        lambda_avg: float. Weight of `L_avg`. Defaults to `1.0`.
        ground_metric: `"discrete"` (total variation) or `"index"`
            (Algorithm 1's CDF form): `L_avg`'s Wasserstein ground metric.
            Defaults to `"discrete"`.
        **kwargs: `dropout`, `anomaly_threshold`.

    Example:

    >>> import numpy as np
    >>> import keras_gss
    >>> backbone = keras_gss.models.DigitCNNBackbone(filters=(4, 8))
    >>> model = LGMMImageClassifier(backbone, num_classes=6, embedding_dim=16,
    ...                             memory_size=32)
    >>> model.compile()
    >>> images = np.random.rand(12, 28, 28, 1).astype("float32")
    >>> _ = model.fit(images, np.arange(12) % 6, epochs=1, verbose=0)
    >>> outputs = model.predict_outputs(images, verbose=0)
    >>> outputs["logits"].shape, outputs["anomaly_score"].shape
    ((12, 6), (12,))

    Reference:
        "A latent generative model for closed-set and open-set recognition"
        (L-GMM), Eqs. 2–7 and Algorithm 1.
    """

    score_name = "-max_y log p(z|y)"

    def head_loss(self, labels, outputs, replicas):
        return self.generative_loss(outputs["head_embeddings"], labels, replicas)

"""The closed-set baseline: a 1×1 softmax classifier with a post-hoc anomaly score."""

import keras

from keras_gss.models.open_set import SoftmaxBaseline
from keras_gss.models.open_set_image_segmenter import OpenSetImageSegmenter


@keras.saving.register_keras_serializable(package="keras_gss")
class SoftmaxImageSegmenter(SoftmaxBaseline, OpenSetImageSegmenter):
    """Softmax segmenter: the discriminative baseline of every open-set family.

    The same dense stride-4 features as the other families, a 1×1
    convolution to class logits (SegFormer's and DeepLabV3+'s classifier),
    trained by cross-entropy. Its anomaly score is computed from the
    upsampled logits after the fact: `"max_softmax"` (`1 - max_c p(c|x)`,
    Hendrycks & Gimpel 2017), `"entropy"`, `"max_logit"` (`-max_c
    logit_c`, Hendrycks et al. 2022) or `"energy"` (`-logsumexp`, Liu et
    al. 2020); higher is more anomalous.

    Args:
        backbone: a keras-hub backbone or any Keras model mapping images to
            dense features.
        num_classes: int. Number of known classes `C`.
        anomaly_score: one of `"max_softmax"`, `"entropy"`, `"max_logit"`,
            `"energy"`. Defaults to `"max_softmax"`.
        **kwargs: `dropout`, `ignore_index`, `anomaly_threshold` and the
            rest of `OpenSetImageSegmenter`'s arguments.

    Example:

    >>> import numpy as np
    >>> import keras_gss
    >>> backbone = keras_gss.models.segformer_backbone(
    ...     variant=None, image_shape=(32, 32, 3), hidden_dims=[4, 8],
    ...     projection_filters=8)
    >>> model = SoftmaxImageSegmenter(backbone, num_classes=3,
    ...                               anomaly_score="energy")
    >>> images = np.random.rand(2, 32, 32, 3).astype("float32")
    >>> outputs = model.predict_outputs(images, verbose=0)
    >>> outputs["logits"].shape, outputs["anomaly_score"].shape
    ((2, 32, 32, 3), (2, 32, 32))
    """

    def __init__(self, backbone, num_classes, anomaly_score="max_softmax", **kwargs):
        classifier = keras.layers.Conv2D(num_classes, 1, name="classifier")
        super().__init__(classifier, anomaly_score, backbone, num_classes, **kwargs)

    @property
    def score_name(self):
        return "ln P(d_out|x) - LSE(s)" if self.dataset_posterior else self.anomaly_score

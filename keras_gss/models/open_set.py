"""What every open-set task shares: its graphs, checks on calls, and open-set prediction."""

import keras
from keras import ops

from keras_gss.baselines import SCORES
from keras_gss.utils.checks import check_choice


class Graphs:
    """Holds auxiliary views of the task's graph out of Keras tracking.

    They share every layer with the task; keeping them untracked keeps the
    saved weight paths those of the task alone.
    """

    def __init__(self, **graphs):
        self.__dict__.update(graphs)


class OpenSetTask:
    """Mixin of the segmenter and classifier bases: checked calls, the training graph, and
    the loss-less compile state; the task sets `self._graphs` (`Graphs` with a `train`
    view returning `"logits"` and the head's outputs) and implements `_check_images`."""

    def __call__(self, inputs, *args, **kwargs):
        if hasattr(inputs, "shape"):
            self._check_images(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if training:
            return self._graphs.train(inputs, training=True)
        # Unset means inference: keras-hub's SegFormer decoder would otherwise
        # update its BatchNorm statistics on a plain `model(images)`.
        return super().call(inputs, training=False, mask=mask)

    def compile_from_config(self, config):
        # Recompile on `load_model` so a resumed training keeps its optimizer.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight)


class SoftmaxBaseline:
    """Mixin of the softmax baselines: a linear classifier trained by cross-entropy, its
    anomaly score computed from the logits after the fact (`keras_gss.baselines.SCORES`).

    The task passes its classifier layer (1×1 convolution or dense) and the
    score's name to `__init__`, before its own arguments.
    """

    def __init__(self, classifier, anomaly_score, backbone, num_classes, **kwargs):
        check_choice("anomaly_score", anomaly_score, tuple(SCORES))
        # === Layers ===
        self.classifier = classifier
        self.anomaly_score = anomaly_score  # read by score_anomaly while building

        # === Functional Model ===
        super().__init__(backbone, num_classes, **kwargs)

    @property
    def score_name(self):
        return self.anomaly_score

    def head_outputs(self, features):
        return {"logits": self.classifier(features)}

    def score_anomaly(self, head, logits):
        return SCORES[self.anomaly_score](logits)

    def get_config(self):
        return {**super().get_config(), "anomaly_score": self.anomaly_score}


def open_set_prediction(logits, anomaly_score, threshold, anomaly_label=None):
    """Class ids, with `anomaly_label` where the anomaly score passes `threshold`.

    Args:
        logits: float tensor `(B, H, W, C)`.
        anomaly_score: float tensor `(B, H, W)`, higher = more anomalous.
        threshold: float. Pixels with `anomaly_score > threshold` are
            anomalies.
        anomaly_label: int. Label given to anomalies. Defaults to `C`.

    Returns:
        int32 tensor `(B, H, W)`.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[[[2.0, 0.0], [0.0, 3.0]]]], "float32")
    >>> score = np.array([[[0.1, 5.0]]], "float32")
    >>> np.asarray(open_set_prediction(logits, score, 1.0)).tolist()
    [[[0, 2]]]
    """
    if anomaly_label is None:
        anomaly_label = logits.shape[-1]
    classes = ops.cast(ops.argmax(logits, axis=-1), "int32")
    return ops.where(anomaly_score > threshold, anomaly_label, classes)

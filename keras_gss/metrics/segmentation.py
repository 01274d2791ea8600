"""Closed- and open-set segmentation metrics from confusion matrices."""

import keras
import numpy as np
from keras import ops


def confusion_matrix(labels, predictions, num_classes, ignore_index=255):
    """`(C, C)` confusion matrix, rows = true class, columns = prediction.

    Pixels labelled `ignore_index` or outside `[0, C)` are not counted.
    Jit-safe on every backend: no boolean masking, a fixed number of bins
    (a segment sum: JAX's `bincount` needs a static length Keras does not pass).

    Example:

    >>> import numpy as np
    >>> cm = confusion_matrix(np.array([0, 1, 1, 255]), np.array([0, 1, 0, 1]), 2)
    >>> np.asarray(cm).tolist()
    [[1, 0], [1, 1]]
    """
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    predictions = ops.reshape(ops.cast(predictions, "int32"), (-1,))
    valid = ops.logical_and(
        ops.logical_and(labels >= 0, labels < num_classes),
        ops.logical_and(predictions >= 0, predictions < num_classes),
    )
    valid = ops.logical_and(valid, labels != ignore_index)
    # Invalid pixels land in one spare bin that is dropped.
    index = ops.where(valid, labels * num_classes + predictions,
                      num_classes * num_classes)
    index = ops.reshape(ops.cast(index, "int32"), (-1,))
    counts = ops.segment_sum(ops.ones_like(index), index,
                             num_segments=num_classes * num_classes + 1)
    return ops.reshape(counts[: num_classes * num_classes],
                       (num_classes, num_classes))


def iou_from_confusion(confusion):
    """Per-class IoU `TP / (TP + FP + FN)`; NaN where a class never occurs."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(labels, predictions, num_classes, ignore_index=255):
    """Mean IoU over the classes present in labels or predictions.

    Example:

    >>> import numpy as np
    >>> round(mean_iou(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2), 4)
    0.5833
    """
    confusion = ops.convert_to_numpy(
        confusion_matrix(labels, predictions, num_classes, ignore_index)
    )
    return float(np.nanmean(iou_from_confusion(confusion)))


def open_mean_iou(labels, predictions, num_classes, ignore_index=255):
    """Open-mIoU (DenseHybrid Eqs. 19-20): open-set IoU averaged over known classes.

    `labels` hold known classes `[0, K)`, `K` for anomalies and
    `ignore_index` for void; `predictions` hold `[0, K]` (`K` = rejected
    as anomaly). Anomalies predicted as class `k` count as false positives
    of `k`; known pixels rejected count as false negatives. With a perfect
    anomaly detector this equals the closed-set mIoU.

    Example:

    >>> import numpy as np
    >>> labels = np.array([0, 0, 1, 2])        # 2 = anomaly for K = 2
    >>> round(open_mean_iou(labels, np.array([0, 0, 1, 1]), 2), 4)
    0.75
    """
    confusion = ops.convert_to_numpy(
        confusion_matrix(labels, predictions, num_classes + 1, ignore_index)
    )
    return float(np.nanmean(iou_from_confusion(confusion)[:num_classes]))


@keras.saving.register_keras_serializable(package="keras_gss")
class MeanIoU(keras.metrics.Metric):
    """Streaming mean IoU over sparse label maps, usable in `compile`.

    Accumulates a confusion matrix in-graph (jit-safe) from logits
    `(B, H, W, C)` or class maps `(B, H, W)`; void pixels are skipped.

    Args:
        num_classes: int. Number of classes.
        ignore_index: int. Void label. Defaults to `255`.

    Example:

    >>> import numpy as np
    >>> metric = MeanIoU(num_classes=2)
    >>> metric.update_state(np.array([[0, 1]]), np.array([[[2.0, 0.0], [0.0, 1.0]]]))
    >>> float(metric.result())
    1.0
    """

    def __init__(self, num_classes, ignore_index=255, name="mean_iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros",
            dtype="int32", name="confusion",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.convert_to_tensor(y_true)
        y_pred = ops.convert_to_tensor(y_pred)
        if len(y_pred.shape) == len(y_true.shape) + 1 and y_pred.shape[-1] == self.num_classes:
            y_pred = ops.argmax(y_pred, axis=-1)
        self.confusion.assign(
            self.confusion.value
            + ops.cast(
                confusion_matrix(y_true, y_pred, self.num_classes, self.ignore_index),
                "int32",
            )
        )

    def result(self):
        confusion = ops.cast(self.confusion.value, "float32")
        tp = ops.diagonal(confusion)
        union = ops.sum(confusion, 0) + ops.sum(confusion, 1) - tp
        present = ops.cast(union > 0, "float32")
        iou = tp / ops.maximum(union, 1.0)
        return ops.sum(iou * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self):
        self.confusion.assign(ops.zeros_like(self.confusion.value))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "ignore_index": self.ignore_index}

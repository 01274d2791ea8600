"""Open-set prediction from logits and an anomaly score."""

from keras import ops


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

"""Calibration: expected calibration error and reliability-diagram data."""

import numpy as np


def reliability(probabilities, labels, num_bins=15, ignore_index=255):
    """Per-bin confidence, accuracy and count of the top-1 prediction.

    Args:
        probabilities: array `(..., C)` of class probabilities.
        labels: int array `(...)`; `ignore_index` pixels are skipped.
        num_bins: int. Equal-width confidence bins on [0, 1]. Defaults to `15`.

    Returns:
        dict of arrays `confidence`, `accuracy` (NaN for empty bins),
        `count`, and the bin `edges`.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    probabilities = probabilities.reshape(-1, probabilities.shape[-1])
    keep = labels != ignore_index
    confidence = probabilities[keep].max(-1)
    correct = probabilities[keep].argmax(-1) == labels[keep]
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore"):
        mean_conf = np.bincount(index, confidence, num_bins) / count
        accuracy = np.bincount(index, correct, num_bins) / count
    return {"confidence": mean_conf, "accuracy": accuracy, "count": count, "edges": edges}


def expected_calibration_error(probabilities, labels, num_bins=15, ignore_index=255):
    """ECE: count-weighted mean |accuracy − confidence| over confidence bins.

    Example:

    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    >>> round(expected_calibration_error(p, np.array([0, 1, 0, 0])), 3)
    0.4
    """
    bins = reliability(probabilities, labels, num_bins, ignore_index)
    used = bins["count"] > 0
    weight = bins["count"][used] / bins["count"].sum()
    return float(np.sum(weight * np.abs(bins["accuracy"][used] - bins["confidence"][used])))

"""Calibration: expected calibration error and reliability-diagram data."""

import numpy as np


def reliability_sums(probabilities, labels, num_bins=15, ignore_index=255):
    """Per-bin `[count, sum of confidences, number correct]`, `(3, num_bins)`.

    Sums over chunks of a set equal the set's sums, so a stream of images is
    calibrated with `reliability_from_sums(sum of chunks)`.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    probabilities = probabilities.reshape(-1, probabilities.shape[-1])
    keep = labels != ignore_index
    confidence = probabilities[keep].max(-1)
    correct = probabilities[keep].argmax(-1) == labels[keep]
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, num_bins - 1)
    return np.stack([np.bincount(index, minlength=num_bins).astype(np.float64),
                     np.bincount(index, confidence, num_bins),
                     np.bincount(index, correct, num_bins)])


def reliability_from_sums(sums):
    """`reliability`'s dict from `reliability_sums` (or their sum over chunks)."""
    count, confidence, correct = np.asarray(sums, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {"confidence": confidence / count, "accuracy": correct / count,
                "count": count.astype(np.int64),
                "edges": np.linspace(0.0, 1.0, len(count) + 1)}


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
    return reliability_from_sums(
        reliability_sums(probabilities, labels, num_bins, ignore_index))


def calibration_error(bins):
    """ECE of `reliability` bins: count-weighted mean |accuracy − confidence|."""
    used = bins["count"] > 0
    weight = bins["count"][used] / bins["count"].sum()
    return float(np.sum(weight * np.abs(bins["accuracy"][used] - bins["confidence"][used])))


def expected_calibration_error(probabilities, labels, num_bins=15, ignore_index=255):
    """ECE: count-weighted mean |accuracy − confidence| over confidence bins.

    Example:

    >>> import numpy as np
    >>> p = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    >>> round(expected_calibration_error(p, np.array([0, 1, 0, 0])), 3)
    0.4
    """
    return calibration_error(reliability(probabilities, labels, num_bins, ignore_index))

"""Anomaly-detection metrics: AUROC, AP and FPR at a TPR, exact or binned.

Anomalies are the positive class and a higher score means more anomalous.
Pixels are pooled over the dataset (Fishyscapes / SMIYC convention) unless
the per-image variant is used (StreetHazards convention); void pixels are
excluded through `valid`.
"""

import numpy as np


def _select(scores, anomaly, valid):
    scores = np.asarray(scores, dtype=np.float64).ravel()
    anomaly = np.asarray(anomaly).astype(bool).ravel()
    if scores.shape != anomaly.shape:
        raise ValueError(
            f"`scores` and `anomaly` must have the same shape; received "
            f"{np.shape(scores)} and {np.shape(anomaly)}."
        )
    if valid is not None:
        keep = np.asarray(valid).astype(bool).ravel()
        scores, anomaly = scores[keep], anomaly[keep]
    if not np.all(np.isfinite(scores)):
        raise ValueError("`scores` holds NaN or Inf; anomaly scores must be finite.")
    return scores, anomaly


def _summaries(tps, fps, tpr_level):
    """AUROC, AP and FPR@TPR from cumulative counts at descending thresholds."""
    positives, negatives = tps[-1], fps[-1]
    if positives == 0 or negatives == 0:
        return {"auroc": np.nan, "ap": np.nan, f"fpr{round(tpr_level * 100)}": np.nan}
    tpr = np.concatenate([[0.0], tps / positives])
    fpr = np.concatenate([[0.0], fps / negatives])
    precision = tps / np.maximum(tps + fps, 1)
    return {
        "auroc": float(np.trapezoid(tpr, fpr)),
        # sklearn's AP: precision weighted by each recall step.
        "ap": float(np.sum(np.diff(tpr) * precision)),
        # First ROC point whose TPR reaches the level (tpr >= 0.95 rule).
        f"fpr{round(tpr_level * 100)}": float(fpr[np.argmax(tpr >= tpr_level)]),
    }


def anomaly_metrics(scores, anomaly, valid=None, tpr_level=0.95):
    """Exact pooled AUROC, average precision and FPR at `tpr_level`.

    Sort-based, with tied scores forming one threshold (as scikit-learn's
    `roc_curve` and `average_precision_score`).

    Args:
        scores: array, any shape. Higher = more anomalous.
        anomaly: bool array, same shape. True for anomalous pixels.
        valid: optional bool array. Pixels to score (void excluded).
        tpr_level: float. TPR at which the FPR is read. Defaults to `0.95`.

    Returns:
        dict with `"auroc"`, `"ap"`, `"fpr95"` (NaN if a class is absent).

    Example:

    >>> import numpy as np
    >>> m = anomaly_metrics(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    >>> round(m["auroc"], 2), round(m["ap"], 2), m["fpr95"]
    (0.75, 0.83, 0.5)
    """
    return _summaries(*_counts(*_select(scores, anomaly, valid)), tpr_level)


def _counts(scores, anomaly):
    """Cumulative true/false positives at each distinct descending threshold."""
    order = np.argsort(-scores, kind="mergesort")
    scores, anomaly = scores[order], anomaly[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tps = np.cumsum(anomaly)[last].astype(np.float64)
    return tps, (last + 1) - tps


def roc_pr_curves(scores, anomaly, valid=None, max_points=2000):
    """ROC `(fpr, tpr)` and PR `(recall, precision)` curves for plotting.

    Returns a dict of arrays, thinned to at most `max_points` thresholds.
    """
    tps, fps = _counts(*_select(scores, anomaly, valid))
    keep = np.unique(np.linspace(0, len(tps) - 1, min(max_points, len(tps))).astype(int))
    tps, fps = tps[keep], fps[keep]
    return {
        "fpr": np.r_[0.0, fps / max(fps[-1], 1)],
        "tpr": np.r_[0.0, tps / max(tps[-1], 1)],
        "recall": tps / max(tps[-1], 1),
        "precision": tps / np.maximum(tps + fps, 1),
    }


def per_image_anomaly_metrics(scores, anomaly, valid=None, tpr_level=0.95):
    """Mean over images of `anomaly_metrics` (images lacking a class skipped)."""
    rows = [
        anomaly_metrics(s, a, None if valid is None else v, tpr_level)
        for s, a, v in zip(scores, anomaly, valid if valid is not None else scores)
    ]
    return {key: float(np.nanmean([row[key] for row in rows])) for key in rows[0]}


class BinnedAnomalyMetrics:
    """Streaming AUROC / AP / FPR from score histograms, for large sets.

    Scores are binned into `num_bins` equal-width bins over `score_range`
    (scores outside are clipped into the end bins); memory is two
    histograms whatever the number of pixels.

    Args:
        score_range: `(low, high)` of the scores.
        num_bins: int. Defaults to `10000`.
        tpr_level: float. Defaults to `0.95`.

    Example:

    >>> import numpy as np
    >>> binned = BinnedAnomalyMetrics((0.0, 1.0))
    >>> binned.update(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    >>> round(binned.result()["auroc"], 2)
    0.75
    """

    def __init__(self, score_range, num_bins=10000, tpr_level=0.95):
        low, high = map(float, score_range)
        if not high > low:
            raise ValueError(
                f"`score_range` must be (low, high) with high > low; received {score_range}."
            )
        self.low, self.high, self.num_bins, self.tpr_level = low, high, num_bins, tpr_level
        self.positive = np.zeros(num_bins, np.int64)
        self.negative = np.zeros(num_bins, np.int64)

    def update(self, scores, anomaly, valid=None):
        scores, anomaly = _select(scores, anomaly, valid)
        index = ((scores - self.low) / (self.high - self.low) * self.num_bins).astype(np.int64)
        index = np.clip(index, 0, self.num_bins - 1)
        self.positive += np.bincount(index[anomaly], minlength=self.num_bins)
        self.negative += np.bincount(index[~anomaly], minlength=self.num_bins)

    def result(self):
        # Highest bin first, each bin one threshold; empty bins add no point.
        used = (self.positive + self.negative)[::-1] > 0
        tps = np.cumsum(self.positive[::-1])[used].astype(np.float64)
        fps = np.cumsum(self.negative[::-1])[used].astype(np.float64)
        return _summaries(tps, fps, self.tpr_level)


def open_set_recognition_metrics(known_scores, unknown_scores, tpr_level=0.95):
    """Open-set recognition metrics, known examples positive (L-GMM App. C.1).

    The scores are anomaly scores (higher = more likely unknown); the
    in-distribution confidence is their negative. Thresholds are the
    distinct scores, ties forming one threshold.

    Returns a dict:
    - `"auroc"`: P(known more confident than unknown), ties ½;
    - `"fpr95"`: the fraction of unknowns accepted at the first threshold
      accepting ≥ 95% of the knowns;
    - `"aupr_in"` / `"aupr_out"`: average precision with knowns positive
      (confidence) / unknowns positive (anomaly score);
    - `"detection_error"`: `0.5(1 − TPR) + 0.5·FPR` at that 95% threshold
      (the definition App. C.1 prints);
    - `"detection_error_min"`: its minimum over thresholds (ODIN's, which
      the paper's Table 10 matches).

    Example:

    >>> m = open_set_recognition_metrics([0.1, 0.2, 0.5], [0.4, 0.9])
    >>> round(m["auroc"], 3), m["fpr95"], round(m["detection_error_min"], 3)
    (0.833, 0.5, 0.167)
    """
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    confidence = -np.concatenate([known, unknown])
    is_known = np.r_[np.ones(known.size, bool), np.zeros(unknown.size, bool)]
    inward = anomaly_metrics(confidence, is_known, tpr_level=tpr_level)
    outward = anomaly_metrics(-confidence, ~is_known, tpr_level=tpr_level)
    tps, fps = _counts(*_select(confidence, is_known, None))
    tpr = np.r_[0.0, tps / max(tps[-1], 1)]
    fpr = np.r_[0.0, fps / max(fps[-1], 1)]
    error = 0.5 * (1.0 - tpr) + 0.5 * fpr
    level = f"fpr{round(tpr_level * 100)}"
    return {"auroc": inward["auroc"], level: inward[level], "aupr_in": inward["ap"],
            "aupr_out": outward["ap"], "detection_error": float(error[np.argmax(tpr >= tpr_level)]),
            "detection_error_min": float(error.min())}

"""Anomaly-score baselines for any softmax segmenter (higher = more anomalous)."""

import numpy as np
from keras import ops


def max_softmax_score(logits):
    """`1 - max_c softmax(logits)` (Hendrycks & Gimpel, 2017).

    Example:

    >>> import numpy as np
    >>> round(float(max_softmax_score(np.array([0.0, 0.0]))), 3)
    0.5
    """
    return 1.0 - ops.max(ops.softmax(ops.cast(logits, "float32"), axis=-1), axis=-1)


def entropy_score(logits):
    """Entropy of the softmax, `-Σ p log p`."""
    log_p = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)
    return -ops.sum(ops.exp(log_p) * log_p, axis=-1)


def max_logit_score(logits):
    """`-max_c logit_c` (Hendrycks et al., 2022)."""
    return -ops.max(ops.cast(logits, "float32"), axis=-1)


def energy_score(logits, temperature=1.0):
    """Free energy `-T logsumexp(logits / T)` (Liu et al., 2020)."""
    logits = ops.cast(logits, "float32")
    return -temperature * ops.logsumexp(logits / temperature, axis=-1)


class MahalanobisScore:
    """Min over classes of the Mahalanobis distance with a shared covariance.

    Class means and one covariance shared by all classes (Lee et al., 2018)
    are fitted on training features; the score of a feature is its squared
    distance to the nearest class mean. The fit runs in float64 numpy and
    scoring is one expanded quadratic form (no per-class loop).

    Args:
        reg_covar: float. Added to the covariance diagonal. Defaults to `1e-6`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> features = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(5, 1, (200, 2))])
    >>> labels = np.repeat([0, 1], 200)
    >>> scorer = MahalanobisScore().fit(features, labels)
    >>> near, far = np.asarray(scorer.score(np.array([[0.0, 0.0], [20.0, -20.0]])))
    >>> bool(far > near)
    True
    """

    def __init__(self, reg_covar=1e-6):
        self.reg_covar = reg_covar
        self.means = None
        self.precision = None

    def fit(self, features, labels, ignore_index=255):
        """Fit on features `(..., D)` with sparse labels `(...)`."""
        features = np.asarray(features, np.float64)
        labels = np.asarray(labels).ravel()
        features = features.reshape(-1, features.shape[-1])
        if features.shape[0] != labels.shape[0]:
            raise ValueError(
                f"`features` and `labels` must cover the same pixels; received "
                f"{features.shape[0]} features and {labels.shape[0]} labels."
            )
        keep = labels != ignore_index
        features, labels = features[keep], labels[keep]
        classes = np.unique(labels)
        self.means = np.stack([features[labels == c].mean(0) for c in classes])
        centred = features - self.means[np.searchsorted(classes, labels)]
        covariance = centred.T @ centred / len(features)
        covariance += self.reg_covar * np.eye(covariance.shape[0])
        self.precision = np.linalg.inv(covariance)
        return self

    def score(self, features):
        """Squared Mahalanobis distance to the nearest class mean `(...)`."""
        if self.means is None:
            raise ValueError("Call `fit(features, labels)` before `score`.")
        x = ops.cast(features, "float32")
        precision = ops.convert_to_tensor(self.precision.astype("float32"))
        means = ops.convert_to_tensor(self.means.astype("float32"))
        projected = ops.matmul(x, precision)
        # (x-μ)ᵀP(x-μ) = xᵀPx − 2 xᵀPμ + μᵀPμ, all classes in one product.
        distances = (
            ops.sum(projected * x, axis=-1, keepdims=True)
            - 2.0 * ops.matmul(projected, ops.transpose(means))
            + ops.sum(ops.matmul(means, precision) * means, axis=-1)
        )
        return ops.min(distances, axis=-1)


SCORES = {
    "max_softmax": max_softmax_score,
    "entropy": entropy_score,
    "max_logit": max_logit_score,
    "energy": energy_score,
}

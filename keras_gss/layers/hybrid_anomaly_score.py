"""DenseHybrid's hybrid anomaly score: dataset posterior over unnormalised likelihood."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_gss")
class HybridAnomalyScore(keras.layers.Layer):
    """Hybrid anomaly score `s_H = ln P(d_out|x) − ln p̂(x)` (DenseHybrid Eq. 9).

    `P(d_in|x) = σ(g)` is the dataset posterior from the logit `g`, so
    `ln P(d_out|x) = −softplus(g)` (the stable form), and `ln p̂(x)` is an
    unnormalised log-likelihood: `LSE(s)` of the class logits `s` (Eq. 6),
    or any other, such as GMMSeg's `max_c log p(x|c)`. Returns the hybrid
    and its two parts, each a score on its own (higher = more anomalous):
    `"discriminative"` `ln P(d_out|x)` and `"generative"` `−ln p̂(x)`.
    Computed in float32 whatever the dtype policy.

    Call args:
        dataset_logit: float tensor `(...)` or `(..., 1)`: `g`.
        logits: float tensor `(..., C)`: class logits `s`; or
        log_likelihood: float tensor `(...)`: `ln p̂(x)` itself.

    Example:

    >>> import numpy as np
    >>> score = HybridAnomalyScore()
    >>> out = score(np.array([0.0], "float32"), logits=np.log([[1.0, 1.0]]).astype("float32"))
    >>> [round(float(out[k][0]), 4) for k in ("hybrid", "discriminative", "generative")]
    [-1.3863, -0.6931, -0.6931]

    Reference:
        Grcić and Šegvić, "Hybrid Open-set Segmentation with Synthetic
        Negative Data", IEEE TPAMI 2024 (DenseHybrid, ECCV 2022).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, dataset_logit, logits=None, log_likelihood=None):
        if (logits is None) == (log_likelihood is None):
            raise ValueError("Pass exactly one of `logits` (class logits, whose logsumexp is "
                             "ln p̂(x)) and `log_likelihood` (ln p̂(x) itself).")
        g = ops.cast(dataset_logit, "float32")
        if log_likelihood is None:
            log_likelihood = ops.logsumexp(ops.cast(logits, "float32"), axis=-1)
            if len(g.shape) == len(logits.shape):
                g = g[..., 0]
        elif len(g.shape) == len(log_likelihood.shape) + 1:
            g = g[..., 0]
        discriminative = -ops.softplus(g)  # ln(1 − σ(g)), exact for |g| large
        generative = -ops.cast(log_likelihood, "float32")
        return {"hybrid": discriminative + generative, "discriminative": discriminative,
                "generative": generative}

    def compute_output_spec(self, dataset_logit, logits=None, log_likelihood=None):
        shape = (logits.shape[:-1] if logits is not None else log_likelihood.shape)
        return {k: keras.KerasTensor(shape, "float32")
                for k in ("hybrid", "discriminative", "generative")}

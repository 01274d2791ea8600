"""Sinkhorn-Knopp E-step of Sinkhorn EM (GMMSeg Eq. 10), in pure `keras.ops`."""

import math

from keras import ops

from keras_gss.utils.checks import check_positive


def segment_logsumexp(x, segment_ids, num_segments):
    """`logsumexp` of the rows of `x` (N, M) within each segment -> (S, M)."""
    peak = ops.segment_max(x, segment_ids, num_segments=num_segments)
    # Empty segments hold -inf (JAX) or the lowest float (TF); either is unused.
    peak = ops.where(ops.isfinite(peak), peak, ops.zeros_like(peak))
    shifted = ops.exp(x - ops.take(peak, segment_ids, axis=0))
    total = ops.segment_sum(shifted, segment_ids, num_segments=num_segments)
    return ops.log(total) + peak


def sinkhorn_knopp(
    scores, epsilon=0.05, iterations=3, segment_ids=None, num_segments=None
):
    """Equipartitioned soft assignment of samples to mixture components.

    Solves the entropic optimal-transport E-step of Sinkhorn EM (GMMSeg
    Eq. 10): the `N_c` samples of class `c` are spread over its `M`
    components so that every component receives `N_c / M` of the mass and
    every sample's responsibilities sum to one, with cost
    `-log p(x | c, m)` and entropic weight `epsilon`. Scores are divided by
    their largest magnitude within each class first, as in the authors' code,
    so `epsilon` is relative to that scale; all iterations run in the log
    domain, so no score magnitude can overflow.

    Several classes are solved at once with `segment_ids`: sample `n`
    belongs to problem `segment_ids[n]`; ids outside `[0, num_segments)`
    (the ignore label, say) take part in no problem.

    Args:
        scores: float tensor `(N, M)`. Log-likelihood of every sample under
            each of the `M` components of its class.
        epsilon: float. Entropic regularisation (paper default 0.05).
            Defaults to `0.05`.
        iterations: int. Sinkhorn iterations; the authors' code uses 3,
            which approaches but does not reach exact equipartition.
            Defaults to `3`.
        segment_ids: optional int tensor `(N,)`. The class of each sample.
            Defaults to `None` (one problem over all samples).
        num_segments: int. Number of classes when `segment_ids` is given.

    Returns:
        A tuple `(plan, assignment)`: the soft transport plan `(N, M)` whose
        rows sum to one, and the hard assignment `argmax_m plan` `(N,)`
        int32.

    Example:

    >>> import numpy as np
    >>> scores = np.log(np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]]))
    >>> plan, hard = sinkhorn_knopp(scores.astype("float32"), iterations=50)
    >>> [round(float(s), 2) for s in np.asarray(plan).sum(axis=0)]
    [1.5, 1.5]

    Reference:
        Liang et al., "GMMSeg: Gaussian Mixture based Generative Semantic
        Segmentation Models", NeurIPS 2022, Eq. 10; Cuturi, "Sinkhorn
        distances", NeurIPS 2013.
    """
    check_positive("epsilon", epsilon)
    check_positive("iterations", iterations, integer=True)
    scores = ops.stop_gradient(ops.cast(scores, "float32"))
    if len(scores.shape) != 2:
        raise ValueError(
            "`scores` must have shape (num_samples, num_components); "
            f"received shape {tuple(scores.shape)}."
        )
    num_components = scores.shape[-1]
    if segment_ids is None:
        num_segments = 1
        segment_ids = ops.zeros_like(scores[:, 0], dtype="int32")
    elif num_segments is None:
        raise ValueError("`num_segments` is required with `segment_ids`.")
    segment_ids = ops.cast(segment_ids, "int32")
    # One spare segment collects the samples that belong to no problem.
    inside = ops.logical_and(segment_ids >= 0, segment_ids < num_segments)
    segment_ids = ops.where(inside, segment_ids, num_segments)
    total_segments = num_segments + 1

    magnitude = ops.segment_max(
        ops.max(ops.abs(scores), axis=-1), segment_ids, total_segments
    )
    usable = ops.logical_and(ops.isfinite(magnitude), magnitude > 0)
    magnitude = ops.where(usable, magnitude, ops.ones_like(magnitude))
    log_q = scores / ops.take(magnitude, segment_ids)[:, None] / epsilon

    counts = ops.segment_sum(
        ops.ones_like(scores[:, 0]), segment_ids, total_segments
    )
    # Column target N_c / M (Eq. 10); log(0) only for empty, unused segments.
    log_share = ops.take(ops.log(counts) - math.log(num_components), segment_ids)
    for _ in range(iterations):
        column = segment_logsumexp(log_q, segment_ids, total_segments)
        log_q = log_q - ops.take(column, segment_ids, axis=0) + log_share[:, None]
        log_q = log_q - ops.logsumexp(log_q, axis=-1, keepdims=True)
    plan = ops.exp(log_q)
    assignment = ops.cast(ops.argmax(log_q, axis=-1), "int32")
    return plan, assignment

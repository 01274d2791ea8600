"""Diagonal Gaussian-mixture maths shared by GMMSeg and L-GMM.

Pure functions of tensors (`keras.ops` only), float32, log domain, in the
manner of scikit-learn's `mixture/_gaussian_mixture.py`: the log-density of
every class × component, the reduction of components to a class
log-likelihood (winner-take-all or π-weighted), responsibilities and the
Wasserstein distance of component usage to uniform (L-GMM), the moments of
a memory, and the momentum M-step.
"""

import math

from keras import ops

from keras_gss.utils.numerics import l2_normalize

COMPONENT_REDUCTIONS = ("max", "logsumexp")
GROUND_METRICS = ("discrete", "index")


###############################################################################
# Log-density


def _quadratic_form(means, scales):
    """`(-½/σ², μ/σ², constant)` of every component, flattened to `(C·M, ·)`."""
    means = ops.cast(means, "float32")
    scales = ops.cast(scales, "float32")
    dim = means.shape[-1]
    precision = ops.reshape(1.0 / ops.square(scales), (-1, dim))
    weighted_means = ops.reshape(means, (-1, dim)) * precision
    constant = (
        -0.5 * ops.sum(weighted_means * ops.reshape(means, (-1, dim)), axis=-1)
        - ops.reshape(ops.sum(ops.log(scales), axis=-1), (-1,))
        - 0.5 * dim * math.log(2.0 * math.pi)
    )
    return -0.5 * precision, weighted_means, constant


def diagonal_gaussian_log_likelihood(x, means, scales):
    """`log N(x; μ_cm, diag(σ_cm²))` for every class × component.

    The quadratic form is expanded so that all `C·M` components cost one
    matrix product over `[x², x]`; no `(N, C·M, D)` tensor is formed:
    `-½ x²·(1/σ²) + x·(μ/σ²) - ½ Σ μ²/σ² - Σ log σ - (D/2) log 2π`.
    Always computed in float32.

    Args:
        x: float tensor `(..., D)`. Embeddings.
        means: float tensor `(C, M, D)`. Component means `μ`.
        scales: float tensor `(C, M, D)`. Per-dimension standard
            deviations `σ` (not variances).

    Returns:
        float32 tensor `(..., C, M)` of log-densities.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((1, 2), "float32")
    >>> means = np.zeros((1, 1, 2), "float32")
    >>> scales = np.ones((1, 1, 2), "float32")
    >>> ll = diagonal_gaussian_log_likelihood(x, means, scales)
    >>> round(float(np.asarray(ll)[0, 0, 0]), 4)  # -log(2π)
    -1.8379
    """
    x = ops.cast(x, "float32")
    num_classes, num_components, _ = means.shape
    half_precision, weighted_means, constant = _quadratic_form(means, scales)
    # One product: [x², x] @ [-½ prec; μ·prec]ᵀ gives both quadratic terms.
    kernel = ops.transpose(ops.concatenate([half_precision, weighted_means], axis=-1))
    features = ops.concatenate([ops.square(x), x], axis=-1)
    ll = ops.matmul(features, kernel) + constant
    return ops.reshape(
        ll, tuple(ops.shape(x)[:-1]) + (num_classes, num_components)
    )


def own_class_log_likelihood(x, means, scales):
    """`log N(x_cq; μ_cm, σ_cm)` of each class's entries under its own components.

    For a per-class memory `(C, Q, D)`: `C` small products instead of the
    `(C, Q, C, M)` of `diagonal_gaussian_log_likelihood`, which would be
    mostly other classes' components.

    Args:
        x: float tensor `(C, Q, D)`. Entries of each class.
        means: float tensor `(C, M, D)`.
        scales: float tensor `(C, M, D)`. Standard deviations.

    Returns:
        float32 tensor `(C, Q, M)`.

    Example:

    >>> import numpy as np
    >>> x = np.zeros((2, 3, 4), "float32")
    >>> means, scales = np.zeros((2, 5, 4), "float32"), np.ones((2, 5, 4), "float32")
    >>> tuple(own_class_log_likelihood(x, means, scales).shape)
    (2, 3, 5)
    """
    x = ops.cast(x, "float32")
    num_classes, num_components, dim = means.shape
    half_precision, weighted_means, constant = _quadratic_form(means, scales)
    kernel = ops.reshape(ops.concatenate([half_precision, weighted_means], axis=-1),
                         (num_classes, num_components, 2 * dim))
    features = ops.concatenate([ops.square(x), x], axis=-1)
    return (ops.einsum("cqe,cme->cqm", features, kernel)
            + ops.reshape(constant, (num_classes, 1, num_components)))


###############################################################################
# Component reduction


def reduce_components(component_log_likelihood, reduction="max", log_weights=None):
    """`log p(x | c)` from component log-densities `(..., C, M)`.

    `"max"` is GMMSeg's winner-take-all (§3.3 and the authors' code);
    `"logsumexp"` is the mixture `log Σ_m π_cm N(x; μ_cm, σ_cm)` (GMMSeg
    Eq. 4, L-GMM Eq. 4), with uniform weights `π_cm = 1/M` unless
    `log_weights` `(C, M)` gives them (WTA ignores them, as GMMSeg does).

    Example:

    >>> import numpy as np
    >>> ll = np.log(np.array([[0.5, 0.5]], "float32"))
    >>> round(float(np.asarray(reduce_components(ll, "logsumexp"))[0]), 4)
    -0.6931
    """
    if reduction == "max":
        return ops.max(component_log_likelihood, axis=-1)
    if reduction == "logsumexp":
        if log_weights is not None:
            return ops.logsumexp(component_log_likelihood + log_weights, axis=-1)
        num_components = component_log_likelihood.shape[-1]
        return ops.logsumexp(component_log_likelihood, axis=-1) - math.log(
            num_components
        )
    raise ValueError(
        f"`reduction` must be one of {list(COMPONENT_REDUCTIONS)}; "
        f"received {reduction!r}."
    )


def component_responsibilities(component_log_likelihood, log_weights):
    """`p(k | x, c) = π_ck N(x; μ_ck, σ_ck) / Σ_k' π_ck' N(x; μ_ck', σ_ck')` over the last axis.

    A softmax over components (the posterior L-GMM Eq. 6 names; Algorithm 1
    divides log-densities by their sum instead, which is not a posterior).
    """
    return ops.softmax(component_log_likelihood + log_weights, axis=-1)


def wasserstein_to_uniform(usage, ground_metric="discrete"):
    """`W₁(p, U(M))` between component usages `(..., M)` and the uniform distribution.

    `usage` is normalised to sum to 1 first. Two ground metrics on the
    component indices:
    - `"discrete"` (0 between a component and itself, 1 otherwise): `W₁` is
      the total variation `½ Σ_k |p_k − 1/M|`. Components of a class are
      unordered, so no index is nearer another: the default.
    - `"index"` (`|k − k'|`): `Σ_k |CDF_p(k) − CDF_U(k)|`, the 1-D form
      L-GMM's Algorithm 1 uses; it depends on the arbitrary index order.

    Example:

    >>> import numpy as np
    >>> p = np.array([1.0, 0.0, 0.0], "float32")
    >>> round(float(wasserstein_to_uniform(p)), 4), round(float(wasserstein_to_uniform(p, "index")), 4)
    (0.6667, 1.0)
    """
    usage = ops.cast(usage, "float32")
    usage = usage / ops.maximum(ops.sum(usage, axis=-1, keepdims=True), 1e-12)
    uniform = 1.0 / usage.shape[-1]
    if ground_metric == "discrete":
        return 0.5 * ops.sum(ops.abs(usage - uniform), axis=-1)
    if ground_metric == "index":
        return ops.sum(ops.abs(ops.cumsum(usage - uniform, axis=-1)), axis=-1)
    raise ValueError(f"`ground_metric` must be one of {list(GROUND_METRICS)}; "
                     f"received {ground_metric!r}.")


###############################################################################
# Moments


def moments_from_sums(count, total, total_square):
    """Count, mean and mean square from running sums of every queue.

    Args:
        count: int tensor `(C, M)`. Filled entries per queue.
        total: float tensor `(C, M, D)`. Sum of the entries.
        total_square: float tensor `(C, M, D)`. Sum of their squares.

    Returns:
        `(count, mean, mean_square)`, float32; mean and mean square are zero
        where a queue is empty.
    """
    count = ops.cast(count, "float32")
    divisor = ops.maximum(count, 1.0)[..., None]
    return count, total / divisor, total_square / divisor


###############################################################################
# M-step


def momentum_m_step(
    count, mean, mean_square, means, scales, mean_momentum, scale_momentum,
    variance_floor, refit=None,
):
    """One momentum M-step from memory moments (hard assignments).

    The fresh mean is the normalised mean direction of a queue and the fresh
    variance is taken around it with a floor, as in the authors' code;
    both are blended into the current parameters with momentum
    (`new = γ·old + (1-γ)·fresh`, GMMSeg §3.3), and means are re-normalised
    onto the unit sphere. Queues with no entries, and classes that `refit`
    leaves out, keep their parameters.

    Args:
        count: `(C, M)` filled entries per queue.
        mean: `(C, M, D)` mean of the filled entries.
        mean_square: `(C, M, D)` mean of their squares.
        means: `(C, M, D)` current means.
        scales: `(C, M, D)` current standard deviations.
        mean_momentum: float γ_μ in [0, 1).
        scale_momentum: float γ_σ in [0, 1).
        variance_floor: float added to every fresh variance.
        refit: optional bool or int `(C,)`: the classes to refit (the
            authors' code refits the classes of the current batch). `None`
            refits every class.

    Returns:
        `(new_means, new_scales)`, float32.
    """
    fresh_mean = l2_normalize(mean)
    # E[(x - μ̂)²] from the moments: one pass over the memory, not two.
    variance = mean_square - 2.0 * fresh_mean * mean + ops.square(fresh_mean)
    fresh_scale = ops.sqrt(ops.maximum(variance, 0.0) + variance_floor)
    has_data = count > 0
    if refit is not None:
        has_data = ops.logical_and(has_data, ops.cast(refit, "bool")[:, None])
    has_data = has_data[..., None]
    new_means = ops.where(
        has_data,
        l2_normalize(mean_momentum * means + (1.0 - mean_momentum) * fresh_mean),
        means,
    )
    new_scales = ops.where(
        has_data,
        scale_momentum * scales + (1.0 - scale_momentum) * fresh_scale,
        scales,
    )
    return new_means, new_scales

"""Losses shared by every family."""

from keras import ops

from keras_gss.ops.gaussian_mixture import component_responsibilities
from keras_gss.ops.gaussian_mixture import wasserstein_to_uniform


def sparse_categorical_crossentropy(
    labels, logits, ignore_index=255, sample_weight=None, reduce_sum=None
):
    """Mean cross-entropy over the labelled pixels of sparse label maps.

    Pixels labelled `ignore_index` or outside `[0, C)` add nothing, so the
    loss never indexes out of range (jit-safe, no boolean masking); out of
    range labels are reported by the model, not here.

    Args:
        labels: int tensor `(...)`. Class ids.
        logits: float tensor `(..., C)`. Computed in float32.
        ignore_index: int. Label of void pixels. Defaults to `255`.
        sample_weight: optional float tensor broadcastable to `labels`.
        reduce_sum: optional function summing a scalar over replicas. With
            it the local sum is divided by the global weight, so replicas'
            losses add up to the global mean (data-parallel training).

    Returns:
        Scalar float32: the weighted mean over valid pixels (0 if none).

    Example:

    >>> import numpy as np
    >>> logits = np.log(np.array([[0.5, 0.5], [0.9, 0.1]], "float32"))
    >>> loss = sparse_categorical_crossentropy(np.array([0, 255]), logits)
    >>> round(float(loss), 4)  # only the first pixel counts: -log 0.5
    0.6931
    """
    logits = ops.cast(logits, "float32")
    num_classes = logits.shape[-1]
    labels = ops.cast(labels, "int32")
    valid = ops.logical_and(
        ops.logical_and(labels >= 0, labels < num_classes),
        labels != ignore_index,
    )
    safe = ops.where(valid, labels, 0)
    log_probs = ops.log_softmax(logits, axis=-1)
    picked = ops.take_along_axis(log_probs, safe[..., None], axis=-1)[..., 0]
    weight = ops.cast(valid, "float32")
    if sample_weight is not None:
        weight = weight * ops.cast(sample_weight, "float32")
    total = ops.sum(weight)
    if reduce_sum is not None:
        total = reduce_sum(total)
    return -ops.sum(picked * weight) / ops.maximum(total, 1.0)


# DenseHybrid Eq. 41's β2 = β3 and β4 in the authors' LDN setting (and their code's default).
DENSEHYBRID_BETAS = (1.0, 0.3, 0.3, 0.03)


def dataset_posterior_loss(negative, dataset_logit, log_likelihood, betas=DENSEHYBRID_BETAS,
                           reduce_sum=None):
    """The terms DenseHybrid's Eq. 41 adds to the β1-weighted cross-entropy.

    `β2·E_in[−ln P(d_in|x)] + β3·E_out[−ln(1 − P(d_in|x))] + β4·E_out[ln p̂(x)]`
    with `P(d_in|x) = σ(g)`: `β2·softplus(−g)` averaged over the pixels not
    pasted (void included, as the authors' code counts them in),
    `β3·softplus(g) + β4·ln p̂` averaged over the pasted ones. Each mean is
    over its own pixels (the paper's two expectations); a batch without
    negatives adds only the first term, so the loss stays finite.

    Args:
        negative: bool tensor `(B, H, W)`. True on pasted negative pixels.
        dataset_logit: float tensor `(B, H, W)`: `g`.
        log_likelihood: float tensor `(B, H, W)`: `ln p̂(x)`, e.g. `LSE(s)`.
        betas: `(β1, β2, β3, β4)`; β1 weighs the cross-entropy elsewhere.
            Defaults to `(1, 0.3, 0.3, 0.03)`.
        reduce_sum: optional function summing a scalar over replicas, so
            replicas' losses add up to the global means.

    Example:

    >>> import numpy as np
    >>> negative = np.array([[[False, True]]])
    >>> g = np.zeros((1, 1, 2), "float32")
    >>> loss = dataset_posterior_loss(negative, g, np.zeros((1, 1, 2), "float32"))
    >>> round(float(loss), 4)  # 0.3 ln 2 + 0.3 ln 2 + 0.03 · 0
    0.4159
    """
    _, beta2, beta3, beta4 = betas
    g = ops.cast(dataset_logit, "float32")
    out = ops.cast(negative, "float32")
    inside = 1.0 - out
    count_in, count_out = ops.sum(inside), ops.sum(out)
    if reduce_sum is not None:
        count_in, count_out = reduce_sum(count_in), reduce_sum(count_out)
    in_term = beta2 * ops.sum(ops.softplus(-g) * inside)
    out_term = ops.sum((beta3 * ops.softplus(g)
                        + beta4 * ops.cast(log_likelihood, "float32")) * out)
    return in_term / ops.maximum(count_in, 1.0) + out_term / ops.maximum(count_out, 1.0)


def latent_gmm_terms(own_log_likelihood, valid, own_log_weights, memory_log_likelihood,
                     memory_filled, log_weights, ground_metric="discrete", reduce_sum=None):
    """L-GMM's generative terms (Eqs. 5–6): `L_mle`, `L_one` and `L_avg`.

    Means over examples and classes where the paper writes sums, so the
    weights λ do not scale with the batch or the number of classes:
    - `"nll"` = `−L_mle`: mean over valid examples of
      `−log Σ_k π_yk N(z; μ_yk, σ_yk)`;
    - `"one"` = `L_one`: mean over valid examples of
      `Σ_k (p(k|z, y) − 1[k = k*])²`, `k* = argmax_k p(k|z, y)`;
    - `"avg"` = `L_avg`: mean over classes with memory entries of
      `W₁(p(k|y), U(M))`, with `p(k|y)` the mean responsibility over the
      class's memory entries (see `wasserstein_to_uniform`).

    Args:
        own_log_likelihood: float `(N, M)`: `log N(z_n; μ_{y_n k}, σ_{y_n k})`.
        valid: bool `(N,)`: examples with a known label.
        own_log_weights: float `(N, M)`: `log π_{y_n k}`.
        memory_log_likelihood: float `(C, Q, M)`: each memory entry under
            its own class's components.
        memory_filled: bool `(C, Q)`: filled memory entries.
        log_weights: float `(C, M)`: `log π_yk`.
        ground_metric: `"discrete"` or `"index"`. Defaults to `"discrete"`.
        reduce_sum: optional function summing a scalar over replicas, so the
            per-example means are global.

    Returns:
        dict of float32 scalars `"nll"`, `"one"`, `"avg"`.

    Example:

    >>> import numpy as np
    >>> ll = np.log(np.array([[0.5, 0.5]], "float32"))
    >>> w = np.log(np.full((1, 2), 0.5, "float32"))
    >>> t = latent_gmm_terms(ll, np.array([True]), w, ll[None], np.array([[True]]), w)
    >>> [round(float(t[k]), 4) for k in ("nll", "one", "avg")]
    [0.6931, 0.5, 0.0]
    """
    own = ops.cast(own_log_likelihood, "float32") + ops.cast(own_log_weights, "float32")
    weight = ops.cast(valid, "float32")
    count = ops.sum(weight)
    if reduce_sum is not None:
        count = reduce_sum(count)
    count = ops.maximum(count, 1.0)
    nll = -ops.sum(ops.logsumexp(own, axis=-1) * weight) / count
    responsibility = ops.softmax(own, axis=-1)
    hard = ops.one_hot(ops.argmax(responsibility, axis=-1), own.shape[-1])
    one = ops.sum(ops.sum(ops.square(responsibility - hard), axis=-1) * weight) / count

    filled = ops.cast(memory_filled, "float32")
    memory = component_responsibilities(ops.cast(memory_log_likelihood, "float32"),
                                        ops.cast(log_weights, "float32")[:, None, :])
    usage = ops.sum(memory * filled[..., None], axis=1)  # (C, M), normalised by W₁
    present = ops.cast(ops.sum(filled, axis=1) > 0, "float32")
    avg = (ops.sum(wasserstein_to_uniform(usage, ground_metric) * present)
           / ops.maximum(ops.sum(present), 1.0))
    return {"nll": nll, "one": one, "avg": avg}

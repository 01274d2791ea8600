"""Losses shared by every family."""

from keras import ops


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

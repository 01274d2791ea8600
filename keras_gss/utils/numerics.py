"""Numerical helpers shared by every family."""

from keras import ops


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """`x / ||x||` with a finite gradient at `x = 0` on every backend.

    `rsqrt(max(Σx², ε))` instead of `x / max(||x||, ε)`: the norm's gradient
    at a zero vector is 0/0 (NaN on JAX); the clamped sum has none.
    """
    square_sum = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, epsilon))

"""Input validation shared by every layer, model and callback.

Checks run on concrete (eager) values only: inside a compiled step the same
conditions are counted into state and raised from the host afterwards (see
`keras_gss.layers.InputErrors`).
"""

import difflib

import keras
import numpy as np
from keras import ops


def is_concrete(x):
    """Whether `x` holds values now (not a symbolic or traced tensor)."""
    if isinstance(x, np.ndarray):
        return True
    if isinstance(x, keras.KerasTensor):
        return False
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly() and hasattr(x, "numpy")
    if backend == "jax":
        import jax

        return isinstance(x, jax.Array) and not isinstance(
            x, jax.core.Tracer
        )
    return False


def check_rank(name, x, rank, layout):
    """Raise if `x` does not have `rank` dimensions."""
    if len(x.shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank} with layout {layout}; "
            f"received shape {tuple(x.shape)}."
        )


def check_channels(name, x, channels, fix):
    """Raise if the last axis of `x` is not `channels`."""
    if x.shape[-1] is not None and x.shape[-1] != channels:
        raise ValueError(
            f"`{name}` must have {channels} channels in its last axis; "
            f"received shape {tuple(x.shape)}. {fix}"
        )


def check_finite(name, x, fix):
    """Raise if a concrete `x` holds NaN or Inf; symbolic values pass."""
    if not is_concrete(x):
        return
    values = ops.convert_to_numpy(x)
    if not np.all(np.isfinite(values)):
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ValueError(
            f"`{name}` holds {bad} non-finite values (NaN or Inf). {fix}"
        )


def check_labels(name, labels, num_classes, ignore_index):
    """Raise if concrete `labels` fall outside `[0, num_classes) ∪ {ignore}`."""
    if not is_concrete(labels):
        return
    values = np.asarray(ops.convert_to_numpy(labels))
    if not np.issubdtype(values.dtype, np.integer):
        if np.any(values != np.round(values)):
            raise ValueError(
                f"`{name}` must hold integer class ids; received dtype "
                f"{values.dtype} with fractional values. Labels are sparse "
                "class-id maps, never one-hot or probabilities."
            )
    bad = (values != ignore_index) & ((values < 0) | (values >= num_classes))
    if np.any(bad):
        found = np.unique(values[bad])[:8].astype(np.int64).tolist()
        raise_label_error(name, found, num_classes, ignore_index)


def raise_label_error(name, found, num_classes, ignore_index):
    raise ValueError(
        f"`{name}` holds class ids outside [0, {num_classes}) ∪ "
        f"{{{ignore_index}}}: found {found}. Map the dataset's ids to "
        f"train ids in [0, {num_classes}), mark void pixels with "
        f"ignore_index={ignore_index}, or build the model with a larger "
        "`num_classes`."
    )


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"`{name}` must be one of {list(choices)}; received {value!r}."
        )


def check_positive(name, value, integer=False):
    ok = isinstance(value, (int, np.integer)) if integer else True
    if not ok or value is None or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ValueError(f"`{name}` must be {kind}; received {value!r}.")


def close_matches(name, candidates):
    """Up to three names from `candidates` that look like `name`."""
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)

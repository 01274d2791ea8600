"""Counts bad training inputs inside compiled steps, to raise them from the host."""

import keras
import numpy as np
from keras import ops

from keras_gss.utils.checks import raise_label_error

_NO_LABEL = -(2**31)


@keras.saving.register_keras_serializable(package="keras_gss")
class InputErrors(keras.layers.Layer):
    """Counters of bad inputs seen by a compiled training step.

    A compiled step cannot raise, so it counts labels outside
    `[0, num_classes) ∪ {ignore_index}`, non-finite image values and
    non-finite embeddings here; `raise_for_errors()`, called from the host
    after each batch, raises a `ValueError` that names them (DESIGN
    contract 7). The counters are transient: never saved with the model.

    Args:
        num_classes: int. Number of known classes.
        ignore_index: int. Label of void pixels. Defaults to `255`.
        negative_index: int or None. Label of pasted negative pixels, also
            accepted. Defaults to `None`.

    Example:

    >>> import numpy as np
    >>> errors = InputErrors(num_classes=3)
    >>> errors.record(np.zeros((1, 2, 2, 3), "float32"), np.array([[0, 7], [1, 255]]))
    >>> errors.raise_for_errors()  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `y` holds class ids outside [0, 3) ∪ {255}: found [7]. ...
    """

    def __init__(self, num_classes, ignore_index=255, negative_index=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.negative_index = negative_index
        # [invalid labels, one invalid label value, non-finite image values, non-finite
        # embeddings]; every replica records the same all-reduced counts.
        self.counts = self.add_weight(shape=(4,), dtype="int32", initializer="zeros",
                                      trainable=False, aggregation="only_first_replica",
                                      name="counts")
        self.built = True

    def record(self, images, labels, replicas=None, nonfinite_features=0):
        """Count this step's bad labels and non-finite image values (in-graph)."""
        labels = ops.cast(labels, "int32")
        known = ops.logical_and(labels >= 0, labels < self.num_classes)
        invalid = ops.logical_and(ops.logical_not(known), labels != self.ignore_index)
        if self.negative_index is not None:  # pasted negatives (DenseHybrid)
            invalid = ops.logical_and(invalid, labels != self.negative_index)
        count = ops.sum(ops.cast(invalid, "int32"))
        value = ops.max(ops.where(invalid, labels, _NO_LABEL))
        nonfinite = ops.zeros((), "int32")
        if "float" in str(images.dtype):  # integer images are always finite
            nonfinite = ops.sum(ops.cast(ops.logical_not(ops.isfinite(images)), "int32"))
        if replicas is not None:  # a bad example on any replica counts
            count = replicas.all_reduce("sum", count)
            value = ops.max(replicas.all_gather(value[None], axis=0))  # no MAX all-reduce
            nonfinite = replicas.all_reduce("sum", nonfinite)
        self.add_counts(count, value, nonfinite, nonfinite_features)

    def add_counts(self, invalid_labels=0, invalid_label_value=_NO_LABEL, nonfinite_images=0,
            nonfinite_features=0):
        """Add counts (in-graph, no raise)."""
        counts = self.counts.value
        value = ops.where(invalid_labels > 0, invalid_label_value, counts[1])
        self.counts.assign(ops.stack([
            counts[0] + ops.cast(invalid_labels, "int32"), ops.cast(value, "int32"),
            counts[2] + ops.cast(nonfinite_images, "int32"),
            counts[3] + ops.cast(nonfinite_features, "int32"),
        ]))

    def raise_for_errors(self):
        """Raise a `ValueError` for bad inputs counted since the last check."""
        counts = np.asarray(ops.convert_to_numpy(self.counts.value))
        if not np.any(counts[[0, 2, 3]]):
            return
        self.counts.assign(ops.zeros_like(self.counts.value))
        if counts[2]:
            raise ValueError(
                f"`images` held {int(counts[2])} non-finite values (NaN or Inf) in the last "
                "training batch. Clean or drop those images (np.isfinite) before training; "
                "the weights of that step may be NaN, so restore a checkpoint."
            )
        if counts[0]:
            raise_label_error("y", [int(counts[1])], self.num_classes, self.ignore_index)
        raise ValueError(
            f"`features`: {int(counts[3])} pixel embeddings were non-finite (NaN or Inf) "
            "during training, so they were not written to the memory. The network "
            "diverged: lower the learning rate, check the images for NaN, and use loss "
            "scaling under mixed_float16."
        )

    def save_own_variables(self, store):
        pass  # transient: a saved model carries no stale error counts

    def load_own_variables(self, store):
        pass

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                       "negative_index": self.negative_index})
        return config

"""Per-class × per-component FIFO memory of pixel embeddings (GMMSeg §3.3)."""

import keras
from keras import ops

from keras_gss.ops.gaussian_mixture import moments_from_sums
from keras_gss.utils.checks import check_choice
from keras_gss.utils.checks import check_finite
from keras_gss.utils.checks import check_labels
from keras_gss.utils.checks import check_positive
from keras_gss.utils.distribution import gather_rows
from keras_gss.utils.distribution import scatter_rows
from keras_gss.utils.numerics import l2_normalize


def _random_unit_vectors(shape, dtype=None):
    """Initializer: independent random directions on the unit sphere."""
    return ops.cast(l2_normalize(keras.random.normal(shape, dtype="float32")), dtype)


@keras.saving.register_keras_serializable(package="keras_gss")
class FeatureMemory(keras.layers.Layer):
    """One first-in-first-out queue of embeddings per class × component.

    GMMSeg fits its Gaussian mixture by EM over an external memory filled
    from preceding training batches: every (class, component) pair keeps a
    ring buffer of `capacity` embeddings with its own write pointer and a
    count of filled entries. Each `write` takes at most
    `samples_per_component` embeddings per pair, chosen at evenly spaced
    positions in pixel order (deterministic, so replicas that see the same
    gathered batch write the same entries), optionally only from correctly
    classified pixels. The M-step reads only filled entries
    (`component_moments`). `present` (int32 `(C,)`) marks the classes the
    last write's labels held, correct or not: the authors' M-step refits
    only those.

    Labels outside `[0, C) ∪ {ignore_index}` and non-finite embeddings are
    never written: eager calls raise at once, and inside a compiled step
    `write` returns the count of non-finite embeddings for the model to
    report (see `OpenSetImageSegmenter`).

    Args:
        num_classes: int. Number of classes `C`.
        num_components: int. Components per class `M`.
        embedding_dim: int. Embedding dimension `D`.
        capacity: int. Entries per queue. Defaults to `32000` (the paper).
        samples_per_component: int. Most entries written per queue and
            step (at most `capacity`). Defaults to `20` (the authors' code).
        correct_only: bool. Write only pixels whose prediction equals the
            label, as the authors' code does. Defaults to `True`.
        starved_fallback: bool. With `correct_only`, a class none of whose
            pixels in the step is classified correctly writes its labelled
            pixels instead, so no class is locked out of the memory (and
            its mixture never fitted). Defaults to `False` (the authors' code).
        ignore_index: int. Label of void pixels. Defaults to `255`.
        storage_dtype: `"float32"`, `"float16"` or `"bfloat16"`. Dtype of
            the stored embeddings; the M-step moments are always computed in
            float32. Unit-norm embeddings lose little in float16, which
            halves the memory. Defaults to `"float32"`.
        fill: `"empty"` or `"random"`. `"random"` starts every queue full
            of random unit vectors, as the authors' code does: until real
            entries replace them, a class's Gaussians stay broad rather than
            keep their initial σ = 1, which can lock a class out of the
            posterior from the first M-step. Defaults to `"random"`.

    The storage (`C·M·capacity·D` values: 0.78 GB for Cityscapes and 9.8 GB
    for ADE20K at the paper's float32 × 32 000) is allocated on first use:
    the first `write`, `build()`, or loading weights that hold a memory.
    A model used only for inference never allocates it.

    Example:

    >>> import numpy as np
    >>> memory = FeatureMemory(num_classes=2, num_components=2,
    ...                        embedding_dim=3, capacity=4,
    ...                        correct_only=False, fill="empty")
    >>> features = np.eye(3, dtype="float32")[[0, 1, 2, 0]]
    >>> skipped = memory.write(features, labels=np.array([0, 0, 1, 255]),
    ...                        components=np.array([0, 1, 1, 0]))
    >>> np.asarray(memory.count).tolist()
    [[1, 1], [0, 1]]
    """

    def __init__(
        self,
        num_classes,
        num_components,
        embedding_dim,
        capacity=32000,
        samples_per_component=20,
        correct_only=True,
        starved_fallback=False,
        ignore_index=255,
        storage_dtype="float32",
        fill="random",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive("num_classes", num_classes, integer=True)
        check_positive("num_components", num_components, integer=True)
        check_positive("embedding_dim", embedding_dim, integer=True)
        check_positive("capacity", capacity, integer=True)
        check_positive(
            "samples_per_component", samples_per_component, integer=True
        )
        self.num_classes = num_classes
        self.num_components = num_components
        self.embedding_dim = embedding_dim
        self.capacity = capacity
        self.samples_per_component = samples_per_component
        self.correct_only = correct_only
        self.starved_fallback = starved_fallback
        self.ignore_index = ignore_index
        check_choice("storage_dtype", storage_dtype, ("float32", "float16", "bfloat16"))
        self.storage_dtype = storage_dtype
        check_choice("fill", fill, ("empty", "random"))
        self.fill = fill
        self.allocated = False
        # Nothing to infer from inputs, so Keras need not build it; `build` allocates.
        self.built = True

    def build(self, input_shape=None):
        """Allocate the queues and their counters (once; later calls do nothing)."""
        if self.allocated:
            return
        pairs = (self.num_classes, self.num_components)
        # Replicas write the same all-gathered batch, so the first one's write stands for all.
        state = {"initializer": "zeros", "trainable": False,
                 "aggregation": "only_first_replica"}
        self.queue = self.add_weight(
            shape=pairs + (self.capacity, self.embedding_dim), autocast=False,
            dtype=self.storage_dtype, name="queue", **state,
        )
        # Running sums of the filled entries and their squares: the M-step
        # reads these (C, M, D) moments instead of the whole queue.
        self.total = self.add_weight(
            shape=pairs + (self.embedding_dim,), autocast=False, dtype="float32",
            name="total", **state,
        )
        self.total_square = self.add_weight(
            shape=pairs + (self.embedding_dim,), autocast=False, dtype="float32",
            name="total_square", **state,
        )
        self.pointer = self.add_weight(shape=pairs, dtype="int32", name="pointer", **state)
        self.count = self.add_weight(shape=pairs, dtype="int32", name="count", **state)
        self.step = self.add_weight(shape=(), dtype="int32", name="step", **state)
        # Classes labelled in the last write: the authors' M-step refits only these.
        self.present = self.add_weight(shape=(self.num_classes,), dtype="int32",
                                       name="present", **state)
        self.allocated = True
        if self.fill == "random":
            self.reset()

    def reset(self):
        """Empty every queue (or refill it at random) and zero the step counter."""
        self.build()
        for variable in self.weights:
            variable.assign(ops.zeros_like(variable.value))
        if self.fill == "random":
            self.queue.assign(_random_unit_vectors(self.queue.shape, self.storage_dtype))
            self.count.assign(ops.full(self.count.shape, self.capacity, "int32"))
            self.resync()

    def load_own_variables(self, store):
        if not len(store.keys()):  # saved before training, or a preset without the memory
            if self.allocated:
                self.reset()
            return
        self.build()
        super().load_own_variables(store)

    def write(self, features, labels, components, predictions=None):
        """Append embeddings to the queues of their (class, component).

        Args:
            features: float tensor `(..., D)`. Embeddings (no gradient is
                taken through them).
            labels: int tensor `(...)`. Class of each embedding; ignore and
                out-of-range labels are not written.
            components: int tensor `(...)`. Component of each embedding in
                its class (the Sinkhorn assignment).
            predictions: int tensor `(...)`. Predicted class; required when
                `correct_only=True`.

        Returns:
            int32 scalar: the embeddings of known classes left out because
            they were non-finite (NaN or Inf).
        """
        if self.correct_only and predictions is None:
            raise ValueError(
                "`predictions` is required because this memory was built "
                "with correct_only=True (it stores only correctly classified "
                "pixels); pass the argmax of the logits or build it with "
                "correct_only=False."
            )
        self.build()
        check_labels("labels", labels, self.num_classes, self.ignore_index)
        check_finite(
            "features",
            features,
            "Non-finite embeddings would poison the fitted GMM; check the "
            "images and the learning rate.",
        )
        dim = self.embedding_dim
        if features.shape[-1] != dim:
            raise ValueError(
                f"`features` must have {dim} channels in the last axis; "
                f"received shape {tuple(features.shape)}."
            )
        features = ops.reshape(
            ops.stop_gradient(ops.cast(features, "float32")), (-1, dim)
        )
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        components = ops.reshape(ops.cast(components, "int32"), (-1,))
        num_pairs = self.num_classes * self.num_components
        # Never more than fit in one ring, so a step's slots stay distinct.
        samples = min(self.samples_per_component, self.capacity)

        known = ops.logical_and(labels >= 0, labels < self.num_classes)
        finite = ops.all(ops.isfinite(features), axis=-1)
        keep = ops.logical_and(known, finite)
        keep = ops.logical_and(
            keep,
            ops.logical_and(components >= 0, components < self.num_components),
        )
        if self.correct_only:
            predictions = ops.reshape(ops.cast(predictions, "int32"), (-1,))
            correct = ops.equal(predictions, labels)
            if self.starved_fallback:
                # Unfitted classes are outscored everywhere, so they would never become correct.
                hits = ops.segment_sum(
                    ops.cast(ops.logical_and(keep, correct), "int32"),
                    ops.where(keep, labels, self.num_classes),
                    num_segments=self.num_classes + 1,
                )
                starved = ops.take(hits, ops.where(keep, labels, self.num_classes)) == 0
                correct = ops.logical_or(correct, starved)
            keep = ops.logical_and(keep, correct)
        features = ops.where(finite[:, None], features, 0.0)

        # Group = class * M + component; rejected pixels go to a spare group.
        group = ops.where(keep, labels * self.num_components + components,
                          num_pairs)
        order = ops.argsort(group)  # stable, so groups keep pixel order
        members = ops.segment_sum(
            ops.ones_like(group), group, num_segments=num_pairs + 1
        )[:num_pairs]
        starts = ops.cumsum(members) - members
        slot = ops.arange(samples, dtype="int32")
        # Evenly spaced members, as torch.linspace(0, n - 1, S) in the code.
        spread = (slot[None, :] * (members[:, None] - 1)) // max(samples - 1, 1)
        rank = ops.where(members[:, None] > samples, spread, slot[None, :])
        taken = ops.minimum(members, samples)
        filled = slot[None, :] < taken[:, None]
        position = ops.clip(starts[:, None] + rank, 0, ops.shape(group)[0] - 1)
        source = ops.take(order, ops.reshape(position, (-1,)))
        rows = ops.cast(ops.take(features, source, axis=0), self.storage_dtype)

        pointer = ops.reshape(self.pointer.value, (-1,))
        destination = (pointer[:, None] + slot[None, :]) % self.capacity
        flat_index = ops.reshape(
            ops.arange(num_pairs, dtype="int32")[:, None] * self.capacity
            + destination,
            (-1,),
        )
        pair = flat_index // self.capacity
        slots = ops.stack([pair // self.num_components, pair % self.num_components,
                           flat_index % self.capacity], axis=-1)
        old = gather_rows(self.queue, slots, flat_index)
        # Unused slots write back what they hold; S <= capacity keeps them apart.
        rows = ops.where(ops.reshape(filled, (-1, 1)), rows, old)
        # Empty slots hold zeros, so new minus overwritten keeps the sums exact.
        new_f32, old_f32 = ops.cast(rows, "float32"), ops.cast(old, "float32")
        per_pair = (self.num_classes, self.num_components, samples, dim)
        self.total.assign(self.total.value + ops.sum(
            ops.reshape(new_f32 - old_f32, per_pair), axis=2))
        self.total_square.assign(self.total_square.value + ops.sum(
            ops.reshape(ops.square(new_f32) - ops.square(old_f32), per_pair), axis=2))
        scatter_rows(self.queue, slots, flat_index, rows)  # in place: no copy of the queue
        shape = (self.num_classes, self.num_components)
        self.pointer.assign(
            ops.reshape((pointer + taken) % self.capacity, shape)
        )
        self.count.assign(
            ops.minimum(self.count.value + ops.reshape(taken, shape),
                        self.capacity)
        )
        self.step.assign(self.step.value + 1)
        self.present.assign(ops.cast(ops.segment_sum(
            ops.cast(known, "int32"), ops.where(known, labels, self.num_classes),
            num_segments=self.num_classes + 1)[:self.num_classes] > 0, "int32"))
        return ops.sum(ops.cast(ops.logical_and(known, ops.logical_not(finite)), "int32"))

    def component_moments(self):
        """Count, mean and mean square of the filled entries of every queue.

        Read from the running sums, so the cost does not grow with the
        capacity.

        Returns:
            `(count (C, M), mean (C, M, D), mean_square (C, M, D))`, float32;
            mean and mean square are zero where a queue is empty.
        """
        self.build()
        return moments_from_sums(self.count.value, self.total.value, self.total_square.value)

    def resync(self):
        """Recompute the running sums exactly from the queue.

        Float32 sums drift by rounding over very many writes; `SinkhornEM`
        calls this at the start of training and at each epoch end.
        """
        self.build()
        filled = ops.cast(
            ops.arange(self.capacity)[None, None, :] < self.count.value[:, :, None],
            "float32",
        )
        queue = ops.cast(self.queue.value, "float32")
        self.total.assign(ops.einsum("cmq,cmqd->cmd", filled, queue))
        self.total_square.assign(ops.einsum("cmq,cmqd->cmd", filled, ops.square(queue)))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "num_components": self.num_components,
                "embedding_dim": self.embedding_dim,
                "capacity": self.capacity,
                "samples_per_component": self.samples_per_component,
                "correct_only": self.correct_only,
                "starved_fallback": self.starved_fallback,
                "ignore_index": self.ignore_index,
                "storage_dtype": self.storage_dtype,
                "fill": self.fill,
            }
        )
        return config

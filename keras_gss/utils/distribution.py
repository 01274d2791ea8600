"""Distribution helpers: replicas, all-gathers and in-place variable updates.

The only module outside `tf.data` pipelines that touches TensorFlow: every
per-backend and per-strategy path of the training step lives here, so
layers and models stay in `keras.ops`.
"""

import keras
from keras import ops


def _tensorflow():
    return keras.backend.backend() == "tensorflow"


def replica_context():
    """The `tf.distribute` replica context when training on several replicas, else None."""
    if not _tensorflow():
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def is_multi_worker(strategy):
    """Whether `strategy` spans several workers (hosts)."""
    if strategy is None or not _tensorflow():
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def local_batch(strategy, batch):
    """This worker's first replica's part of a distributed batch."""
    import tensorflow as tf

    return tf.nest.map_structure(
        lambda v: strategy.experimental_local_results(v)[0]
        if isinstance(v, tf.distribute.DistributedValues) else v,
        batch,
    )


def all_gather(replicas, value):
    """`value` of every replica stacked along axis 0, without gradient."""
    gathered = replicas.all_gather(ops.stop_gradient(value), axis=0)
    return ops.reshape(gathered, (-1,) + tuple(value.shape[1:]))


def local_rows(replicas, value, local_size):
    """This replica's rows of a value gathered over replicas along axis 0."""
    start = replicas.replica_id_in_sync_group * local_size
    return ops.slice(value, [start], [local_size])


def reduce_sum(replicas):
    """A function summing a value over replicas (None on one replica)."""
    if replicas is None:
        return None
    return lambda value: replicas.all_reduce("sum", value)


def _xla_compiled():
    """Whether TensorFlow is tracing a function with `jit_compile=True`."""
    import tensorflow as tf

    try:  # TensorFlow has no public test for this
        from tensorflow.python.ops import control_flow_util
    except ImportError:
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _device_handle(variable):
    """The resource handle of this device's copy of a TensorFlow variable.

    Under `tf.distribute`, in a replica, that is the replica's own copy;
    `None` in a cross-replica context, where a variable has several.
    """
    try:
        return variable.handle
    except ValueError:
        return None


def gather_rows(variable, indices, flat_index):
    """Rows of a variable `(..., D)` at `indices` `(K, rank-1)` / `flat_index` `(K,)`.

    On TensorFlow outside XLA this gathers from the variable's resource, so
    the whole variable is never read (a dense read of a sparsely written
    variable is a full copy).
    """
    value = variable.value
    if _tensorflow():
        import tensorflow as tf

        handle = _device_handle(value)
        if handle is not None and not _xla_compiled():
            return tf.raw_ops.ResourceGatherNd(resource=handle, indices=indices,
                                               dtype=value.dtype)
    # XLA has no gather from a resource, and a read there is not a copy.
    return ops.take(ops.reshape(value, (-1, value.shape[-1])), flat_index, axis=0)


def scatter_rows(variable, indices, flat_index, rows):
    """Write `rows` into a variable `(..., D)` in place, on every backend and strategy.

    A functional update would copy the whole variable every step. Under
    `tf.distribute` each replica writes its own copy in place (the rows must
    be the same on all replicas); in a cross-replica context every device's
    copy is written, ungrouped (grouping would read the variable back).
    JAX donates the training state, so XLA updates it in place.
    """
    value = variable.value
    if _tensorflow():
        import tensorflow as tf

        handle = _device_handle(value)
        if handle is not None:
            tf.raw_ops.ResourceScatterNdUpdate(ref=handle, indices=indices, updates=rows)
        else:
            tf.distribute.get_strategy().extended.update(
                value, lambda local, i, u: local.scatter_nd_update(i, u),
                args=(indices, rows), group=False)
        return
    flat = ops.reshape(value, (-1, value.shape[-1]))
    flat = ops.scatter_update(flat, flat_index[:, None], rows)
    variable.assign(ops.reshape(flat, variable.shape))

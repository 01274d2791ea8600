"""Workarounds that rely on private Keras APIs, in one place.

Each names what it relies on, why, and the Keras version it was written
against; `tests/utils/test_keras_compat.py` fails loudly when an upgrade
removes what one relies on.
"""

import keras

from keras_gss.utils.distribution import is_multi_worker
from keras_gss.utils.distribution import local_batch

WRITTEN_FOR = "3.15"  # the Keras version every workaround below was written against


def flatten_layers(layer):
    """Every layer nested in `layer`, itself included.

    Relies on `Layer._flatten_layers` (Keras 3.15), which keras-hub's `Task`
    uses for the same purpose: Keras has no public recursive listing.
    """
    return list(layer._flatten_layers())


def multi_worker_logs(model, logs):
    """Logs of a train step, shaped so that Keras can reduce them over workers.

    Keras 3.15 concatenates logs over workers along axis 0 (in
    `TensorFlowTrainer`), which scalars lack; one-element vectors have it.
    """
    if not is_multi_worker(getattr(model, "_distribute_strategy", None)):
        return logs
    from keras import ops

    return {name: ops.reshape(value, (1,)) for name, value in logs.items()}


def symbolic_build_from_local_batch(model, iterator, data_batch, build):
    """Build a model under a multi-worker strategy from one local replica's batch.

    Keras 3.15's `TensorFlowTrainer._maybe_symbolic_build` reduces a batch over
    replicas eagerly, which multi-worker strategies cannot do; a local
    replica's batch builds the same variables. `build` is the overridden
    `_maybe_symbolic_build` of the model's parent class. Relies on
    `Trainer._symbolic_build(data_batch=...)` and the epoch iterator's
    `(step, index, batches)` items.
    """
    strategy = getattr(model, "_distribute_strategy", None)
    if iterator is None or not is_multi_worker(strategy):
        return build(iterator=iterator, data_batch=data_batch)
    for _, _, batches in iterator:
        batch = local_batch(strategy, next(batches))
        break
    with strategy.scope():
        model._symbolic_build(data_batch=batch)


def private_apis():
    """`(owner, attribute)` pairs this module relies on, for the compat test."""
    from keras.src.trainers.trainer import Trainer

    apis = [(keras.layers.Layer, "_flatten_layers"), (Trainer, "_symbolic_build")]
    if keras.backend.backend() == "tensorflow":  # tf.distribute is TensorFlow's
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

        apis.append((TensorFlowTrainer, "_maybe_symbolic_build"))
    return apis

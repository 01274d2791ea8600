"""The private Keras APIs our workarounds rely on still exist (a Keras upgrade fails here first)."""

import inspect

import keras

from keras_gss.utils import keras_compat


def test_every_private_api_we_rely_on_exists():
    missing = [f"{owner.__name__}.{name}" for owner, name in keras_compat.private_apis()
               if not callable(getattr(owner, name, None))]
    assert not missing, (
        f"Keras {keras.__version__} removed {missing}, which keras_gss.utils.keras_compat "
        f"relies on (written for Keras {keras_compat.WRITTEN_FOR}); port the workaround.")


def test_signatures_are_those_the_workarounds_call():
    from keras.src.trainers.trainer import Trainer

    assert "data_batch" in inspect.signature(Trainer._symbolic_build).parameters
    for owner, name in keras_compat.private_apis():
        if name == "_maybe_symbolic_build":
            assert {"iterator", "data_batch"} <= set(
                inspect.signature(getattr(owner, name)).parameters)


def test_flatten_layers_lists_nested_layers():
    inner = keras.Sequential([keras.layers.Dense(2), keras.layers.BatchNormalization()])
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(1)])
    names = [type(layer).__name__ for layer in keras_compat.flatten_layers(outer)]
    assert names.count("Dense") == 2 and "BatchNormalization" in names and names[0] == "Sequential"

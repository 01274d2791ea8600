"""The synthetic-negative flow: exact inverse, log-determinant, sampling, training."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_gss.models import NormalizingFlow
from keras_gss.models import pretrain_flow


def _random_flow(rng, **kwargs):
    """A flow whose every weight is random (zero-initialised couplings are the identity)."""
    flow = NormalizingFlow(**kwargs)
    flow.build()
    for variable in flow.weights:
        if variable.trainable:
            value = ops.convert_to_numpy(variable)
            variable.assign(value + rng.normal(scale=0.1, size=value.shape).astype("float32"))
    return flow


@pytest.mark.parametrize("size", [(8, 8), (12, 16)])
def test_flow_is_exactly_invertible(rng, size):
    flow = _random_flow(rng, levels=2, steps=2, hidden=8)
    x = rng.normal(size=(3, *size, 3)).astype("float32")
    latents = flow.encode(x)
    assert sum(int(np.prod(z.shape[1:])) for z in latents) == int(np.prod(x.shape[1:]))
    assert float(np.abs(ops.convert_to_numpy(flow.decode(latents)) - x).max()) < 1e-4


def test_log_determinant_equals_a_numerical_jacobian(rng):
    flow = _random_flow(rng, levels=2, steps=2, hidden=8)
    x = rng.normal(size=(1, 4, 4, 3)).astype("float64")
    dims = x.size

    def flat_latent(values):
        latents = flow.encode(values.astype("float32"))
        return np.concatenate([ops.convert_to_numpy(z).reshape(len(values), -1)
                               for z in latents], axis=1).astype("float64")

    eps = 1e-2  # central differences, exact to O(eps²) on this smooth map
    steps = np.eye(dims).reshape(dims, 4, 4, 3) * eps
    jacobian = ((flat_latent(x + steps) - flat_latent(x - steps)) / (2 * eps)).T
    _, log_det_numeric = np.linalg.slogdet(jacobian)
    _, log_det = flow.forward(ops.convert_to_tensor(x.astype("float32")))
    np.testing.assert_allclose(float(ops.convert_to_numpy(log_det)[0]), log_det_numeric,
                               atol=2e-2)
    # And the density is the change of variables of a standard normal.
    latent = flat_latent(x)[0]
    expected = -0.5 * (latent @ latent + dims * np.log(2 * np.pi)) + log_det_numeric
    np.testing.assert_allclose(float(ops.convert_to_numpy(
        flow.log_likelihood(x.astype("float32")))[0]), expected, atol=2e-2)


def test_samples_at_two_sizes_and_bad_sizes_are_refused(rng):
    flow = _random_flow(rng, levels=2, steps=1, hidden=8)
    for size in ((16, 16), (8, 24)):
        sample = ops.convert_to_numpy(flow.sample(2, *size))
        assert sample.shape == (2, *size, 3) and np.all(np.isfinite(sample))
    with pytest.raises(ValueError, match="divisible by 2\\^levels = 4"):
        flow.sample(1, 10, 8)


def test_pretraining_lowers_the_negative_log_likelihood(rng):
    images = rng.normal(size=(16, 16, 16, 3)).astype("float32") * 0.3
    images += np.linspace(-1, 1, 16)[None, :, None, None].astype("float32")
    flow = NormalizingFlow(levels=2, steps=2, hidden=8)
    before = float(np.mean(ops.convert_to_numpy(flow(images[:, :8, :8]))))
    history = pretrain_flow(flow, images, patch_size=8, steps=60, batch_size=8,
                            learning_rate=3e-3)
    after = float(np.mean(ops.convert_to_numpy(flow(images[:, :8, :8]))))
    assert np.isfinite(history.history["loss"][0]) and after < before - 0.2


def test_flow_serializes():
    flow = NormalizingFlow(levels=2, steps=1, hidden=8, seed=3)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(flow))
    assert type(clone) is NormalizingFlow and clone.get_config()["hidden"] == 8

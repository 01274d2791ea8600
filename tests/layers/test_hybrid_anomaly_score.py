"""HybridAnomalyScore and DatasetPosteriorHead against float64 numpy formulas."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_gss.layers import DatasetPosteriorHead
from keras_gss.layers import HybridAnomalyScore


def _reference(logits, g):
    """Eq. 9 in float64: ln(1 − σ(g)) − ln Σ exp s, both parts computed stably."""
    logits, g = logits.astype(np.float64), g.astype(np.float64)
    discriminative = -np.logaddexp(0.0, g)  # ln(1 − σ(g)) = −ln(1 + e^g)
    top = logits.max(-1)
    generative = -(top + np.log(np.exp(logits - top[..., None]).sum(-1)))
    return discriminative + generative, discriminative, generative


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_score_matches_float64_formula_including_extreme_logits(rng, scale):
    logits = (rng.normal(size=(2, 5, 6, 4)) * scale).astype("float32")
    g = (rng.normal(size=(2, 5, 6, 1)) * scale).astype("float32")
    g[0, 0, 0, 0], g[0, 0, 1, 0] = 1e4, -1e4  # σ(g) at 1 and at 0 exactly
    out = HybridAnomalyScore()(g, logits=logits)
    hybrid, discriminative, generative = _reference(logits, g[..., 0])
    for name, expected in (("hybrid", hybrid), ("discriminative", discriminative),
                           ("generative", generative)):
        value = ops.convert_to_numpy(out[name])
        assert value.dtype == np.float32 and np.all(np.isfinite(value)), name
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-5 * max(scale, 1.0),
                                   err_msg=name)


def test_any_log_likelihood_fuses_and_a_logit_shift_moves_only_the_generative_part(rng):
    logits = rng.normal(size=(3, 4, 5)).astype("float32")
    g = rng.normal(size=(3, 4)).astype("float32")
    layer = HybridAnomalyScore()
    from_logits = layer(g, logits=logits)
    from_likelihood = layer(g[..., None], log_likelihood=ops.logsumexp(logits, axis=-1))
    for name in from_logits:
        np.testing.assert_allclose(from_likelihood[name], from_logits[name], atol=1e-6)
    shifted = layer(g, logits=logits + 2.5)  # softmax unchanged, ln p̂ moves by 2.5 (Eq. 7)
    np.testing.assert_allclose(shifted["generative"], from_logits["generative"] - 2.5,
                               atol=1e-5)
    np.testing.assert_allclose(shifted["discriminative"], from_logits["discriminative"])
    with pytest.raises(ValueError, match="exactly one of `logits`"):
        layer(g, logits=logits, log_likelihood=g)


def test_dataset_posterior_head_is_bn_relu_conv1x1(rng):
    head = DatasetPosteriorHead()
    features = rng.normal(size=(2, 3, 4, 6)).astype("float32")
    head(features)
    for variable in head.weights:  # non-trivial BN statistics and conv
        variable.assign(rng.uniform(0.5, 1.5, size=variable.shape).astype("float32"))
    gamma, beta, mean, variance = (ops.convert_to_numpy(v) for v in head.norm.weights)
    kernel, bias = (ops.convert_to_numpy(v) for v in head.conv.weights)
    normed = (features - mean) / np.sqrt(variance + head.norm.epsilon) * gamma + beta
    expected = np.maximum(normed, 0.0) @ kernel[0, 0] + bias
    np.testing.assert_allclose(head(features, training=False), expected, rtol=1e-5, atol=1e-5)
    assert head.compute_output_shape((None, 3, 4, 6)) == (None, 3, 4, 1)
    config = keras.saving.serialize_keras_object(head)
    assert type(keras.saving.deserialize_keras_object(config)) is DatasetPosteriorHead

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import stats
from scipy.special import logsumexp

from keras_gss.layers import GaussianMixtureHead
from keras_gss.ops import diagonal_gaussian_log_likelihood


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _naive_log_likelihood(x, means, scales):
    """float64, one component at a time: sum of univariate log-pdfs."""
    x = x.astype(np.float64)
    out = np.empty(x.shape[:-1] + means.shape[:2])
    for c in range(means.shape[0]):
        for m in range(means.shape[1]):
            out[..., c, m] = stats.norm.logpdf(
                x, loc=means[c, m].astype(np.float64),
                scale=scales[c, m].astype(np.float64),
            ).sum(axis=-1)
    return out


def test_log_likelihood_matches_float64_reference(rng):
    x = _unit(rng.normal(size=(7, 5, 16))).astype("float32")
    means = _unit(rng.normal(size=(4, 3, 16))).astype("float32")
    scales = rng.uniform(0.1, 1.0, size=(4, 3, 16)).astype("float32")
    got = ops.convert_to_numpy(diagonal_gaussian_log_likelihood(x, means, scales))
    want = _naive_log_likelihood(x, means, scales)
    assert got.dtype == np.float32 and got.shape == (7, 5, 4, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("reduction", ["max", "logsumexp"])
def test_head_outputs_match_reference(rng, reduction):
    head = GaussianMixtureHead(
        num_classes=4, num_components=3, embedding_dim=8,
        component_reduction=reduction, class_norm=False,
    )
    features = rng.normal(size=(2, 5, 6, 12)).astype("float32")
    head(features)
    head.scales.assign(rng.uniform(0.1, 1.0, size=(4, 3, 8)).astype("float32"))
    out = {k: ops.convert_to_numpy(v) for k, v in head(features).items()}
    embeddings = out["embeddings"]
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=-1), 1.0, atol=1e-5)
    want = _naive_log_likelihood(
        embeddings, ops.convert_to_numpy(head.means), ops.convert_to_numpy(head.scales)
    )
    np.testing.assert_allclose(out["component_log_likelihood"], want, rtol=1e-5, atol=1e-4)
    if reduction == "max":
        class_ll = want.max(axis=-1)
    else:
        class_ll = logsumexp(want, axis=-1) - math.log(3)
    np.testing.assert_allclose(out["class_log_likelihood"], class_ll, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["logits"], class_ll, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out["anomaly_score"], -class_ll.max(axis=-1), rtol=1e-5, atol=1e-4)
    if reduction == "max":  # the definition: -max over c and m
        np.testing.assert_allclose(
            out["anomaly_score"], -want.reshape(2, 5, 6, -1).max(-1), rtol=1e-5, atol=1e-4
        )
    for value in out.values():
        assert value.dtype == np.float32


def test_class_norm_normalises_logits_over_classes(rng):
    head = GaussianMixtureHead(num_classes=5, num_components=2, embedding_dim=8)
    out = head(rng.normal(size=(1, 3, 3, 4)).astype("float32"))
    logits = ops.convert_to_numpy(out["logits"])
    np.testing.assert_allclose(logits.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(logits.std(-1), 1.0, atol=1e-2)


def test_gmm_state_is_non_trainable_and_unit_norm(rng):
    head = GaussianMixtureHead(num_classes=3, num_components=2, embedding_dim=8)
    head(rng.normal(size=(1, 2, 2, 4)).astype("float32"))
    trainable = {id(v) for v in head.trainable_variables}
    assert id(head.means) not in trainable and id(head.scales) not in trainable
    assert head.means.shape == (3, 2, 8) and head.scales.shape == (3, 2, 8)
    np.testing.assert_allclose(
        np.linalg.norm(ops.convert_to_numpy(head.means), axis=-1), 1.0, atol=1e-6
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(head.scales), 1.0)


def test_serialization_round_trip(rng):
    head = GaussianMixtureHead(
        num_classes=3, num_components=2, embedding_dim=8,
        component_reduction="logsumexp", class_norm=False, variance_floor=0.05,
    )
    clone = GaussianMixtureHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(head)
    )
    assert isinstance(restored, GaussianMixtureHead)
    assert restored.variance_floor == 0.05


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_head_math_float32(rng, policy):
    keras.config.set_dtype_policy(policy)
    head = GaussianMixtureHead(num_classes=3, num_components=2, embedding_dim=8)
    out = head(rng.normal(size=(2, 4, 4, 6)).astype("float32") * 30.0)
    assert head.projection.compute_dtype in ("float16", "bfloat16")
    assert head.means.dtype == "float32" and head.scales.dtype == "float32"
    for key, value in out.items():
        assert ops.convert_to_numpy(value).dtype == np.float32, key
        assert np.all(np.isfinite(ops.convert_to_numpy(value))), key


def test_bad_inputs_raise_clear_errors(rng):
    head = GaussianMixtureHead(num_classes=3, num_components=2, embedding_dim=8)
    head(rng.normal(size=(1, 2, 2, 4)).astype("float32"))
    with pytest.raises(ValueError, match="`features` must have 4 channels"):
        head(rng.normal(size=(1, 2, 2, 5)).astype("float32"))
    with pytest.raises(ValueError, match="`features` must have rank 4"):
        head(rng.normal(size=(2, 4)).astype("float32"))
    bad = rng.normal(size=(1, 2, 2, 4)).astype("float32")
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="`features` holds 1 non-finite"):
        head(bad)
    with pytest.raises(ValueError, match="`component_reduction` must be one of"):
        GaussianMixtureHead(num_classes=3, component_reduction="mean")
    with pytest.raises(ValueError, match="`num_classes` must be a positive integer"):
        GaussianMixtureHead(num_classes=0)

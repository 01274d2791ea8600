import numpy as np
import pytest
from keras import ops
from scipy.special import logsumexp

from keras_gss.ops import sinkhorn_knopp


def _reference(scores, epsilon, iterations):
    """float64 numpy Sinkhorn-Knopp on one class, same iterations."""
    s = scores.astype(np.float64)
    log_q = s / np.abs(s).max() / epsilon
    n, m = s.shape
    for _ in range(iterations):
        log_q = log_q - logsumexp(log_q, axis=0, keepdims=True) + np.log(n / m)
        log_q = log_q - logsumexp(log_q, axis=1, keepdims=True)
    return np.exp(log_q)


@pytest.mark.parametrize("iterations", [1, 3, 10])
def test_matches_float64_reference(rng, iterations):
    scores = rng.normal(-50.0, 10.0, size=(40, 5)).astype("float32")
    plan, hard = sinkhorn_knopp(scores, epsilon=0.05, iterations=iterations)
    plan, hard = ops.convert_to_numpy(plan), ops.convert_to_numpy(hard)
    want = _reference(scores, 0.05, iterations)
    np.testing.assert_allclose(plan, want, atol=1e-5)
    np.testing.assert_array_equal(hard, want.argmax(axis=1))
    np.testing.assert_allclose(plan.sum(axis=1), 1.0, atol=1e-5)


def test_equipartition_with_50_iterations(rng):
    scores = rng.normal(size=(300, 4)).astype("float32")
    scores[:, 0] += 3.0  # a strongly preferred component
    plan, _ = sinkhorn_knopp(scores, iterations=50)
    share = ops.convert_to_numpy(plan).mean(axis=0)
    np.testing.assert_allclose(share, 0.25, atol=1e-3)
    # The default 3 iterations only approach equipartition: closer than the
    # unconstrained posterior (softmax over components), not yet at 1e-3.
    short, _ = sinkhorn_knopp(scores, iterations=3)
    short_gap = np.abs(ops.convert_to_numpy(short).mean(axis=0) - 0.25).max()
    logits = scores / np.abs(scores).max() / 0.05
    posterior = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
    free_gap = np.abs(posterior.mean(axis=0) - 0.25).max()
    assert 1e-3 < short_gap < free_gap


@pytest.mark.parametrize("epsilon", [0.05, 1e-2, 1e-3])
def test_log_domain_for_sharp_plans(rng, epsilon):
    """Scores are normalised to [-1, 1] first, so it is `1 / epsilon` that sets the exponents:
    at 1e-3 they reach 1000, which `exp` overflows in float32 (and float64) outside the log
    domain. The plan must stay finite and equal the float64 log-domain reference."""
    scores = rng.uniform(-1, 1, size=(64, 6)).astype("float32")
    plan, hard = sinkhorn_knopp(scores, epsilon=epsilon, iterations=3)
    plan = ops.convert_to_numpy(plan)
    assert np.all(np.isfinite(plan))
    np.testing.assert_allclose(plan.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(plan, _reference(scores, epsilon, 3), atol=1e-4)
    np.testing.assert_array_equal(ops.convert_to_numpy(hard),
                                  _reference(scores, epsilon, 3).argmax(axis=1))


def test_segments_solve_each_class_separately(rng):
    scores = rng.normal(-20.0, 5.0, size=(90, 3)).astype("float32")
    ids = rng.integers(-1, 4, size=90)  # -1 takes part in no problem
    ids[ids == 3] = 255
    plan, hard = sinkhorn_knopp(scores, iterations=5, segment_ids=ids, num_segments=3)
    plan, hard = ops.convert_to_numpy(plan), ops.convert_to_numpy(hard)
    for c in range(3):
        rows = ids == c
        want = _reference(scores[rows], 0.05, 5)
        np.testing.assert_allclose(plan[rows], want, atol=1e-5)
        np.testing.assert_array_equal(hard[rows], want.argmax(axis=1))


def test_bad_arguments():
    scores = np.zeros((4, 2), "float32")
    with pytest.raises(ValueError, match="`iterations` must be a positive integer"):
        sinkhorn_knopp(scores, iterations=0)
    with pytest.raises(ValueError, match="`epsilon` must be a positive number"):
        sinkhorn_knopp(scores, epsilon=0.0)
    with pytest.raises(ValueError, match="`scores` must have shape"):
        sinkhorn_knopp(np.zeros((2, 4, 2), "float32"))

"""L-GMM's generative terms (Eqs. 5-6) and their mixture maths against float64 numpy and scipy."""

import numpy as np
import pytest
from keras import ops
from scipy.special import logsumexp
from scipy.stats import wasserstein_distance

from keras_gss.losses import latent_gmm_terms
from keras_gss.ops.gaussian_mixture import diagonal_gaussian_log_likelihood
from keras_gss.ops.gaussian_mixture import own_class_log_likelihood
from keras_gss.ops.gaussian_mixture import reduce_components
from keras_gss.ops.gaussian_mixture import wasserstein_to_uniform


def _log_normal(x, means, scales):
    """`log N(x; μ, diag σ²)` in float64, term by term."""
    x, means, scales = (np.asarray(a, np.float64) for a in (x, means, scales))
    return (-0.5 * np.sum(((x - means) / scales) ** 2, -1) - np.sum(np.log(scales), -1)
            - 0.5 * x.shape[-1] * np.log(2 * np.pi))


def test_own_class_log_likelihood_matches_each_class_alone(rng):
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    means = rng.normal(size=(3, 2, 4)).astype("float32")
    scales = rng.uniform(0.3, 2.0, size=(3, 2, 4)).astype("float32")
    expected = _log_normal(x[:, :, None, :], means[:, None], scales[:, None])
    got = ops.convert_to_numpy(own_class_log_likelihood(x, means, scales))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # The diagonal of the all-classes density, without the other classes' components.
    every = ops.convert_to_numpy(diagonal_gaussian_log_likelihood(x, means, scales))
    np.testing.assert_allclose(got, every[np.arange(3), :, np.arange(3)], rtol=1e-5, atol=1e-4)


def test_weighted_mixture_reduction(rng):
    ll = rng.normal(size=(4, 3, 2)).astype("float32") * 5
    weights = rng.dirichlet(np.ones(2), size=3).astype("float32")
    got = ops.convert_to_numpy(reduce_components(ll, "logsumexp", np.log(weights)))
    np.testing.assert_allclose(got, logsumexp(ll.astype(np.float64) + np.log(weights), -1),
                               rtol=1e-5)
    uniform = ops.convert_to_numpy(reduce_components(ll, "logsumexp", np.log(np.full((3, 2), .5))))
    np.testing.assert_allclose(uniform, ops.convert_to_numpy(reduce_components(ll, "logsumexp")),
                               rtol=1e-6)


def test_wasserstein_to_uniform_matches_scipy_and_total_variation(rng):
    for m in (2, 3, 5):
        for _ in range(5):
            p = rng.dirichlet(np.ones(m))
            index = float(ops.convert_to_numpy(wasserstein_to_uniform(p.astype("float32"),
                                                                      "index")))
            np.testing.assert_allclose(
                index, wasserstein_distance(np.arange(m), np.arange(m), p, np.ones(m)),
                rtol=1e-5, atol=1e-6)
            discrete = float(ops.convert_to_numpy(wasserstein_to_uniform(p.astype("float32"))))
            np.testing.assert_allclose(discrete, 0.5 * np.abs(p - 1 / m).sum(), rtol=1e-5)
    # Counts are normalised first (Algorithm 1 passes counts).
    np.testing.assert_allclose(ops.convert_to_numpy(wasserstein_to_uniform(
        np.array([[4.0, 0.0], [1.0, 1.0]], "float32"))), [0.5, 0.0], atol=1e-7)
    with pytest.raises(ValueError, match="ground_metric"):
        wasserstein_to_uniform(np.ones(3, "float32"), "euclid")


def _terms_reference(own_ll, valid, own_w, memory_ll, filled, log_w, metric):
    own = own_ll.astype(np.float64) + own_w
    nll = -logsumexp(own, -1)[valid].mean()
    r = np.exp(own - logsumexp(own, -1, keepdims=True))
    hard = np.eye(own.shape[1])[r.argmax(-1)]
    one = ((r - hard) ** 2).sum(-1)[valid].mean()
    per_class = []
    for c in range(memory_ll.shape[0]):
        if not filled[c].any():
            continue
        joint = memory_ll[c][filled[c]].astype(np.float64) + log_w[c]
        usage = np.exp(joint - logsumexp(joint, -1, keepdims=True)).mean(0)
        m = usage.size
        per_class.append(0.5 * np.abs(usage - 1 / m).sum() if metric == "discrete" else
                         wasserstein_distance(np.arange(m), np.arange(m), usage, np.ones(m)))
    return nll, one, np.mean(per_class)


@pytest.mark.parametrize("metric", ["discrete", "index"])
def test_generative_terms_match_float64_formulas(rng, metric):
    n, c, m, q = 20, 3, 3, 7
    own_ll = (rng.normal(size=(n, m)) * 4).astype("float32")
    valid = rng.random(n) < 0.8
    log_w = np.log(rng.dirichlet(np.ones(m), size=c))
    labels = rng.integers(0, c, n)
    memory_ll = (rng.normal(size=(c, q, m)) * 3).astype("float32")
    filled = rng.random((c, q)) < 0.6
    filled[2] = False  # a class with no memory adds nothing to L_avg
    terms = latent_gmm_terms(own_ll, valid, log_w[labels].astype("float32"), memory_ll,
                             filled, log_w.astype("float32"), metric)
    expected = _terms_reference(own_ll, valid, log_w[labels], memory_ll, filled, log_w, metric)
    for name, value in zip(("nll", "one", "avg"), expected):
        np.testing.assert_allclose(float(ops.convert_to_numpy(terms[name])), value,
                                   rtol=1e-5, atol=1e-6, err_msg=name)


def test_generative_terms_without_examples_or_memory_are_zero():
    terms = latent_gmm_terms(np.zeros((2, 3), "float32"), np.zeros(2, bool),
                             np.zeros((2, 3), "float32"), np.zeros((2, 4, 3), "float32"),
                             np.zeros((2, 4), bool), np.zeros((2, 3), "float32"))
    assert [float(ops.convert_to_numpy(terms[k])) for k in ("nll", "one", "avg")] == [0, 0, 0]

"""DenseHybrid's Eq. 41 terms against a float64 numpy formula."""

import numpy as np
from keras import ops

from keras_gss.losses import DENSEHYBRID_BETAS
from keras_gss.losses import dataset_posterior_loss


def _reference(negative, g, log_likelihood, betas):
    """β2·E_in[−ln σ(g)] + β3·E_out[−ln(1 − σ(g))] + β4·E_out[ln p̂], in float64."""
    _, beta2, beta3, beta4 = betas
    g, log_likelihood = g.astype(np.float64), log_likelihood.astype(np.float64)
    inside = -np.log(1.0 / (1.0 + np.exp(-g[~negative]))).mean()
    outside = 0.0
    if negative.any():
        outside = (beta3 * -np.log(1.0 - 1.0 / (1.0 + np.exp(-g[negative])))
                   + beta4 * log_likelihood[negative]).mean()
    return beta2 * inside + outside


def test_loss_matches_numpy_formula(rng):
    negative = rng.random((2, 6, 7)) < 0.3
    g = rng.normal(size=(2, 6, 7)).astype("float32") * 3
    log_likelihood = rng.normal(size=(2, 6, 7)).astype("float32") * 4
    for betas in (DENSEHYBRID_BETAS, (1.0, 1.5, 1.5, 0.15), (1.0, 0.1, 0.2, 0.01)):
        loss = ops.convert_to_numpy(dataset_posterior_loss(negative, g, log_likelihood, betas))
        np.testing.assert_allclose(loss, _reference(negative, g, log_likelihood, betas),
                                   rtol=1e-5)


def test_no_negative_pixel_leaves_the_in_distribution_term_only(rng):
    negative = np.zeros((2, 5, 5), bool)
    g = rng.normal(size=(2, 5, 5)).astype("float32")
    log_likelihood = np.full((2, 5, 5), 1e4, "float32")  # never read without negatives
    loss = float(ops.convert_to_numpy(dataset_posterior_loss(negative, g, log_likelihood)))
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, _reference(negative, g, log_likelihood, DENSEHYBRID_BETAS),
                               rtol=1e-5)
    zero = dataset_posterior_loss(negative, g, log_likelihood, betas=(1.0, 0.0, 0.3, 0.03))
    assert float(ops.convert_to_numpy(zero)) == 0.0

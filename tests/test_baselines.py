import numpy as np
import pytest
from keras import ops
from scipy.special import logsumexp
from scipy.special import softmax
from scipy.spatial.distance import mahalanobis

from keras_gss import baselines


def test_softmax_scores_match_scipy(rng):
    logits = rng.normal(size=(2, 5, 5, 7)).astype("float32") * 3
    p = softmax(logits.astype(np.float64), axis=-1)
    cases = {
        "max_softmax": 1 - p.max(-1),
        "entropy": -(p * np.log(p)).sum(-1),
        "max_logit": -logits.max(-1),
        "energy": -logsumexp(logits.astype(np.float64), axis=-1),
    }
    for name, want in cases.items():
        got = ops.convert_to_numpy(baselines.SCORES[name](logits))
        assert got.shape == (2, 5, 5) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(
        ops.convert_to_numpy(baselines.energy_score(logits, temperature=2.0)),
        -2.0 * logsumexp(logits.astype(np.float64) / 2.0, axis=-1), rtol=1e-5)


def test_mahalanobis_matches_scipy(rng):
    features = np.concatenate([rng.normal(m, 1.0, (300, 3)) for m in (0.0, 3.0, -3.0)])
    labels = np.repeat([0, 1, 2], 300)
    labels[:10] = 255
    scorer = baselines.MahalanobisScore(reg_covar=0.0).fit(features, labels)
    keep = labels != 255
    means = np.stack([features[labels == c].mean(0) for c in range(3)])
    centred = features[keep] - means[labels[keep]]
    precision = np.linalg.inv(centred.T @ centred / keep.sum())
    queries = rng.normal(0, 4, (50, 3))
    want = [min(mahalanobis(q, m, precision) ** 2 for m in means) for q in queries]
    np.testing.assert_allclose(ops.convert_to_numpy(scorer.score(queries)), want, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="before `score`"):
        baselines.MahalanobisScore().score(queries)
    with pytest.raises(ValueError, match="same pixels"):
        baselines.MahalanobisScore().fit(features, labels[:5])

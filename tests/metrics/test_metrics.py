import keras
import numpy as np
import pytest
from sklearn.metrics import average_precision_score
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve

from keras_gss import metrics


def _scores_with_ties(rng, n=5000):
    anomaly = rng.random(n) < 0.2
    # Rounded to 2 decimals: many ties, within and across classes.
    scores = np.round(rng.normal(size=n) + 1.2 * anomaly, 2)
    return scores, anomaly


def _sk_fpr95(scores, anomaly):
    fpr, tpr, _ = roc_curve(anomaly, scores, drop_intermediate=False)
    return fpr[np.argmax(tpr >= 0.95)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_anomaly_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    scores, anomaly = _scores_with_ties(rng)
    got = metrics.anomaly_metrics(scores, anomaly)
    assert abs(got["auroc"] - roc_auc_score(anomaly, scores)) < 1e-6
    assert abs(got["ap"] - average_precision_score(anomaly, scores)) < 1e-6
    assert abs(got["fpr95"] - _sk_fpr95(scores, anomaly)) < 1e-6


def test_void_pixels_are_excluded_and_images_pooled(rng):
    scores, anomaly = _scores_with_ties(rng, 4000)
    valid = rng.random(4000) < 0.7
    got = metrics.anomaly_metrics(scores.reshape(4, 1000), anomaly.reshape(4, 1000),
                                  valid=valid.reshape(4, 1000))
    assert abs(got["auroc"] - roc_auc_score(anomaly[valid], scores[valid])) < 1e-6
    per_image = metrics.per_image_anomaly_metrics(
        scores.reshape(4, 1000), anomaly.reshape(4, 1000), valid.reshape(4, 1000))
    want = np.mean([roc_auc_score(a[v], s[v]) for s, a, v in zip(
        scores.reshape(4, 1000), anomaly.reshape(4, 1000), valid.reshape(4, 1000))])
    assert abs(per_image["auroc"] - want) < 1e-6


def test_binned_metrics_close_to_exact(rng):
    binned = metrics.BinnedAnomalyMetrics((-5.0, 7.0), num_bins=20000)
    all_scores, all_anomaly = [], []
    for _ in range(5):  # streamed in chunks
        scores, anomaly = rng.normal(size=20000), rng.random(20000) < 0.1
        scores = scores + 1.0 * anomaly
        binned.update(scores, anomaly)
        all_scores.append(scores)
        all_anomaly.append(anomaly)
    exact = metrics.anomaly_metrics(np.concatenate(all_scores), np.concatenate(all_anomaly))
    got = binned.result()
    for key in ("auroc", "ap", "fpr95"):
        assert abs(got[key] - exact[key]) < 1e-3, key


def test_anomaly_metric_errors():
    with pytest.raises(ValueError, match="same shape"):
        metrics.anomaly_metrics(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN or Inf"):
        metrics.anomaly_metrics(np.array([0.0, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="`score_range` must be"):
        metrics.BinnedAnomalyMetrics((1.0, 1.0))
    assert np.isnan(metrics.anomaly_metrics(np.zeros(3), np.zeros(3))["auroc"])


def test_confusion_and_miou_match_sklearn(rng):
    labels = rng.integers(0, 5, size=(3, 16, 16))
    labels[:, :3] = 255
    predictions = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, 5, labels.shape))
    predictions = np.where(labels == 255, 0, predictions)
    cm = keras.ops.convert_to_numpy(metrics.confusion_matrix(labels, predictions, 5))
    keep = labels != 255
    want = sk_confusion(labels[keep], predictions[keep], labels=range(5))
    np.testing.assert_array_equal(cm, want)
    iou = np.diag(want) / (want.sum(0) + want.sum(1) - np.diag(want))
    assert abs(metrics.mean_iou(labels, predictions, 5) - iou.mean()) < 1e-9
    streaming = metrics.MeanIoU(num_classes=5)
    for i in range(3):
        streaming.update_state(labels[i:i + 1], predictions[i:i + 1])
    assert abs(float(streaming.result()) - iou.mean()) < 1e-6


def test_mean_iou_metric_from_logits_in_compiled_graph():
    metric = metrics.MeanIoU(num_classes=3)
    logits = np.eye(3, dtype="float32")[[[0, 1], [2, 2]]][None]
    labels = np.array([[[0, 1], [2, 255]]])
    metric.update_state(labels, logits)
    assert float(metric.result()) == 1.0
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_open_miou_with_oracle_equals_closed_miou(rng):
    k = 4
    labels = rng.integers(0, k, size=(2, 20, 20))
    labels[:, 5:9, 5:9] = k  # anomalies
    labels[:, 0] = 255
    closed = np.where(rng.random(labels.shape) < 0.8, labels, rng.integers(0, k, labels.shape))
    oracle = np.where(labels == k, k, closed)
    closed_miou = metrics.mean_iou(np.where(labels == k, 255, labels), closed, k)
    assert abs(metrics.open_mean_iou(labels, oracle, k) - closed_miou) < 1e-12
    # Missing anomalies (predicted as known classes) can only lower it.
    assert metrics.open_mean_iou(labels, closed, k) < closed_miou


def test_ece_matches_numpy_reference(rng):
    logits = rng.normal(size=(2000, 4)) * 2
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, 4, 2000)
    labels[:100] = 255
    keep = labels != 255
    conf = probabilities[keep].max(-1)
    correct = probabilities[keep].argmax(-1) == labels[keep]
    ece = 0.0
    for lo, hi in zip(np.linspace(0, 1, 16)[:-1], np.linspace(0, 1, 16)[1:]):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    assert abs(metrics.expected_calibration_error(probabilities, labels) - ece) < 1e-9
    bins = metrics.reliability(probabilities, labels)
    assert bins["count"].sum() == keep.sum() and len(bins["edges"]) == 16


def test_confusion_matrix_compiles_on_the_backend(rng):
    """Inside a compiled step (JAX's jit; TensorFlow's XLA), equal to scikit-learn's."""
    import functools

    labels = rng.integers(0, 4, size=(2, 8, 8)).astype("int32")
    labels[0, 0] = 255
    predictions = rng.integers(0, 4, size=(2, 8, 8)).astype("int32")
    count = functools.partial(metrics.confusion_matrix, num_classes=4)
    if keras.backend.backend() == "jax":
        import jax

        compiled = jax.jit(count)
    else:
        import tensorflow as tf

        compiled = tf.function(count, jit_compile=True)
    got = keras.ops.convert_to_numpy(compiled(labels, predictions))
    keep = labels.ravel() != 255
    want = sk_confusion(labels.ravel()[keep], predictions.ravel()[keep], labels=range(4))
    np.testing.assert_array_equal(got, want)

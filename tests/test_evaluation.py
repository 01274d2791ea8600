import json
import os

import keras
import numpy as np

import keras_gss
from keras_gss.data import colour_scenes


class FixedModel:
    """A stand-in segmenter with known logits and anomaly scores."""

    def __init__(self, logits, scores):
        self.logits, self.scores = logits, scores

    def predict(self, images, batch_size=None, verbose=0):
        return self.logits[: len(images)]

    def predict_anomaly(self, images, batch_size=None, verbose=0):
        return self.scores[: len(images)]


def test_evaluate_reports_metrics_and_writes_figures(tmp_path, rng):
    images, labels, anomaly = colour_scenes(4, size=16, anomalies=True, seed=1)
    logits = np.eye(3, dtype="float32")[np.where(labels == 255, 0, labels)] * 4.0
    oracle = anomaly.astype("float32") + 0.01 * rng.random(anomaly.shape)
    model = FixedModel(logits, oracle)
    closed_labels = np.where(anomaly, 255, labels)
    results = keras_gss.evaluate(model, images, closed_labels,
                                 anomaly_sets={"far": (images, labels, anomaly)},
                                 out_dir=str(tmp_path), name="oracle", verbose=0)
    assert results["closed_set"]["miou"] == 1.0
    assert results["far"]["model"]["auroc"] == 1.0 and results["far"]["model"]["fpr95"] == 0.0
    assert set(results["far"]) == {"model", "max_softmax", "entropy", "max_logit", "energy"}
    for name in ("oracle.json", "oracle.md", "oracle_reliability.png",
                 "oracle_far_overlays.png", "oracle_far_roc_pr.png"):
        assert os.path.getsize(tmp_path / name) > 0, name
    with open(tmp_path / "oracle.json") as file:
        assert json.load(file)["far"]["model"]["auroc"] == 1.0
    table = keras_gss.format_table({"oracle": results})
    assert "| oracle | model | 100.0 | 100.0 | 100.0 | 0.0 |" in table


def test_unknown_score_name():
    model = FixedModel(np.zeros((1, 2, 2, 2), "float32"), np.zeros((1, 2, 2)))
    try:
        keras_gss.evaluate(model, np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2), int),
                           scores=("msp",), verbose=0)
    except ValueError as error:
        assert "unknown baselines ['msp']" in str(error)
    else:
        raise AssertionError("no error")


def test_reader_anomaly_masks_match_bool_masks(rng):
    """Readers' 0 / 1 / 255 masks score exactly as the equivalent bool masks."""
    images, labels, anomaly = colour_scenes(4, size=16, anomalies=True, seed=2)
    logits = rng.normal(size=labels.shape + (3,)).astype("float32")
    scores = rng.random(anomaly.shape).astype("float32")
    model = FixedModel(logits, scores)
    as_bool = keras_gss.evaluate(model, images, labels, anomaly_sets={"s": (images, labels, anomaly)},
                                 verbose=0)
    void = (labels == 255) & ~anomaly
    mask = np.where(void, 255, anomaly.astype(np.int32))
    no_labels = np.full_like(labels, 255)  # anomaly-only sets carry no class labels
    as_int = keras_gss.evaluate(model, images, labels, anomaly_sets={"s": (images, no_labels, mask)},
                                verbose=0)
    assert void.any() and as_int["s"] == as_bool["s"]
    expected = keras_gss.metrics.anomaly_metrics(scores[~void], anomaly[~void])
    np.testing.assert_allclose(as_int["s"]["model"]["auroc"], expected["auroc"], atol=1e-12)
    iou = as_int["closed_set"]["iou"]
    assert len(iou) == 3 and np.isclose(np.nanmean(iou), as_int["closed_set"]["miou"])
    try:
        keras_gss.evaluate(model, images, labels,
                           anomaly_sets={"s": (images, labels, mask * 2)}, verbose=0)
    except ValueError as error:
        assert "found values [2, 510]" in str(error)
    else:
        raise AssertionError("no error")

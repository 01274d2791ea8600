import json
import os

import pytest
import numpy as np

import keras_gss
from keras_gss.data import colour_scenes


class FixedModel:
    """A stand-in segmenter with known logits and anomaly scores."""

    def __init__(self, logits, scores):
        self.logits, self.scores = logits, scores

    def predict_outputs(self, images, batch_size=None, verbose=0):
        return {"logits": self.logits[: len(images)], "anomaly_score": self.scores[: len(images)]}


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
    # The same anomaly metrics; open-mIoU needs the class labels only the bool set has.
    assert "open_miou" in as_bool["s"]["model"] and "open_miou" not in as_int["s"]["model"]
    for metrics in as_bool["s"].values():
        metrics.pop("open_miou")
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


def test_negative_groups_score_each_group_alone(rng):
    """`negative_groups`: each group's AUROC / AP equal scikit-learn's on its pixels alone."""
    from sklearn.metrics import average_precision_score
    from sklearn.metrics import roc_auc_score

    images, labels, anomaly = colour_scenes(6, size=16, anomalies=True, seed=3)
    logits = rng.normal(size=labels.shape + (3,)).astype("float32")
    # Anomalies score high; class-0 negatives overlap them more than the others do.
    scores = (anomaly + 0.8 * (labels == 0) + rng.random(anomaly.shape)).astype("float32")
    results = keras_gss.evaluate(
        FixedModel(logits, scores), images, labels, anomaly_sets={"s": (images, labels, anomaly)},
        negative_groups={"zero": [0], "rest": [1, 2]}, verbose=0)
    assert set(results) == {"closed_set", "s", "s/zero", "s/rest"}
    for group, ids in (("zero", [0]), ("rest", [1, 2])):
        kept = anomaly | np.isin(labels, ids)
        got = results[f"s/{group}"]["model"]
        assert got["auroc"] == pytest.approx(roc_auc_score(anomaly[kept], scores[kept]), abs=1e-9)
        assert got["ap"] == pytest.approx(
            average_precision_score(anomaly[kept], scores[kept]), abs=1e-9)
    assert results["s/zero"]["model"]["auroc"] < results["s"]["model"]["auroc"] < (
        results["s/rest"]["model"]["auroc"])


class PixelModel:
    """Per-pixel logits and score from the colour, for images of any size."""

    def __init__(self, rng):
        self.weights = rng.normal(size=(3, 3)).astype("float32") * 3.0

    def predict(self, images, batch_size=None, verbose=0):
        return np.asarray(images, np.float32) @ self.weights

    def predict_anomaly(self, images, batch_size=None, verbose=0):
        return np.asarray(images, np.float32)[..., 0] - np.asarray(images, np.float32)[..., 1]

    def predict_outputs(self, images, batch_size=None, verbose=0):
        return {"logits": self.predict(images), "anomaly_score": self.predict_anomaly(images)}


def _example(rng, size, with_mask):
    image = rng.random(size + (3,)).astype("float32")
    label = np.where(rng.random(size) < 0.1, 255, rng.integers(0, 3, size))
    if not with_mask:
        return image, label
    # Anomalies where the score is high, plus noise, so AUROC is neither 0.5 nor 1.
    score = image[..., 0] - image[..., 1]
    mask = (score + 0.5 * rng.normal(size=size) > 0.3).astype(np.int32)
    return image, label, np.where(rng.random(size) < 0.05, 255, mask)


def test_streamed_sets_of_any_size_equal_pooled_reference(rng):
    """Images of different sizes, streamed one by one, score as their pooled pixels do."""
    model = PixelModel(rng)
    sizes = [(16, 16), (20, 12), (9, 31)]
    closed = [_example(rng, size, False) for size in sizes]
    anomaly = [_example(rng, size, True) for size in sizes]
    results = keras_gss.evaluate(model, iter(closed), anomaly_sets={"s": anomaly}, verbose=0)

    def pooled(examples):
        logits = np.concatenate([model.predict(e[0]).reshape(-1, 3) for e in examples])
        scores = np.concatenate([model.predict_anomaly(e[0]).ravel() for e in examples])
        rest = [np.concatenate([e[k].ravel() for e in examples]) for k in range(1, len(examples[0]))]
        return logits, scores, rest

    logits, scores, (labels,) = pooled(closed)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    closed_set = results["closed_set"]
    assert closed_set["miou"] == keras_gss.metrics.mean_iou(labels, logits.argmax(-1), 3)
    np.testing.assert_allclose(
        closed_set["ece"], keras_gss.metrics.expected_calibration_error(probabilities, labels),
        atol=1e-6)  # float32 vs float64 softmax
    assert closed_set["threshold"] == keras_gss.evaluation.calibrate_threshold(scores, labels)
    logits, scores, (labels, mask) = pooled(anomaly)
    valid = mask != 255
    want = keras_gss.metrics.anomaly_metrics(scores[valid], mask[valid] == 1)
    assert 0.6 < want["auroc"] < 0.99
    for key in ("auroc", "ap", "fpr95"):
        assert results["s"]["model"][key] == pytest.approx(want[key], abs=1e-12)
    msp = -np.exp(logits).max(-1) / np.exp(logits).sum(-1)
    want = keras_gss.metrics.anomaly_metrics(msp[valid], mask[valid] == 1)
    assert results["s"]["max_softmax"]["auroc"] == pytest.approx(want["auroc"], abs=1e-6)


def test_datasets_single_or_batched_equal_arrays(rng, tmp_path):
    import tensorflow as tf

    model = PixelModel(rng)
    examples = [_example(rng, (12, 10), True) for _ in range(5)]
    images, labels, masks = (np.stack(column) for column in zip(*examples))
    as_arrays = keras_gss.evaluate(model, images, labels,
                                   anomaly_sets={"s": (images, labels, masks)}, verbose=0)
    for batch in (None, 2):
        closed = tf.data.Dataset.from_tensor_slices((images, labels))
        anomaly = tf.data.Dataset.from_tensor_slices((images, labels, masks))
        if batch:
            closed, anomaly = closed.batch(batch), anomaly.batch(batch)
        streamed = keras_gss.evaluate(model, closed, anomaly_sets={"s": anomaly}, verbose=0,
                                      out_dir=str(tmp_path / f"batch{batch}"), name="pixel")
        assert streamed["s"] == as_arrays["s"]
        for key in ("miou", "threshold"):
            assert streamed["closed_set"][key] == as_arrays["closed_set"][key]
        np.testing.assert_allclose(streamed["closed_set"]["ece"], as_arrays["closed_set"]["ece"],
                                   atol=1e-12)
        assert os.path.getsize(tmp_path / f"batch{batch}" / "pixel_s_overlays.png") > 0
    with pytest.raises(ValueError, match=r"`images` must be 2 arrays or yield 2-tuples"):
        keras_gss.evaluate(model, [images[0]], verbose=0)


def test_threshold_at_tpr_is_the_first_roc_point_reaching_95_percent(rng):
    from sklearn.metrics import roc_curve

    from keras_gss.evaluation import threshold_at_tpr

    scores = np.round(rng.normal(size=2000), 2)  # ties, as real score maps have
    anomaly = rng.random(2000) < 0.3 + 0.4 * (scores > 0.5)
    fpr, tpr, thresholds = roc_curve(anomaly, scores)
    first = np.argmax(tpr >= 0.95)
    threshold = threshold_at_tpr(scores, anomaly)
    flagged = scores > threshold
    assert flagged[anomaly].mean() >= 0.95
    np.testing.assert_allclose(flagged[anomaly].mean(), tpr[first])
    np.testing.assert_allclose(flagged[~anomaly].mean(), fpr[first])
    assert np.isclose(np.nextafter(threshold, np.inf), thresholds[first])


def test_open_miou_is_closed_set_miou_with_a_perfect_score_and_falls_without(rng):
    from keras_gss.evaluation import open_set_miou
    from keras_gss.metrics import mean_iou

    labels = rng.integers(0, 4, size=5000)  # 3 known classes, 3 = anomaly
    predicted = np.where(rng.random(5000) < 0.8, np.minimum(labels, 2), rng.integers(0, 3, 5000))
    image_ids = np.repeat(np.arange(10), 500)
    perfect = (labels == 3).astype("float32")
    known = labels < 3
    # Each half is scored on its own (threshold from the other), so the closed-set mIoU of
    # the halves, weighted by image count, is what a perfect score reaches.
    halves = [known & ((image_ids >= 5) == side) for side in (False, True)]
    closed = np.mean([mean_iou(labels[h], predicted[h], 3) for h in halves])
    assert np.isclose(open_set_miou(perfect, labels, predicted, image_ids, 3), closed)
    noisy = perfect + rng.normal(scale=0.6, size=5000).astype("float32")
    assert open_set_miou(noisy, labels, predicted, image_ids, 3) < closed - 0.05


def test_plot_maskiges_draws_one_row_per_scene_and_one_column_per_panel(tmp_path):
    from PIL import Image

    from keras_gss import plots

    rng = np.random.default_rng(0)
    images = rng.normal(size=(2, 16, 16, 3))  # any range: min-max scaled
    panels = {name: rng.random((2, 16, 16, 3)) for name in ("maskige", "reconstruction",
                                                            "prediction")}
    path = plots.plot_maskiges(str(tmp_path / "gss.png"), images, panels, title="GSS")
    width, height = Image.open(path).size
    # 2.0 inches per panel at 90 dpi: 4 columns × 2 rows (plus the title).
    assert (width, height) == (720, 360)

"""`evaluate`: closed-set and open-set evaluation of a segmenter, with figures."""

import json
import os

import numpy as np
from keras import ops

from keras_gss import baselines
from keras_gss import metrics
from keras_gss.inference import predict_sliding_window

DEFAULT_SCORES = ("max_softmax", "entropy", "max_logit", "energy")


def evaluate(model, images, labels, anomaly_sets=None, num_classes=None,
             scores=DEFAULT_SCORES, extra_scores=None, batch_size=16,
             ignore_index=255, out_dir=None, name="model", verbose=1,
             sliding_window=None):
    """Closed-set mIoU / ECE and, per anomaly set, AUROC / AP / FPR95 per score.

    The scores are the softmax baselines named in `scores`, computed from
    the model's logits, plus the model's own `predict_anomaly` when it has
    one (reported as `"model"`). Anomaly metrics pool the pixels of a set
    (void pixels that are not anomalies are excluded).

    Args:
        model: a segmenter whose `predict` gives logits `(B, H, W, C)`.
        images: array `(N, H, W, 3)` prepared as the model expects.
        labels: int array `(N, H, W)` for the closed-set split.
        anomaly_sets: dict name -> `(images, labels, anomaly_mask)`; the mask
            is bool (unlabelled non-anomalies are void) or the readers'
            int mask (1 anomaly, 0 inlier, 255 void).
        num_classes: int. Defaults to the logits' channel count.
        scores: names from `keras_gss.baselines.SCORES`.
        extra_scores: dict set name -> {score name: maps `(N, H, W)`}, for
            scores computed outside the model (e.g. Mahalanobis on features).
        batch_size: int. Defaults to `16`.
        ignore_index: int. Defaults to `255`.
        out_dir: str. If given, writes `<name>.json`, `<name>.md` and PNG
            figures (overlays, reliability diagram, ROC/PR curves).
        name: str. Row label and file prefix. Defaults to `"model"`.
        verbose: int. Keras progress bars and printed paths. Defaults to `1`.
        sliding_window: dict `{"crop", "stride"}` to predict images larger
            than the model's input with `predict_sliding_window` (the zoo
            records' `data["sliding_window"]`), or `None`.

    Returns:
        dict: `{"closed_set": {"miou", "iou" (per class), "ece"}, <set>: {<score>: {"auroc",
        "ap", "fpr95"}}}`.
    """
    unknown = [s for s in scores if s not in baselines.SCORES]
    if unknown:
        raise ValueError(
            f"`scores` names unknown baselines {unknown}; choose from "
            f"{sorted(baselines.SCORES)}."
        )
    progress = "auto" if verbose else 0

    def predict(set_images, with_score):
        if sliding_window:
            out = predict_sliding_window(model, set_images, batch_size=batch_size,
                                         verbose=progress, **sliding_window)
            return out["logits"], out.get("anomaly_score") if with_score else None
        set_logits = model.predict(set_images, batch_size=batch_size, verbose=progress)
        score = (model.predict_anomaly(set_images, batch_size=batch_size, verbose=progress)
                 if with_score and hasattr(model, "predict_anomaly") else None)
        return set_logits, score

    logits, _ = predict(images, False)
    num_classes = num_classes or logits.shape[-1]
    probabilities = ops.convert_to_numpy(ops.softmax(logits, axis=-1))
    predictions = logits.argmax(-1)
    confusion = metrics.confusion_matrix(labels, predictions, num_classes, ignore_index)
    results = {
        "closed_set": {
            "miou": metrics.mean_iou(labels, predictions, num_classes, ignore_index),
            "iou": metrics.iou_from_confusion(ops.convert_to_numpy(confusion)).tolist(),
            "ece": metrics.expected_calibration_error(probabilities, labels,
                                                      ignore_index=ignore_index),
        }
    }
    figures = []
    if out_dir:
        from keras_gss import plots

        os.makedirs(out_dir, exist_ok=True)
        figures.append(plots.plot_reliability(
            os.path.join(out_dir, f"{name}_reliability.png"),
            metrics.reliability(probabilities, labels, ignore_index=ignore_index),
            title=f"{name}: reliability (ECE {results['closed_set']['ece']:.3f})"))
    for set_name, (set_images, set_labels, anomaly) in (anomaly_sets or {}).items():
        set_logits, own_score = predict(set_images, True)
        maps = {s: ops.convert_to_numpy(baselines.SCORES[s](set_logits)) for s in scores}
        if own_score is not None:
            maps["model"] = own_score
        maps.update((extra_scores or {}).get(set_name, {}))
        anomaly, valid = _anomaly_targets(set_labels, anomaly, ignore_index)
        results[set_name] = {
            score: metrics.anomaly_metrics(values, anomaly, valid)
            for score, values in maps.items()
        }
        if out_dir:
            best = max(results[set_name], key=lambda s: results[set_name][s]["auroc"])
            figures.append(plots.plot_overlays(
                os.path.join(out_dir, f"{name}_{set_name}_overlays.png"),
                set_images[:4], set_labels[:4], set_logits[:4].argmax(-1),
                maps[best][:4], num_classes, anomaly=anomaly[:4],
                title=f"{name} on {set_name}: anomaly score = {best}"))
            figures.append(plots.plot_roc_pr(
                os.path.join(out_dir, f"{name}_{set_name}_roc_pr.png"),
                {s: metrics.roc_pr_curves(v, anomaly, valid) for s, v in maps.items()},
                title=f"{name} on {set_name}"))
    if out_dir:
        with open(os.path.join(out_dir, f"{name}.json"), "w") as file:
            json.dump(results, file, indent=2)
        with open(os.path.join(out_dir, f"{name}.md"), "w") as file:
            file.write(format_table({name: results}) + "\n")
        if verbose:
            for path in figures:
                print(f"wrote {path}")
    return results


def _anomaly_targets(labels, anomaly, ignore_index):
    """`(positive, valid)` masks from a bool mask or a 0 / 1 / 255 (void) mask.

    A bool mask (DigitScenes) voids unlabelled pixels that are not
    anomalies; an integer mask (the readers, SMIYC convention) says it all.
    """
    anomaly = np.asarray(anomaly)
    if anomaly.dtype == bool:
        return anomaly, (np.asarray(labels) != ignore_index) | anomaly
    unexpected = np.setdiff1d(np.unique(anomaly), [0, 1, 255])
    if unexpected.size:
        raise ValueError(
            "`anomaly_sets` masks must be bool or hold 0 (inlier), 1 (anomaly) "
            f"and 255 (void); found values {unexpected.tolist()[:5]}."
        )
    return anomaly == 1, anomaly != 255


def format_table(results_by_model):
    """Markdown table: one row per (model, score), columns per anomaly set.

    Example:

    >>> r = {"closed_set": {"miou": 0.5, "ece": 0.1},
    ...      "near": {"model": {"auroc": 0.9, "ap": 0.5, "fpr95": 0.3}}}
    >>> print(format_table({"gmmseg": r}))
    | model | score | mIoU | near AUROC | near AP | near FPR95 |
    |---|---|---|---|---|---|
    | gmmseg | model | 50.0 | 90.0 | 50.0 | 30.0 |
    """
    sets = []
    for results in results_by_model.values():
        sets += [s for s in results if s != "closed_set" and s not in sets]
    header = ["model", "score", "mIoU"] + [f"{s} {m}" for s in sets
                                           for m in ("AUROC", "AP", "FPR95")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model_name, results in results_by_model.items():
        names = []
        for s in sets:
            names += [n for n in results.get(s, {}) if n not in names]
        for score in names:
            row = [model_name, score, f"{100 * results['closed_set']['miou']:.1f}"]
            for s in sets:
                m = results.get(s, {}).get(score)
                row += ([f"{100 * m[k]:.1f}" for k in ("auroc", "ap", "fpr95")]
                        if m else ["–"] * 3)
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)

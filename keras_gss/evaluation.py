"""`evaluate`: closed-set and open-set evaluation of a segmenter, with figures."""

import json
import os

import numpy as np
from keras import ops

from keras_gss import baselines
from keras_gss import metrics
from keras_gss.inference import predict_sliding_window
from keras_gss.models.open_set_image_classifier import OpenSetImageClassifier
from keras_gss.models.open_set_image_segmenter import predict_logits_and_scores

DEFAULT_SCORES = ("max_softmax", "entropy", "max_logit", "energy")


# Share of labelled in-distribution pixels the recommended threshold accepts.
INLIER_COVERAGE = 0.95


def calibrate_threshold(scores, labels=None, ignore_index=255, coverage=INLIER_COVERAGE):
    """The anomaly threshold that accepts `coverage` of the labelled pixels.

    Example:

    >>> calibrate_threshold(np.arange(100.0), np.zeros(100, int))
    94.05

    Args:
        scores: anomaly scores, higher is more anomalous.
        labels: int labels of the same shape, or `None` when every score
            belongs to a labelled pixel.
        ignore_index: int. Label of void pixels. Defaults to `255`.
        coverage: float. Share of labelled pixels accepted. Defaults to `0.95`.
    """
    known = np.asarray(scores)
    if labels is not None:
        known = known[np.asarray(labels) != ignore_index]
    return float(np.quantile(known, coverage))


def _is_arrays(data, arity):
    return (isinstance(data, (tuple, list)) and len(data) == arity
            and all(hasattr(a, "shape") for a in data) and np.ndim(data[0]) == 4)


def _chunks(data, arity, what):
    """Numpy tuples `(images (B, H, W, 3), labels (B, H, W), ...)`.

    Arrays come as one chunk; a `tf.data.Dataset` or any iterable yields one
    chunk per element (single examples or batches, any image size), so a
    set never has to fit in memory at once.
    """
    if _is_arrays(data, arity):
        yield tuple(np.asarray(a) for a in data)
        return
    if hasattr(data, "as_numpy_iterator"):
        data = data.as_numpy_iterator()
    for element in data:
        if not isinstance(element, (tuple, list)) or len(element) != arity:
            raise ValueError(
                f"{what} must be {arity} arrays or yield {arity}-tuples "
                f"(image, label{', anomaly mask' if arity == 3 else ''}); received "
                f"an element of type {type(element).__name__}."
            )
        element = [np.asarray(a) for a in element]
        if element[0].ndim == 3:
            element = [a[None] for a in element]
        yield tuple([element[0]] + [a[..., 0] if a.ndim == 4 else a for a in element[1:]])


def evaluate(model, images, labels=None, anomaly_sets=None, num_classes=None,
             scores=DEFAULT_SCORES, extra_scores=None, batch_size=16,
             ignore_index=255, out_dir=None, name="model", verbose=1,
             sliding_window=None, preprocess=None, negative_groups=None):
    """Closed-set mIoU / ECE and, per anomaly set, AUROC / AP / FPR95 per score.

    The scores are the softmax baselines named in `scores`, computed from
    the model's logits, plus a keras_gss model's own anomaly score
    (reported as `"model"`; logits and score come from one pass). Anomaly
    metrics pool the pixels of a set (void pixels that are not anomalies
    are excluded) and are exact.

    Sets are arrays, or streams: a `tf.data.Dataset` (e.g. from
    `keras_gss.data.read_dataset`) or any iterable of examples of any size,
    predicted one element at a time. Only per-pixel scores of labelled
    pixels are kept, never the logits of a whole set.

    Args:
        model: a segmenter whose `predict` gives logits `(B, H, W, C)`.
        images: array `(N, H, W, 3)` with `labels`, or a dataset / iterable
            of `(image, label)` pairs (`labels=None`).
        labels: int array `(N, H, W)` for the closed-set split, or `None`.
        anomaly_sets: dict name -> `(images, labels, anomaly_mask)` arrays,
            or a dataset / iterable of such triples; the mask is bool
            (unlabelled non-anomalies are void) or the readers' int mask
            (1 anomaly, 0 inlier, 255 void).
        num_classes: int. Defaults to the logits' channel count.
        scores: names from `keras_gss.baselines.SCORES`.
        extra_scores: dict set name -> {score name: maps `(N, H, W)`}, for
            scores computed outside the model (e.g. Mahalanobis on features),
            in the set's order.
        batch_size: int. Defaults to `16`.
        ignore_index: int. Defaults to `255`.
        out_dir: str. If given, writes `<name>.json`, `<name>.md` and PNG
            figures (overlays, reliability diagram, ROC/PR curves).
        name: str. Row label and file prefix. Defaults to `"model"`.
        verbose: int. Progress bars and printed paths. Defaults to `1`.
        sliding_window: dict `{"crop", "stride"}` to predict images larger
            than the model's input with `predict_sliding_window` (the zoo
            records' `data["sliding_window"]`), or `None`.
        preprocess: callable applied to each image batch before the model
            (e.g. `keras_gss.data.normalize_images` for the readers' uint8
            images), or `None`.

    Returns:
        dict: `{"closed_set": {"miou", "iou" (per class), "ece"[, "threshold"]},
        <set>: {<score>: {"auroc", "ap", "fpr95", "open_miou"}}}`. A model
        whose score has parts (DenseHybrid's hybrid) adds them as
        `"model:discriminative"` and `"model:generative"`. `open_miou` is
        open-mIoU at the TPR-95% threshold calibrated on the other half of
        the set (`open_set_miou`), for sets whose known pixels are labelled. `threshold` is the
        model's own score that accepts 95% of the labelled closed-set pixels
        (present when the model has one).

    Example:

    ```python
    results = keras_gss.evaluate(
        model, keras_gss.data.read_dataset("cityscapes", root, split="val"),
        anomaly_sets={"laf": keras_gss.data.read_dataset("fishyscapes_laf", laf)},
        preprocess=keras_gss.data.normalize_images,
        sliding_window={"crop": 768, "stride": 512})
    ```
    """
    if isinstance(model, OpenSetImageClassifier):
        raise ValueError("`model` is an image classifier; `evaluate` scores segmenters. Use "
                         "keras_gss.evaluate_osr(model, known_images, known_labels, "
                         "unknown_images) for open-set recognition.")
    import keras

    unknown = [s for s in scores if s not in baselines.SCORES]
    if unknown:
        raise ValueError(
            f"`scores` names unknown baselines {unknown}; choose from "
            f"{sorted(baselines.SCORES)}."
        )
    if labels is not None:
        images = (images, labels)

    def stream(data, arity, what):
        """Chunks, with one progress bar over a streamed set."""
        single = _is_arrays(data, arity)
        bar = keras.utils.Progbar(None, unit_name="image") if verbose and not single else None
        for chunk in _chunks(data, arity, what):
            yield chunk, ("auto" if verbose and single else 0)
            if bar is not None:
                bar.add(len(chunk[0]))

    def predict(set_images, progress):
        if preprocess is not None:
            set_images = preprocess(set_images)
        if sliding_window:
            out = predict_sliding_window(model, set_images, batch_size=batch_size,
                                         verbose=progress, **sliding_window)
            return np.asarray(out["logits"]), out.get("anomaly_score"), {}
        return predict_logits_and_scores(model, set_images, batch_size=batch_size,
                                         verbose=progress, parts=True)

    confusion, sums, inlier_scores = 0, 0, []
    for (chunk_images, chunk_labels), progress in stream(images, 2, "`images`"):
        logits, own = predict(chunk_images, progress)[:2]
        num_classes = num_classes or logits.shape[-1]
        confusion = confusion + ops.convert_to_numpy(metrics.confusion_matrix(
            chunk_labels, logits.argmax(-1), num_classes, ignore_index))
        sums = sums + metrics.reliability_sums(
            ops.convert_to_numpy(ops.softmax(logits, axis=-1)), chunk_labels,
            ignore_index=ignore_index)
        if own is not None:
            inlier_scores.append(np.asarray(own)[chunk_labels != ignore_index])
    if num_classes is None:
        raise ValueError("`images` yielded no examples; pass a non-empty set.")
    iou = metrics.iou_from_confusion(confusion)
    bins = metrics.reliability_from_sums(sums)
    results = {"closed_set": {"miou": float(np.nanmean(iou)), "iou": iou.tolist(),
                              "ece": metrics.calibration_error(bins)}}
    if inlier_scores and sum(len(s) for s in inlier_scores):
        results["closed_set"]["threshold"] = calibrate_threshold(np.concatenate(inlier_scores))
    figures = []
    if out_dir:
        from keras_gss import plots

        os.makedirs(out_dir, exist_ok=True)
        figures.append(plots.plot_reliability(
            os.path.join(out_dir, f"{name}_reliability.png"), bins,
            title=f"{name}: reliability (ECE {results['closed_set']['ece']:.3f})"))
    for set_name, data in (anomaly_sets or {}).items():
        values, positives, negative_labels, shown, offset = {}, [], [], [], 0
        predicted, image_ids = [], []
        for (set_images, set_labels, mask), progress in stream(
                data, 3, f"`anomaly_sets[{set_name!r}]`"):
            set_logits, own_score, parts = predict(set_images, progress)
            maps = {s: ops.convert_to_numpy(baselines.SCORES[s](set_logits)) for s in scores}
            if own_score is not None:
                maps["model"] = np.asarray(own_score)
            maps.update({f"model:{part}": v for part, v in parts.items()})
            for extra, extra_maps in (extra_scores or {}).get(set_name, {}).items():
                maps[extra] = np.asarray(extra_maps[offset:offset + len(set_images)])
            offset += len(set_images)
            anomaly, valid = _anomaly_targets(set_labels, mask, ignore_index)
            positives.append(anomaly[valid])
            predicted.append(set_logits.argmax(-1)[valid])
            image_ids.append(np.broadcast_to(
                np.arange(offset - len(set_images), offset)[:, None, None], valid.shape)[valid])
            negative_labels.append(np.where(anomaly, ignore_index, set_labels)[valid])
            for score, score_map in maps.items():
                values.setdefault(score, []).append(score_map[valid])
            for i in range(min(len(set_images), 4 - len(shown)) if out_dir else 0):
                shown.append((set_images[i], set_labels[i], set_logits[i].argmax(-1),
                              {s: m[i] for s, m in maps.items()}, anomaly[i]))
        anomaly = np.concatenate(positives)
        values = {score: np.concatenate(chunks) for score, chunks in values.items()}
        results[set_name] = {score: metrics.anomaly_metrics(v, anomaly)
                             for score, v in values.items()}
        negative_labels = np.concatenate(negative_labels)
        open_labels = np.where(anomaly, num_classes, negative_labels)
        predicted, image_ids = np.concatenate(predicted), np.concatenate(image_ids)
        for score, v in values.items() if (open_labels < num_classes).any() else ():
            results[set_name][score]["open_miou"] = open_set_miou(
                v, open_labels, predicted, image_ids, num_classes)
        for group, class_ids in (negative_groups or {}).items():
            kept = anomaly | np.isin(negative_labels, class_ids)
            results[f"{set_name}/{group}"] = {
                score: metrics.anomaly_metrics(v[kept], anomaly[kept])
                for score, v in values.items()}
        if out_dir:
            # The model's own score where it has one: the figure shows what the model says.
            shown_score = "model" if "model" in results[set_name] else max(
                results[set_name], key=lambda s: results[set_name][s]["auroc"])
            columns = list(zip(*shown))
            figures.append(plots.plot_overlays(
                os.path.join(out_dir, f"{name}_{set_name}_overlays.png"),
                columns[0], columns[1], columns[2], [m[shown_score] for m in columns[3]],
                num_classes, anomaly=columns[4],
                title=f"{name} on {set_name}: anomaly score = "
                      f"{getattr(model, 'score_name', shown_score)}"))
            figures.append(plots.plot_roc_pr(
                os.path.join(out_dir, f"{name}_{set_name}_roc_pr.png"),
                {s: metrics.roc_pr_curves(v, anomaly) for s, v in values.items()},
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


def threshold_at_tpr(scores, anomaly, tpr=0.95):
    """The largest threshold whose detection rate (`score > threshold`) reaches `tpr`.

    DenseHybrid §5.2's open-set operating point: at least `tpr` of the
    anomalous pixels score above it (the first ROC point with TPR ≥ `tpr`).

    Example:

    >>> float(threshold_at_tpr(np.arange(10.0), np.arange(10) >= 5, tpr=0.8)) < 6.0
    True
    """
    positive = np.sort(np.asarray(scores)[np.asarray(anomaly, bool)])[::-1]
    if positive.size == 0:
        raise ValueError("`anomaly` marks no pixel: a TPR threshold needs anomalous pixels.")
    kth = positive[int(np.ceil(tpr * positive.size)) - 1]
    return np.nextafter(kth, -np.inf)  # `score > threshold` keeps the k-th itself


def open_set_miou(scores, labels, predicted, image_ids, num_classes, tpr=0.95):
    """Open-mIoU (DenseHybrid Eqs. 19-20) with the threshold set on the other half.

    The images split in two folds by position (first half, second half);
    each fold is scored at the TPR-95% threshold of the other (as the paper
    does on StreetHazards' two cities), and the two open-mIoUs are averaged
    weighted by image count. `labels` hold known classes, `num_classes` for
    anomalies (pixels already restricted to the valid ones).
    """
    folds = image_ids >= (image_ids.max() + 1) / 2
    total, weight = 0.0, 0
    for fold in (False, True):
        calibration, scored = folds != fold, folds == fold
        if not (labels[calibration] == num_classes).any() or not scored.any():
            return float("nan")
        threshold = threshold_at_tpr(scores[calibration], labels[calibration] == num_classes, tpr)
        decided = np.where(scores[scored] > threshold, num_classes, predicted[scored])
        images = len(np.unique(image_ids[scored]))
        total += images * metrics.open_mean_iou(labels[scored], decided, num_classes)
        weight += images
    return total / weight


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
    >>> print(format_table({"gmmseg": {"closed_set": {"miou": 0.5, "ece": 0.1}}}))
    | model | score | mIoU |
    |---|---|---|
    | gmmseg | – | 50.0 |
    """
    sets = []
    for results in results_by_model.values():
        sets += [s for s in results if s != "closed_set" and s not in sets]
    opened = {s for results in results_by_model.values() for s in sets
              if any("open_miou" in m for m in results.get(s, {}).values())}
    header = ["model", "score", "mIoU"] + [
        f"{s} {m}" for s in sets
        for m in ("AUROC", "AP", "FPR95") + (("oIoU",) if s in opened else ())]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model_name, results in results_by_model.items():
        names = []
        for s in sets:
            names += [n for n in results.get(s, {}) if n not in names]
        for score in names or ["–"]:  # closed-set only: one row, its mIoU
            row = [model_name, score, f"{100 * results['closed_set']['miou']:.1f}"]
            for s in sets:
                m = results.get(s, {}).get(score)
                keys = ("auroc", "ap", "fpr95") + (("open_miou",) if s in opened else ())
                row += ([f"{100 * m[k]:.1f}" for k in keys] if m else ["–"] * len(keys))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


OSR_BASELINES = ("max_softmax", "max_logit", "energy")


def evaluate_osr(model, known_images, known_labels, unknown_images, batch_size=None,
                 scores=OSR_BASELINES, verbose=0):
    """Open-set recognition: closed-set accuracy and known-vs-unknown detection.

    The model classifies the test images of its known classes (accuracy)
    and scores them and the images of unknown classes; every score is
    evaluated with `keras_gss.metrics.open_set_recognition_metrics` (knowns
    positive): AUROC, FPR95, AUPR-In, AUPR-Out and both detection errors.
    Scores: `"model"` (the model's own anomaly score: L-GMM's
    `−max_y log p(z|y)`, a softmax classifier's chosen baseline) and the
    logit baselines on the same logits (MSP, max logit, energy).

    Args:
        model: an image classifier with `predict_outputs` (an
            `OpenSetImageClassifier`).
        known_images, known_labels: test images of the known classes and
            their class ids.
        unknown_images: test images of classes the model never saw.
        batch_size: int. Prediction batch size.
        scores: names from `keras_gss.baselines.SCORES` computed from
            the logits. Defaults to MSP, max logit and energy.
        verbose: Keras progress-bar setting. Defaults to `0`.

    Returns:
        dict: `"accuracy"` and, per score name, the metrics dict.

    Example:

    ```python
    results = keras_gss.evaluate_osr(model, x_known, y_known, x_unknown)
    results["accuracy"], results["model"]["auroc"]
    ```
    """
    known = model.predict_outputs(known_images, batch_size=batch_size, verbose=verbose)
    unknown = model.predict_outputs(unknown_images, batch_size=batch_size, verbose=verbose)
    labels = np.asarray(known_labels).reshape(-1)
    if labels.shape[0] != known["logits"].shape[0]:
        raise ValueError(f"`known_labels` has {labels.shape[0]} labels for "
                         f"{known['logits'].shape[0]} `known_images`; pass one per image.")
    results = {"accuracy": float(np.mean(known["logits"].argmax(-1) == labels)),
               "model": metrics.open_set_recognition_metrics(known["anomaly_score"],
                                                             unknown["anomaly_score"])}
    for name in scores:
        score = baselines.SCORES[name]
        results[name] = metrics.open_set_recognition_metrics(
            np.asarray(score(known["logits"])), np.asarray(score(unknown["logits"])))
    return results

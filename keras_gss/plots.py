"""Figures: segmentation overlays, anomaly heatmaps, reliability, ROC and PR.

matplotlib is optional (`pip install 'keras-gss[bench]'`); every function
writes one PNG and returns its path.
"""

import numpy as np


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Figures need matplotlib: `pip install 'keras-gss[bench]'`."
        ) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path, title=None):
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    _pyplot().close(figure)
    return path


def _scaled(image):
    """An image min-max scaled to `[0, 1]` for display (any input range)."""
    image = np.asarray(image, np.float32)
    return (image - image.min()) / max(image.max() - image.min(), 1e-6)


def _grid(rows, columns, size=2.0):
    return _pyplot().subplots(rows, columns, figsize=(size * columns, size * rows),
                              squeeze=False)


def _colourise(labels, num_classes, ignore_index=255):
    palette = np.asarray(_pyplot().get_cmap("tab10")(np.arange(10))[:, :3])
    colours = palette[np.arange(max(num_classes + 1, 1)) % 10]
    out = colours[np.clip(labels, 0, num_classes)]
    out[labels == ignore_index] = 0.0
    return out


def plot_overlays(path, images, labels, predictions, scores, num_classes,
                  anomaly=None, title=None, ignore_index=255):
    """Rows: image, ground truth, prediction, anomaly heatmap (one column per image)."""
    plt = _pyplot()
    count = len(images)
    rows = [("image", None), ("ground truth", None), ("prediction", None),
            ("anomaly score", "magma")]
    if anomaly is not None:
        rows.insert(2, ("anomaly (truth)", "gray"))
    figure, axes = plt.subplots(len(rows), count, figsize=(2.2 * count, 2.2 * len(rows)),
                                squeeze=False)
    for column in range(count):
        panels = {
            "image": _scaled(images[column]),
            "ground truth": _colourise(labels[column], num_classes, ignore_index),
            "anomaly (truth)": anomaly[column] if anomaly is not None else None,
            "prediction": _colourise(predictions[column], num_classes, ignore_index),
            "anomaly score": scores[column],
        }
        for row, (name, cmap) in enumerate(rows):
            axes[row, column].imshow(panels[name], cmap=cmap, interpolation="nearest")
            axes[row, column].set_axis_off()
            if column == 0:
                axes[row, column].set_title(name, fontsize=8, loc="left")
    return _save(figure, path, title)


def plot_reliability(path, bins, title="reliability"):
    """Reliability diagram from `keras_gss.metrics.reliability` output."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4, 4))
    centres = (bins["edges"][1:] + bins["edges"][:-1]) / 2
    used = bins["count"] > 0
    width = bins["edges"][1] - bins["edges"][0]
    axis.bar(centres[used], bins["accuracy"][used], width=width * 0.9, label="accuracy")
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    axis.set_xlabel("confidence")
    axis.set_ylabel("accuracy")
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=8)
    return _save(figure, path)


def plot_roc_pr(path, curves, title=None):
    """ROC and PR curves; `curves` maps a label to `roc_pr_curves` output."""
    plt = _pyplot()
    figure, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    for name, curve in curves.items():
        roc.plot(curve["fpr"], curve["tpr"], label=name)
        pr.plot(curve["recall"], curve["precision"], label=name)
    roc.plot([0, 1], [0, 1], "k:", linewidth=1)
    roc.set_xlabel("false positive rate")
    roc.set_ylabel("true positive rate")
    pr.set_xlabel("recall")
    pr.set_ylabel("precision")
    roc.legend(fontsize=7)
    return _save(figure, path, title)


def plot_score_maps(path, images, maps, anomaly=None, title=None):
    """Score maps of several scores side by side on the same scenes.

    Rows are scenes; columns the image, then one heatmap per score (each
    scaled to its own 1st-99th percentile over the shown scenes), with the
    true anomalies outlined.

    Args:
        path: str. PNG to write.
        images: array `(N, H, W, 3)`.
        maps: dict column title -> array `(N, H, W)`, higher = more anomalous.
        anomaly: optional bool array `(N, H, W)`.
        title: optional figure title.
    """
    count, columns = len(images), 1 + len(maps)
    figure, axes = _grid(count, columns)
    for row in range(count):
        axes[row, 0].imshow(_scaled(images[row]))
        for column, (name, values) in enumerate(maps.items(), start=1):
            low, high = np.percentile(values, [1, 99])
            axes[row, column].imshow(values[row], cmap="magma", vmin=low, vmax=high,
                                     interpolation="nearest")
            if anomaly is not None and anomaly[row].any():
                axes[row, column].contour(anomaly[row], levels=[0.5], colors="cyan",
                                          linewidths=0.6)
            if row == 0:
                axes[row, column].set_title(name, fontsize=7)
        if row == 0:
            axes[row, 0].set_title("image", fontsize=7)
        for axis in axes[row]:
            axis.set_axis_off()
    return _save(figure, path, title)


def plot_maskiges(path, images, columns, title=None):
    """GSS's pictures side by side: rows are scenes, columns the image then RGB panels.

    Args:
        path: str. PNG to write.
        images: array `(N, H, W, 3)` (any range; each is min-max scaled).
        columns: dict column title -> array `(N, H', W', 3)` in `[0, 1]`
            (a maskige mapped back with `unmap_pixels`, or class colours).
        title: optional figure title.
    """
    figure, axes = _grid(len(images), 1 + len(columns))
    for row in range(len(images)):
        panels = [("image", _scaled(images[row]))] + [(name, np.clip(values[row], 0, 1))
                                       for name, values in columns.items()]
        for column, (name, panel) in enumerate(panels):
            axes[row, column].imshow(panel, interpolation="nearest")
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(name, fontsize=7)
    return _save(figure, path, title)

"""Quick start: train a tiny GMMSeg on generated scenes and score anomalies.

Trains a GMMSeg segmenter (a small MiT/SegFormer backbone) on generated
scenes of red/green/blue rectangles, then evaluates it on scenes that also
hold a yellow rectangle no class covers: closed-set mIoU, and pixel AUROC of
the GMM anomaly score against the max-softmax baseline. Prints a table and
writes an anomaly heatmap figure. Runs on a CPU in a few minutes.

    python examples/quickstart.py --out outputs/quickstart
"""

import argparse
import os

import keras
import numpy as np

import keras_gss
from keras_gss.data import colour_scenes


def miou(labels, predictions, num_classes, ignore_index=255):
    valid = labels != ignore_index
    confusion = np.bincount(
        labels[valid] * num_classes + predictions[valid],
        minlength=num_classes**2,
    ).reshape(num_classes, num_classes)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    return float(np.mean(np.diag(confusion) / np.maximum(union, 1)))


def auroc(scores, positives):
    """Area under the ROC curve from average ranks (ties count half)."""
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2.0)[inverse]
    n_pos = positives.sum()
    n_neg = positives.size - n_pos
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mean-momentum", type=float, default=0.9)
    parser.add_argument("--update-interval", type=int, default=1)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)

    train_images, train_labels, _ = colour_scenes(96, seed=args.seed)
    test_images, test_labels, anomaly = colour_scenes(
        32, anomalies=True, seed=args.seed + 1)

    backbone = keras_gss.models.segformer_backbone(
        variant=None, image_shape=(32, 32, 3), hidden_dims=[8, 16],
        projection_filters=16)
    model = keras_gss.models.GMMSegImageSegmenter(
        backbone, num_classes=3, num_components=2, embedding_dim=16,
        memory_size=1024)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(train_images, train_labels, batch_size=8, epochs=args.epochs,
              callbacks=[keras_gss.callbacks.SinkhornEM(
                  update_interval=args.update_interval,
                  mean_momentum=args.mean_momentum)],
              verbose=2)

    logits = model.predict(test_images, verbose=0)
    gmm_score = model.predict_anomaly(test_images, verbose=0)
    probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
    msp_score = 1.0 - probabilities.max(-1)
    # Pixels scored: known-class pixels (negatives) and anomalies (positives).
    scored = (test_labels != 255) | anomaly
    rows = [
        ("GMMSeg likelihood (-max_c log p(x|c))", auroc(gmm_score[scored], anomaly[scored])),
        ("max softmax probability", auroc(msp_score[scored], anomaly[scored])),
    ]
    closed = miou(test_labels, logits.argmax(-1), 3)
    print("\n| score | closed-set mIoU | anomaly AUROC |")
    print("|---|---|---|")
    for name, value in rows:
        print(f"| {name} | {closed:.3f} | {value:.3f} |")

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install '.[bench]').")
        return
    figure, axes = plt.subplots(3, 4, figsize=(10, 7.5))
    for column in range(4):
        panels = [
            (np.clip(test_images[column], 0, 1), "image"),
            (anomaly[column], "anomaly (truth)"),
            (gmm_score[column], "GMM anomaly score"),
        ]
        for row, (panel, title) in enumerate(panels):
            axes[row, column].imshow(panel, cmap=None if row == 0 else "magma")
            axes[row, column].set_title(title, fontsize=8)
            axes[row, column].axis("off")
    figure.tight_layout()
    path = os.path.join(args.out, "anomaly_heatmaps.png")
    figure.savefig(path, dpi=100)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

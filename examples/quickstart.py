"""Quick start: softmax, GMMSeg and DenseHybrid on DigitScenes, closed and open set.

Generates the DigitScenes benchmark (handwritten MNIST digits on
scikit-image textures; near-OOD digits 6-9 and far-OOD picture crops as
anomalies), trains a softmax SegFormer and a GMMSeg in the authors'
configuration with the same small MiT backbone for the same steps, then
fine-tunes DenseHybrid from the softmax model as the paper does, with real
negatives (other scikit-image pictures, pasted) and with synthetic ones
(from a jointly trained normalizing flow), and GMMSeg with the same
dataset-posterior head and real negatives. Evaluates every model
(closed-set mIoU and ECE; AUROC / AP / FPR95 / open-mIoU of every anomaly
score and of the hybrid's two parts on near- and far-OOD, pooled and
against each kind of known pixel: textures, known digits), prints the
table and writes figures (the score maps side by side), JSON and every
model as a preset.

    python examples/quickstart.py --out outputs/quickstart

`benchmarks/digitscenes_seeds.py` runs the same training over seeds and
configurations.
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
from keras_gss.data import paste_negatives
from keras_gss.layers.maskige_codec import unmap_pixels
from keras_gss.models import DenseHybridImageSegmenter
from keras_gss.models import NormalizingFlow
from keras_gss.models import pretrain_flow
from keras_gss.models.preset_records import DIGITSCENES_BACKBONE
from keras_gss.optimizers import PolyWarmup

# GMMSeg at the benchmark's size; every other option is the authors' default
# (random-filled memory, class LayerNorm, M-step over the step's classes).
GMMSEG_OPTIONS = {"num_components": 3, "embedding_dim": 32, "memory_size": 2000}
# EM every step with momentum 0.9: 1/(1-γ) M-steps must be short against the run.
EM_OPTIONS = {"update_interval": 1, "mean_momentum": 0.9}
LEARNING_RATE = 2e-3
# DenseHybrid fine-tunes a trained closed-set model with negatives, at a lower rate (paper §5).
FINETUNE_STEPS = 500
FINETUNE_LEARNING_RATE = 5e-4
NEGATIVE_SIDE = 48  # real negative crops: rectangles of 16…40 (ECCV code: 192 crops in 512)
PATCH_SIZE = 32  # flow samples: rectangles of 16…32
FLOW_OPTIONS = {"levels": 2, "steps": 4, "hidden": 32}
FLOW_PRETRAIN_STEPS = 300


def backbone(image_size):
    """The DigitScenes presets' small MiT (`DIGITSCENES_BACKBONE`)."""
    sizes = {k: v for k, v in DIGITSCENES_BACKBONE.items() if k != "architecture"}
    return keras_gss.models.segformer_backbone(image_shape=(image_size, image_size, 3), **sizes)


def load_data(image_size=96, train_scenes=2000, test_scenes=200, seed=0):
    """DigitScenes splits: normalised train arrays, test split, anomaly sets."""
    scenes = DigitScenes(image_size=image_size, seed=seed)
    data = {split: scenes.generate(split, train_scenes if split == "train" else test_scenes)
            for split in ("train", "test", "test_near", "test_far")}
    return {
        "train": (normalize_images(data["train"][0]), data["train"][1].astype("int32")),
        "test": (normalize_images(data["test"][0]), data["test"][1]),
        "anomaly_sets": {name: (normalize_images(data[split][0]), data[split][1],
                                data[split][2])
                         for name, split in (("near-OOD", "test_near"), ("far-OOD", "test_far"))},
        "num_classes": scenes.num_classes, "image_size": image_size,
        # Pictures no split uses (DigitScenes.negatives): DenseHybrid's real negatives; both
        # negative sizes scale with the scenes (the defaults are for 96×96).
        "negatives": normalize_images(scenes.negatives(1000, NEGATIVE_SIDE * image_size // 96)),
        "patch_size": max(16, PATCH_SIZE * image_size // 96 // 4 * 4),
    }


def train_model(kind, data, steps, batch_size=16, seed=0, options=None, em=None,
                callbacks=(), verbose=2):
    """Train a `"softmax"`, `"gmmseg"`, `"lgmm"` or `"gss"` model; returns `(model, seconds)`.

    Poly-decayed AdamW and a shuffled stream seeded by `seed`; `options`
    override the family's arguments (`GMMSEG_OPTIONS`, L-GMM's defaults,
    the `gss_ff_segformer_digitscenes` preset's, whose `tokenizer` a
    trained tokenizer's directory replaces) and `em` the `EM_OPTIONS`.
    """
    keras.utils.set_random_seed(seed)
    images, labels = data["train"]
    classes = data["num_classes"]
    callbacks = list(callbacks)
    if kind == "softmax":
        model = keras_gss.models.SoftmaxImageSegmenter(
            backbone(data["image_size"]), num_classes=classes)
    elif kind == "lgmm":  # the paper's d = 128, G = 3, 2000 embeddings per class
        model = keras_gss.models.LGMMImageSegmenter(
            backbone(data["image_size"]), num_classes=classes, **(options or {}))
    elif kind == "gss":
        config = {**keras_gss.presets.PRESETS["gss_ff_segformer_digitscenes"]["config"],
                  **(options or {}), "num_classes": classes}
        model = keras_gss.models.GSSImageSegmenter(backbone(data["image_size"]), **config)
    else:
        model = keras_gss.models.GMMSegImageSegmenter(
            backbone(data["image_size"]), num_classes=classes,
            **{**GMMSEG_OPTIONS, **(options or {})})
        callbacks = [keras_gss.callbacks.SinkhornEM(**{**EM_OPTIONS, **(em or {})}),
                     *callbacks]
    model.compile(optimizer=keras.optimizers.AdamW(PolyWarmup(LEARNING_RATE, steps)),
                  metrics=[keras_gss.metrics.MeanIoU(classes)])
    # Shuffled here: keras-hub feeds arrays unshuffled.
    stream = (tf.data.Dataset.from_tensor_slices((images, labels))
              .shuffle(len(images), seed=seed).repeat()
              .batch(batch_size, drop_remainder=True).prefetch(2))
    epochs = max(1, round(steps * batch_size / len(images)))
    if verbose:
        print(f"training {kind}: {epochs} epochs × {steps // epochs} steps")
    tic = time.time()
    model.fit(stream, epochs=epochs, steps_per_epoch=steps // epochs, callbacks=callbacks,
              verbose=verbose)
    return model, time.time() - tic


def train_maskige_decoder(model, data, steps, batch_size=16, seed=0, verbose=2):
    """GSS-FT-W from a trained GSS-FF: its preset's learned `X⁻¹` trained on predicted maskiges.

    Returns `(model, seconds)`; the prior and the tokenizer stay as trained.
    """
    keras.utils.set_random_seed(seed)
    record = keras_gss.presets.PRESETS["gss_ftw_segformer_digitscenes"]["config"]
    tic = time.time()
    ftw = model.with_maskige_decoder(record["maskige_decoder"], record["decoder_config"])
    stream = (tf.data.Dataset.from_tensor_slices(data["train"])
              .shuffle(len(data["train"][0]), seed=seed).repeat()
              .batch(batch_size, drop_remainder=True).prefetch(2))
    epochs = max(1, round(steps * batch_size / len(data["train"][0])))
    ftw.fit_maskige_decoder(stream, epochs=epochs, steps_per_epoch=steps // epochs,
                            verbose=verbose)
    return ftw, time.time() - tic


def finetune_with_negatives(closed_set, negatives, data, steps=FINETUNE_STEPS, seed=0,
                            callbacks=(), verbose=2, learning_rate=FINETUNE_LEARNING_RATE,
                            flow_pretrain_steps=FLOW_PRETRAIN_STEPS):
    """DenseHybrid fine-tuning of a trained model; returns `(model, seconds)`.

    `negatives`: `"real"` (pasted pictures) or `"synthetic"` (a flow
    pre-trained `flow_pretrain_steps` on inlier patches, then trained jointly). A softmax model
    becomes a `DenseHybridImageSegmenter`; a GMMSeg model gets the same
    dataset-posterior head (and keeps its EM).
    """
    keras.utils.set_random_seed(seed)
    callbacks = list(callbacks)
    tic = time.time()
    if isinstance(closed_set, keras_gss.models.GMMSegImageSegmenter):
        model = closed_set.with_dataset_posterior()
        callbacks.append(keras_gss.callbacks.SinkhornEM(**EM_OPTIONS))
    elif negatives == "synthetic":
        flow = NormalizingFlow(seed=seed, **FLOW_OPTIONS)
        pretrain_flow(flow, data["train"][0], patch_size=data["patch_size"],
                      steps=flow_pretrain_steps, seed=seed)
        model = DenseHybridImageSegmenter.from_closed_set(closed_set, flow=flow,
                                                          patch_size=data["patch_size"])
    else:
        model = DenseHybridImageSegmenter.from_closed_set(closed_set)
    model.compile(optimizer=keras.optimizers.AdamW(PolyWarmup(learning_rate, steps)),
                  metrics=[keras_gss.metrics.MeanIoU(data["num_classes"])])
    stream = (tf.data.Dataset.from_tensor_slices(data["train"])
              .shuffle(len(data["train"][0]), seed=seed).repeat())
    if negatives == "real":
        stream = paste_negatives(stream, data["negatives"], seed=seed)
    stream = stream.batch(16, drop_remainder=True).prefetch(2)
    if verbose:
        print(f"fine-tuning {type(model).__name__} with {negatives} negatives: {steps} steps")
    model.fit(stream, epochs=1, steps_per_epoch=steps, callbacks=callbacks, verbose=verbose)
    return model, time.time() - tic


def plot_score_maps(path, model_maps, data, count=4):
    """The anomaly score maps of several models on the same near- and far-OOD scenes."""
    from keras_gss import plots

    rows = []
    for set_name, (images, labels, anomaly) in data["anomaly_sets"].items():
        rows += [(images[i], anomaly[i]) for i in range(count // 2)]
    images = np.stack([r[0] for r in rows])
    maps = {name: np.concatenate([fn(data["anomaly_sets"][s][0][:count // 2])
                                  for s in data["anomaly_sets"]]) for name, fn in model_maps}
    return plots.plot_score_maps(path, images, maps, np.stack([r[1] for r in rows]))


# The summary table's rows: each model's own score (and the hybrid's parts) and the baselines.
SUMMARY_SCORES = {
    "softmax": ("max_softmax", "energy", "mahalanobis"),
    "gmmseg": ("model", "max_softmax"),
    **{name: ("model", "model:discriminative", "model:generative")
       for name in ("densehybrid_real", "densehybrid_synthetic", "gmmseg_dp_real")},
}


def plot_gss(path, model, data, count=4):
    """GSS's pictures of test scenes: image, maskige, the frozen tokenizer's reconstruction of
    it, the maskige the prior predicts, and the mask read off it (class colours)."""
    images, labels = data["test"][0][:count], data["test"][1][:count]
    maskige = model.codec.encode(labels)
    tokenizer = model.tokenizer
    reconstructed = tokenizer.decode(tokenizer.encode(maskige))
    predicted = model.predict(images, verbose=0).argmax(-1)
    from keras_gss import plots

    colours = model.codec.colours / 255.0
    return plots.plot_maskiges(path, images, {
        "maskige (ground truth)": unmap_pixels(ops.convert_to_numpy(maskige)),
        "tokenizer reconstruction": unmap_pixels(ops.convert_to_numpy(reconstructed)),
        "predicted maskige": unmap_pixels(model.predict_maskige(images, verbose=0)),
        "predicted mask": colours[predicted],
    }, title=f"{model.maskige_decoder} decoding")


def summary_table(results):
    """mIoU, then AUROC / AP / FPR95 / open-mIoU per set and AP against known digits."""
    columns = [(s, m) for s in ("near-OOD", "far-OOD") for m in ("auroc", "ap", "fpr95",
                                                                  "open_miou")]
    columns += [(f"{s}/digits", "ap") for s in ("near-OOD", "far-OOD")]
    names = {"auroc": "AUROC", "ap": "AP", "fpr95": "FPR95", "open_miou": "oIoU"}
    lines = ["| model | score | mIoU | " + " | ".join(f"{s} {names[m]}" for s, m in columns)
             + " |", "|" + "---|" * (3 + len(columns))]
    for name, scores in SUMMARY_SCORES.items():
        for score in scores:
            if name not in results or score not in results[name]["near-OOD"]:
                continue
            cells = [f"{100 * results[name][s][score][m]:.1f}" for s, m in columns]
            lines.append(f"| {name} | {score} | {100 * results[name]['closed_set']['miou']:.1f}"
                         f" | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mahalanobis_maps(model, data, count=200):
    """Mahalanobis baseline on the softmax model's stride-4 decoder features."""
    images, labels = data["train"][0][:count], data["train"][1][:count]
    features = model.backbone.predict(images, verbose=0)
    stride = data["image_size"] // features.shape[1]
    coarse = labels[:, stride // 2::stride, stride // 2::stride]
    scorer = MahalanobisScore(reg_covar=1e-4).fit(features, coarse)
    maps = {}
    for name, (set_images, _, _) in data["anomaly_sets"].items():
        distance = scorer.score(model.backbone.predict(set_images, verbose=0))
        upsampled = ops.image.resize(distance[..., None], (data["image_size"],) * 2)
        maps[name] = {"mahalanobis": ops.convert_to_numpy(upsampled)[..., 0]}
    return maps


def evaluate_model(model, data, name, out_dir=None, extra_scores=None):
    """`keras_gss.evaluate` on the test split and both anomaly sets, by negative group."""
    return keras_gss.evaluate(
        model, *data["test"], anomaly_sets=data["anomaly_sets"], extra_scores=extra_scores,
        negative_groups=DigitScenes.negative_groups, out_dir=out_dir, name=name, verbose=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/quickstart")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--steps", type=int, default=2000, help="training steps per model")
    parser.add_argument("--finetune-steps", type=int, default=FINETUNE_STEPS,
                        help="DenseHybrid fine-tuning steps (from the trained closed-set models)")
    parser.add_argument("--flow-pretrain-steps", type=int, default=FLOW_PRETRAIN_STEPS,
                        help="synthetic negatives: the flow's steps on inlier patches first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-scenes", type=int, default=2000)
    parser.add_argument("--test-scenes", type=int, default=200)
    parser.add_argument("--gmmseg", default="{}",
                        help='JSON of GMMSegImageSegmenter options, e.g. \'{"class_norm": false}\'')
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    keras_gss.utils.quiet.quiet_frameworks()
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    data = load_data(args.image_size, args.train_scenes, args.test_scenes)
    print(f"DigitScenes: {args.train_scenes} train, {args.test_scenes} per test split, "
          f"{args.image_size}×{args.image_size}, {data['num_classes']} classes "
          f"({time.time() - started:.0f} s)")
    results, timings, models = {}, {}, {}
    for name in ("softmax", "gmmseg"):
        models[name], timings[name] = train_model(name, data, args.steps, args.batch_size,
                                                  args.seed, options=json.loads(args.gmmseg))
    for name, base, negatives in (("densehybrid_real", "softmax", "real"),
                                  ("densehybrid_synthetic", "softmax", "synthetic"),
                                  ("gmmseg_dp_real", "gmmseg", "real")):
        models[name], timings[name] = finetune_with_negatives(
            models[base], negatives, data, args.finetune_steps, args.seed,
            flow_pretrain_steps=args.flow_pretrain_steps)
    for name, model in models.items():
        extra = mahalanobis_maps(model, data) if name == "softmax" else None
        results[name] = evaluate_model(model, data, name, args.out, extra)
        model.save_to_preset(os.path.join(args.out, f"{name}_preset"))
    hybrid = models["densehybrid_real"]
    print("wrote " + plot_score_maps(os.path.join(args.out, "score_maps.png"), [
        ("softmax: max softmax", lambda x: models["softmax"].predict_anomaly(x, verbose=0)),
        ("DenseHybrid: −LSE(s)",
         lambda x: hybrid.predict_outputs(x, verbose=0)["generative_score"]),
        ("DenseHybrid: ln P(d_out|x)",
         lambda x: hybrid.predict_outputs(x, verbose=0)["discriminative_score"]),
        ("DenseHybrid: hybrid", lambda x: hybrid.predict_anomaly(x, verbose=0)),
        ("synthetic negatives: hybrid",
         lambda x: models["densehybrid_synthetic"].predict_anomaly(x, verbose=0)),
        ("GMMSeg + dataset posterior",
         lambda x: models["gmmseg_dp_real"].predict_anomaly(x, verbose=0)),
    ], data))

    table = keras_gss.format_table(results)
    print("\n" + table)
    summary = summary_table(results)
    print("\nSummary (each model's own score, the hybrid's parts, baselines):\n\n" + summary)
    print("\nper-class IoU (%): " + "; ".join(
        f"{name} " + " ".join(f"{100 * v:.0f}" for v in r["closed_set"]["iou"])
        for name, r in results.items()) + f"  ({', '.join(DigitScenes.class_names)})")
    print("\n(mIoU on the closed-set test split; AUROC / AP / FPR95 in %, anomalies "
          "positive, void excluded; '<set>/textures' and '<set>/digits' score the anomalies "
          "against those known pixels only; oIoU is open-mIoU at the TPR-95% threshold of "
          "the other half of the set; model:discriminative and model:generative are the "
          "hybrid score's two parts; training " + ", ".join(
              f"{name} {seconds:.0f} s" for name, seconds in timings.items())
          + f"; total {time.time() - started:.0f} s)")
    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump({"results": results, "train_seconds": timings, "args": vars(args),
                   "total_seconds": time.time() - started}, file, indent=2)
    with open(os.path.join(args.out, "results.md"), "w") as file:
        file.write(table + "\n\n" + summary + "\n")
    print(f"wrote {args.out}/results.md, results.json, figures and presets")


if __name__ == "__main__":
    main()

"""DenseHybrid's inference overhead over the same softmax model, and the flow's cost per step.

Inference: SegFormer-B0 and DeepLabV3+ ResNet-50 at 512×512 (C=19, batch 1),
`SoftmaxImageSegmenter` against `DenseHybridImageSegmenter` on the same
backbone, each the `tf.function` of its serving graph (logits and anomaly
score: max softmax for the softmax model; the hybrid with both parts for
DenseHybrid), median of `--runs` warm runs interleaved round-robin, and the
multiply-adds of each graph from TensorFlow's profiler. The paper's figure:
0.1 GFLOP and 2.8 ms on 2 MP images (Table XI); our target is ≤ 1% of time
and of multiply-adds.

Training: one step of the DigitScenes DenseHybrid model (96×96, batch 16)
with real negatives (pasted in tf.data, so free in the step) against the
same step with synthetic negatives (`NormalizingFlow` samples pasted
in-graph, the flow's maximum likelihood, and the Jensen-Shannon copy of 4
images), and the flow's sampling alone (16 patches of 32×32).

    python benchmarks/densehybrid_overhead.py   # appends to benchmarks/RESULTS.md
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))

import keras_gss  # noqa: E402  (first: it keeps TensorFlow's C++ start-up log quiet)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from common import interleaved_medians  # noqa: E402
from common import markdown_table  # noqa: E402
from common import record  # noqa: E402
from inference_overhead import multiply_adds  # noqa: E402


def _backbone(family, size):
    shape = (size, size, 3)
    if family == "SegFormer-B0":
        return keras_gss.models.segformer_backbone("b0", image_shape=shape)
    return keras_gss.models.deeplabv3plus_backbone("resnet50", image_shape=shape)


def inference(families, size, runs):
    image = tf.constant(np.random.default_rng(0).normal(size=(1, size, size, 3)), tf.float32)
    rows = []
    for family in families:
        functions, macs = {}, {}
        for name, cls in (("softmax", keras_gss.models.SoftmaxImageSegmenter),
                          ("DenseHybrid", keras_gss.models.DenseHybridImageSegmenter)):
            keras.utils.set_random_seed(0)
            serving = cls(_backbone(family, size), num_classes=19)._graphs.serving
            functions[name] = tf.function(lambda x, m=serving: m(x, training=False))
            macs[name] = multiply_adds(functions[name], (1, size, size, 3))
        medians = interleaved_medians(functions, image, runs)
        base, hybrid = medians["softmax"], medians["DenseHybrid"]
        rows.append([family, f"{1000 * base:.1f}", f"{1000 * hybrid:.1f}",
                     f"{100 * (hybrid - base) / base:+.2f}%", f"{macs['softmax'] / 1e9:.3f}",
                     f"{macs['DenseHybrid'] / 1e9:.3f}",
                     f"{(macs['DenseHybrid'] - macs['softmax']) / 1e6:.2f}",
                     f"{100 * (macs['DenseHybrid'] - macs['softmax']) / macs['softmax']:+.3f}%"])
    return markdown_table(["backbone", "softmax ms", "DenseHybrid ms", "time overhead",
                           "softmax GMACs", "DenseHybrid GMACs", "extra MMACs",
                           "extra multiply-adds"], rows)


def training(runs):
    import quickstart

    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 96, 96, 3)).astype("float32")
    labels = rng.integers(0, 9, size=(16, 96, 96)).astype("int32")
    real_labels = labels.copy()
    real_labels[:, 30:62, 30:62] = 254  # a pasted real negative per image
    steps, models = {}, {}
    for name, flow in (("real negatives", None), ("synthetic negatives", True)):
        keras.utils.set_random_seed(0)
        models[name] = keras_gss.models.DenseHybridImageSegmenter(
            quickstart.backbone(96), num_classes=9,
            flow=keras_gss.models.NormalizingFlow(**quickstart.FLOW_OPTIONS) if flow else None,
            patch_size=quickstart.PATCH_SIZE)
        models[name].compile(optimizer=keras.optimizers.AdamW(1e-4))
        target = labels if flow else real_labels
        steps[name] = lambda _, m=models[name], y=target: m.train_on_batch(images, y)
    flow = models["synthetic negatives"].flow
    steps["flow sampling alone (16 × 32²)"] = tf.function(
        lambda _: flow.sample(16, quickstart.PATCH_SIZE, quickstart.PATCH_SIZE))
    medians = interleaved_medians(steps, None, runs)
    base = medians["real negatives"]
    rows = [[name, f"{1000 * value:.1f}", f"{value / base:.2f}×"]
            for name, value in medians.items()]
    return markdown_table(["DigitScenes step (96², batch 16)", "median ms",
                           "vs a real-negative step"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--families", default="SegFormer-B0,DeepLabV3+ ResNet-50")
    args = parser.parse_args()
    keras_gss.utils.quiet.quiet_frameworks()
    table = inference(args.families.split(","), args.image_size, args.runs)
    steps = training(args.runs)
    notes = (f"Inference: batch 1, {args.image_size}×{args.image_size}, C=19, median of "
             f"{args.runs} warm runs (interleaved); each model's serving graph (logits and "
             "anomaly score). GMACs from TensorFlow's profiler on the frozen graph. Training: "
             f"median of {args.runs} `train_on_batch` calls, interleaved.\n\n{steps}")
    record("DenseHybrid: inference overhead and the flow's cost per step",
           "python benchmarks/densehybrid_overhead.py " + " ".join(sys.argv[1:]), table, notes)


if __name__ == "__main__":
    main()

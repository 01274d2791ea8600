"""L-GMM's overhead over the softmax model on the same backbone: inference and a training step.

Inference (batch 1): SegFormer-B0 at 512×512 (C=19) as segmenters, and
ResNet-50 at 224×224 (C=1000) as image classifiers; `SoftmaxImageSegmenter`
/ `SoftmaxImageClassifier` against `LGMMImageSegmenter` / `LGMMImageClassifier`
(G = 3, d = 128), each the `tf.function` of its serving graph (logits and
anomaly score), median of `--runs` warm runs interleaved round-robin, and
the multiply-adds of each graph from TensorFlow's profiler. The paper
reports 211 vs 238 fps for ResNet-101 on ImageNet and 13.21 vs 14.37 fps
for DeepLabV3 (App. F, garbled; specs §2.11).

Training (`train_on_batch`, median of `--runs`, interleaved): the DigitScenes
segmenter (96×96, batch 16, the quick start's MiT) and the digits
classifier (28×28, batch 64, `examples/open_set_digits.py`'s CNN); the
L-GMM step adds `L_G` over the batch and the 2000-per-class memory, the
memory write and the count updates.

    python benchmarks/lgmm_overhead.py   # appends to benchmarks/RESULTS.md
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
from keras_gss.models import LGMMImageClassifier  # noqa: E402
from keras_gss.models import LGMMImageSegmenter  # noqa: E402
from keras_gss.models import SoftmaxImageClassifier  # noqa: E402
from keras_gss.models import SoftmaxImageSegmenter  # noqa: E402

# (label, input shape, classes, backbone builder, softmax task, L-GMM task)
INFERENCE = (
    ("SegFormer-B0 segmenter", (512, 512, 3), 19,
     lambda shape: keras_gss.models.segformer_backbone("b0", image_shape=shape),
     SoftmaxImageSegmenter, LGMMImageSegmenter),
    ("ResNet-50 classifier", (224, 224, 3), 1000,
     lambda shape: keras_gss.models.backbones.resnet_backbone("resnet50", image_shape=shape),
     SoftmaxImageClassifier, LGMMImageClassifier),
)


def inference(runs):
    rows = []
    for label, shape, classes, backbone, softmax, lgmm in INFERENCE:
        image = tf.constant(np.random.default_rng(0).normal(size=(1,) + shape), tf.float32)
        functions, macs = {}, {}
        for name, cls in (("softmax", softmax), ("L-GMM", lgmm)):
            keras.utils.set_random_seed(0)
            model = cls(backbone(shape), num_classes=classes)
            serving = model._graphs.serving
            functions[name] = tf.function(lambda x, m=serving: m(x, training=False))
            macs[name] = multiply_adds(functions[name], (1,) + shape)
        medians = interleaved_medians(functions, image, runs)
        base, ours = medians["softmax"], medians["L-GMM"]
        rows.append([label, f"{shape[0]}²", f"{1000 * base:.1f}", f"{1000 * ours:.1f}",
                     f"{100 * (ours - base) / base:+.1f}%", f"{macs['softmax'] / 1e9:.3f}",
                     f"{macs['L-GMM'] / 1e9:.3f}",
                     f"{100 * (macs['L-GMM'] - macs['softmax']) / macs['softmax']:+.2f}%"])
    return markdown_table(["model", "input", "softmax ms", "L-GMM ms", "time overhead",
                           "softmax GMACs", "L-GMM GMACs", "extra multiply-adds"], rows)


def training(runs):
    import open_set_digits
    import quickstart

    rng = np.random.default_rng(0)
    scenes = rng.normal(size=(16, 96, 96, 3)).astype("float32")
    scene_labels = rng.integers(0, 9, size=(16, 96, 96)).astype("int32")
    digits = rng.random((64, 28, 28, 1)).astype("float32")
    digit_labels = (np.arange(64) % 6).astype("int32")
    steps = {}
    for name, build, x, y in (
            ("segmenter", lambda cls: cls(quickstart.backbone(96), num_classes=9),
             scenes, scene_labels),
            ("classifier", lambda cls: cls(keras_gss.models.DigitCNNBackbone(
                filters=open_set_digits.FILTERS), num_classes=6), digits, digit_labels)):
        for kind, cls in (("softmax", SoftmaxImageSegmenter if name == "segmenter"
                           else SoftmaxImageClassifier),
                          ("L-GMM", LGMMImageSegmenter if name == "segmenter"
                           else LGMMImageClassifier)):
            keras.utils.set_random_seed(0)
            model = build(cls)
            model.compile(optimizer=keras.optimizers.AdamW(1e-4))
            steps[(name, kind)] = lambda _, m=model, x=x, y=y: m.train_on_batch(x, y)
    medians = interleaved_medians(steps, None, runs)
    rows = []
    for name, label in (("segmenter", "DigitScenes segmenter (96², batch 16)"),
                        ("classifier", "digits classifier (28², batch 64)")):
        base, ours = medians[(name, "softmax")], medians[(name, "L-GMM")]
        rows.append([label, f"{1000 * base:.1f}", f"{1000 * ours:.1f}", f"{ours / base:.2f}×"])
    return markdown_table(["training step", "softmax ms", "L-GMM ms", "ratio"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    keras_gss.utils.quiet.quiet_frameworks()
    table = inference(args.runs)
    steps = training(args.runs)
    notes = (f"Inference: batch 1, median of {args.runs} warm runs (interleaved); each model's "
             "serving graph (logits and anomaly score: max softmax for the softmax model, "
             "−max_y log p(z|y) for L-GMM). GMACs from TensorFlow's profiler on the frozen "
             f"graph. Training: median of {args.runs} `train_on_batch` calls, interleaved, "
             "the memory filling up as the steps go (2000 per class).\n\n" + steps)
    record("L-GMM: inference and training-step overhead over softmax",
           "python benchmarks/lgmm_overhead.py " + " ".join(sys.argv[1:]), table, notes)


if __name__ == "__main__":
    main()

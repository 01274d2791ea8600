"""Inference overhead of the GMM head over a softmax head, side by side.

SegFormer-B0 and DeepLabV3+ ResNet-50 at 512×512, batch 1: the keras-hub
softmax segmenter against `GMMSegImageSegmenter` (C=19, M=5 and C=150, M=8)
on the same backbone architecture. Each model is a `tf.function` of the
forward pass; median of `--runs` warm runs, models interleaved round-robin
so drifts in machine speed hit all of them alike. Also counts each model's
multiply-adds with TensorFlow's profiler, to give the GMM head's share of
the compute: the floor of its overhead on a compute-bound machine.

    python benchmarks/inference_overhead.py   # appends to benchmarks/RESULTS.md
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gss  # noqa: E402
from common import interleaved_medians  # noqa: E402
from common import markdown_table  # noqa: E402
from common import record  # noqa: E402


def multiply_adds(function, shape):
    """Multiply-adds of a traced forward pass (TF profiler float ops / 2)."""
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profile = tf.compat.v1.profiler.profile(
        graph=graph, run_meta=tf.compat.v1.RunMetadata(), cmd="op", options=options)
    return profile.total_float_ops / 2


def build(family, head, size):
    shape = (size, size, 3)
    if family == "SegFormer-B0":
        backbone = keras_gss.models.segformer_backbone("b0", image_shape=shape)
    else:
        backbone = keras_gss.models.deeplabv3plus_backbone("resnet50", image_shape=shape)
    kind, classes, components = head
    if kind == "softmax":  # the same base and stride-4 features, a 1×1 classifier
        return keras_gss.models.SoftmaxImageSegmenter(backbone, num_classes=classes)
    return keras_gss.models.GMMSegImageSegmenter(
        backbone, num_classes=classes, num_components=components, embedding_dim=64,
        memory_size=1)  # the memory is training-only; keep it small here


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--families", default="SegFormer-B0,DeepLabV3+ ResNet-50")
    args = parser.parse_args()
    size = args.image_size
    heads = [("softmax", 19, None), ("GMM", 19, 5), ("softmax", 150, None), ("GMM", 150, 8)]
    image = tf.constant(np.random.default_rng(0).normal(size=(1, size, size, 3)), tf.float32)
    rows, summary = [], []
    for family in args.families.split(","):
        functions, macs = {}, {}
        features = keras_gss.models.dense_features(build(family, ("GMM", 19, 5), size).backbone)
        feature_macs = multiply_adds(tf.function(lambda x: features(x, training=False)),
                                     (1, size, size, 3))
        for head in heads:
            keras.utils.set_random_seed(0)
            model = build(family, head, size)
            functions[head] = tf.function(lambda x, m=model: m(x, training=False))
            macs[head] = multiply_adds(functions[head], (1, size, size, 3))
        medians = interleaved_medians(functions, image, args.runs)
        for head in heads:
            kind, classes, components = head
            base = ("softmax", classes, None)
            median, base_median = medians[head], medians[base]
            overhead = (median - base_median) / base_median
            extra = (macs[head] - macs[base]) / macs[base]
            label = f"{kind} C={classes}" + (f", M={components}" if components else "")
            share = (macs[head] - feature_macs) / macs[head]
            rows.append([family, label, f"{1000 * median:.1f}", f"{macs[head] / 1e9:.2f}",
                         f"{100 * share:.1f}%",
                         "-" if kind == "softmax" else f"{100 * overhead:+.1f}%",
                         "-" if kind == "softmax" else f"{100 * extra:+.1f}%"])
            if kind == "GMM":
                summary.append((family, classes, components, overhead, extra, share))
    table = markdown_table(["backbone", "head", "median ms", "GMACs", "head share of GMACs",
                            "time overhead vs softmax", "extra multiply-adds"], rows)
    notes = (f"Batch 1, {size}×{size}, median of {args.runs} warm runs (interleaved). "
             "Overheads are against `softmax` (`SoftmaxImageSegmenter`): the same base, "
             "backbone and stride-4 features as the GMM model, a 1×1 classifier, logits "
             "upsampled. "
             "GMACs from TensorFlow's profiler on the frozen forward graph (ops it has no "
             "cost model for count as 0). `head share`: the head's part of the "
             "model's multiply-adds (all but the backbone's dense features). `extra "
             "multiply-adds` over `softmax` is the compute floor of the overhead.")
    record("Inference overhead of the GMM head", "python benchmarks/inference_overhead.py "
           + " ".join(sys.argv[1:]), table, notes)
    for family, classes, components, overhead, extra, share in summary:
        print(f"{family} C={classes} M={components}: overhead {100 * overhead:+.1f}% "
              f"(extra multiply-adds {100 * extra:+.1f}%, head share {100 * share:.1f}%, "
              f"overhead / share = {overhead / share:.2f})")


if __name__ == "__main__":
    main()

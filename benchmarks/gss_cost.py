"""GSS's inference cost against the softmax segmenter on the same backbone, side by side.

GSS decodes its argmax tokens with the frozen tokenizer's decoder before it
reads the classes off the maskige: that decoder is the price of the method.
Two settings, each a `tf.function` forward pass at batch 1, median of
`--runs` warm runs interleaved round-robin, and multiply-adds from
TensorFlow's profiler:

- the DigitScenes presets (the quick start's small MiT at 96×96; the
  small natural-picture tokenizer, 4×, 1024 tokens) against softmax;
- SegFormer-B0 with DALL-E's tokenizer (8×, 8192 tokens, its maskige at 2×)
  against softmax with ADE20K's 150 classes, at `--image-size` (timing) and
  at 512×512 (multiply-adds).

Also the memory of the 8192-way token logits at 512×512 (tokens at 1/4:
128 × 128 × 8192 float32), measured as the tensor the prior returns, and the
peak memory each 512×512 forward pass adds, in fresh processes.

    python benchmarks/gss_cost.py   # appends to benchmarks/RESULTS.md
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
from common import peak_extra_mb  # noqa: E402
from common import record  # noqa: E402
from inference_overhead import multiply_adds  # noqa: E402

SETUP = """
import numpy as np, tensorflow as tf, keras_gss
size = {size}
backbone = keras_gss.models.segformer_backbone("b0", image_shape=(size, size, 3))
if "{kind}" == "softmax":
    model = keras_gss.models.SoftmaxImageSegmenter(backbone, num_classes=150)
else:
    model = keras_gss.models.GSSImageSegmenter(
        backbone, num_classes=150, tokenizer="gss_tokenizer_dall_e", mla_depth=2)
run = tf.function(lambda x: model(x, training=False))
image = tf.zeros((1, size, size, 3))
np.asarray(run(image))
"""


def build(kind, setting, size):
    """A softmax or a GSS-FF model of the setting, untrained."""
    keras.utils.set_random_seed(0)
    if setting == "digitscenes":
        name = "softmax_segformer_digitscenes" if kind == "softmax" \
            else "gss_ff_segformer_digitscenes"
        model = keras_gss.from_preset(name, load_weights=False, image_shape=(size, size, 3))
    else:
        backbone = keras_gss.models.segformer_backbone("b0", image_shape=(size, size, 3))
        if kind == "softmax":
            model = keras_gss.models.SoftmaxImageSegmenter(backbone, num_classes=150)
        else:
            model = keras_gss.models.GSSImageSegmenter(
                backbone, num_classes=150, tokenizer="gss_tokenizer_dall_e", mla_depth=2)
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=256,
                        help="timing size of the SegFormer-B0 + DALL-E setting")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for setting, size, label in (("digitscenes", 96, "DigitScenes presets, small MiT"),
                                 ("b0", args.image_size, "SegFormer-B0, DALL-E tokenizer")):
        functions, macs = {}, {}
        for kind in ("softmax", "gss"):
            model = build(kind, setting, size)
            functions[kind] = tf.function(lambda x, m=model: m(x, training=False))
            macs[kind] = multiply_adds(functions[kind], (1, size, size, 3))
        image = tf.constant(np.random.default_rng(0).normal(size=(1, size, size, 3)),
                            tf.float32)
        medians = interleaved_medians(functions, image, args.runs)
        rows.append([label, f"{size}×{size}", f"{1000 * medians['softmax']:.1f}",
                     f"{1000 * medians['gss']:.1f}",
                     f"{medians['gss'] / medians['softmax']:.2f}×",
                     f"{macs['softmax'] / 1e9:.2f}", f"{macs['gss'] / 1e9:.2f}",
                     f"{macs['gss'] / macs['softmax']:.2f}×"])
    # Multiply-adds at 512² (profiled, not run), and the token logits' memory there.
    functions = {kind: build(kind, "b0", 512) for kind in ("softmax", "gss")}
    macs = {kind: multiply_adds(tf.function(lambda x, m=m: m(x, training=False)),
                                (1, 512, 512, 3)) for kind, m in functions.items()}
    gss = functions["gss"]
    logits = gss._graphs.train(tf.zeros((1, 512, 512, 3)), training=False)
    token_logits = np.asarray(logits["dense_token_logits"])
    peaks = {kind: peak_extra_mb(SETUP.format(size=512, kind=kind), "np.asarray(run(image))")[0]
             for kind in ("softmax", "gss")}
    table = markdown_table(
        ["setting", "size", "softmax ms", "GSS-FF ms", "time ratio", "softmax GMACs",
         "GSS-FF GMACs", "MAC ratio"], rows)
    notes = (f"Batch 1, median of {args.runs} warm runs (interleaved). At 512×512, "
             f"SegFormer-B0 + DALL-E: {macs['softmax'] / 1e9:.1f} GMACs (softmax, 150 classes) "
             f"against {macs['gss'] / 1e9:.1f} (GSS-FF), {macs['gss'] / macs['softmax']:.1f}×. "
             f"The 8192-way token logits at 512×512: shape {token_logits.shape}, "
             f"{token_logits.nbytes / 2**20:.0f} MiB in float32 per image. Peak memory a "
             f"512×512 forward pass adds (fresh process each): softmax "
             f"{peaks['softmax']:.0f} MB, GSS-FF {peaks['gss']:.0f} MB. The tokenizers "
             "are untrained (cost does not depend on the weights).")
    record("GSS inference cost against softmax", "python benchmarks/gss_cost.py "
           + " ".join(sys.argv[1:]), table, notes)


if __name__ == "__main__":
    main()

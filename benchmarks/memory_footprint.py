"""Feature-memory footprint, and what cutting it does to the fitted GMM.

1. Bytes of the `FeatureMemory` queue at the paper's settings (ADE20K:
   C=150, M=8; COCO-Stuff: C=171, M=5; Cityscapes: C=19, M=5; D=64, 32 000
   entries per queue) for each storage option (dtype × capacity), with the
   measured resident size of building the ADE20K memory in a fresh process,
   and of the ADE20K preset's model for inference and for training.
2. Effect on the fitted GMM: a synthetic mixture (`--classes` classes × M=8
   anisotropic components on the unit sphere, D=64) fills memories of each
   option; one M-step (no momentum) fits a GMM from each; the mean held-out
   log-likelihood is compared with the full-precision, full-size memory's.

    python benchmarks/memory_footprint.py     # appends to benchmarks/RESULTS.md
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from common import markdown_table  # noqa: E402
from common import peak_extra_mb  # noqa: E402
from common import record  # noqa: E402
from keras_gss.ops import momentum_m_step  # noqa: E402
from keras_gss.layers import FeatureMemory  # noqa: E402
from keras_gss.ops import diagonal_gaussian_log_likelihood  # noqa: E402

SETTINGS = {"ADE20K": (150, 8), "COCO-Stuff": (171, 5), "Cityscapes": (19, 5)}
OPTIONS = [("float32", 32000), ("float16", 32000), ("bfloat16", 32000), ("float32", 8000),
           ("float16", 8000), ("float16", 4000)]
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2}
DIM = 64


def sample_mixture(rng, means, spreads, count):
    """`count` unit-norm samples per component: normalize(μ + σ ⊙ ε)."""
    c, m, d = means.shape
    noise = rng.normal(size=(c, m, count, d)).astype(np.float32) * spreads[:, :, None, :]
    x = means[:, :, None, :] + noise
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def fitted_log_likelihood(samples, held_out, dtype, capacity, floor=0.01):
    c, m, _, d = samples.shape
    memory = FeatureMemory(c, m, d, capacity=capacity, samples_per_component=capacity,
                           correct_only=False, storage_dtype=dtype)
    # One write fills every queue with its newest `capacity` samples.
    keep = samples[:, :, -capacity:]
    labels = np.repeat(np.arange(c), m * capacity)
    components = np.tile(np.repeat(np.arange(m), capacity), c)
    memory.write(keep.reshape(-1, d), labels, components)
    count, mean, mean_square = memory.component_moments()
    means, scales = momentum_m_step(count, mean, mean_square, np.zeros((c, m, d), np.float32),
                                    np.ones((c, m, d), np.float32), 0.0, 0.0, floor)
    ll = diagonal_gaussian_log_likelihood(held_out.reshape(-1, d), means, scales)
    ll = ops.convert_to_numpy(ll).reshape(c, m, -1, c, m)
    # Each held-out sample scored by its own class's mixture (winner-take-all).
    own = np.stack([ll[k, :, :, k, :].max(-1) for k in range(c)])
    return float(own.mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=8,
                        help="classes of the synthetic mixture (queues are independent, "
                             "so a few classes stand for all 150)")
    parser.add_argument("--held-out", type=int, default=1000)
    args = parser.parse_args()

    rows = []
    for name, (c, m) in SETTINGS.items():
        row = [name, f"{c}×{m}"]
        for dtype, capacity in OPTIONS:
            row.append(f"{c * m * capacity * DIM * ITEMSIZE[dtype] / 1e9:.2f}")
        rows.append(row)
    header = ["setting", "C×M"] + [f"{d} × {q}" for d, q in OPTIONS]
    footprint = markdown_table(header, rows)

    measured = {}
    for dtype, capacity in (("float16", 4000), ("float16", 8000)):
        peak, output = peak_extra_mb(
            "from keras_gss.layers import FeatureMemory",
            f"memory = FeatureMemory(150, 8, 64, capacity={capacity}, storage_dtype='{dtype}')\n"
            "memory.build()")
        measured[(dtype, capacity)] = None if peak is None else peak * 2**20 / 1e9
    measured_note = "; ".join(
        f"ADE20K {d} × {q}: {v:.2f} GB" if v is not None else f"ADE20K {d} × {q}: failed"
        for (d, q), v in measured.items())

    # The memory is training state: a model allocates it only when training starts.
    preset = "gmmseg_segformer_b5_ade20k"
    model_note = []
    for label, extra in (("as built or loaded for inference", ""),
                         ("once training allocates the memory", "\nmodel.feature_memory.build()")):
        peak, _ = peak_extra_mb("import keras_gss", f"model = keras_gss.from_preset("
                                f"{preset!r}, load_weights=False){extra}")
        model_note.append(f"{label} {'failed' if peak is None else f'{peak * 2**20 / 1e9:.2f} GB'}")
    model_note = f"Resident size of the `{preset}` model (float32 × 32 000): " + ", ".join(
        model_note) + "."

    rng = np.random.default_rng(0)
    c, m = args.classes, 8
    means = rng.normal(size=(c, m, DIM)).astype(np.float32)
    means /= np.linalg.norm(means, axis=-1, keepdims=True)
    spreads = rng.uniform(0.02, 0.15, size=(c, m, DIM)).astype(np.float32)
    samples = sample_mixture(rng, means, spreads, 32000)
    held_out = sample_mixture(rng, means, spreads, args.held_out)
    reference = fitted_log_likelihood(samples, held_out, "float32", 32000)
    fit_rows = []
    for dtype, capacity in OPTIONS:
        value = fitted_log_likelihood(samples, held_out, dtype, capacity)
        ade_gb = 150 * 8 * capacity * DIM * ITEMSIZE[dtype] / 1e9
        fit_rows.append([f"{dtype} × {capacity}", f"{ade_gb:.2f}", f"{value:.4f}",
                         f"{100 * (value - reference) / abs(reference):+.3f}%"])
    fit = markdown_table(["memory (dtype × entries per queue)", "ADE20K GB",
                          "mean held-out log-likelihood", "vs float32 × 32000"], fit_rows)
    notes = (f"Queue GB = C·M·entries·D·bytes. Measured resident size of building the memory "
             f"in a fresh process: {measured_note}. Fit: {c} classes × {m} components, D={DIM}, "
             f"32 000 samples per component drawn as normalize(μ + σ⊙ε), σ per dimension in "
             f"[0.02, 0.15]; one M-step without momentum (variance floor 0.01); "
             f"{args.held_out} held-out samples per component scored by their class's mixture. "
             + model_note)
    record("Feature-memory footprint and fitted GMM", "python benchmarks/memory_footprint.py "
           + " ".join(sys.argv[1:]), "GB per setting and option:\n\n" + footprint + "\n\n" + fit,
           notes)


if __name__ == "__main__":
    main()

"""Head cost and memory: our log-likelihood vs a broadcast one vs scikit-learn.

On a `(2, 128, 128, 256)` feature map at ADE20K scale (C=150, M=8, D=64):
the time and peak memory of `diagonal_gaussian_log_likelihood` (one matrix
product over `[x², x]`) against the straightforward broadcast of the same
formula (an `(N, C·M, D)` tensor), and against scikit-learn's diagonal
`GaussianMixture`, which also cross-checks the numbers. Each peak is measured
in a fresh process, as the resident memory the computation adds to its set-up. Also times the whole head (projection included).

    python benchmarks/head_cost.py            # appends to benchmarks/RESULTS.md
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import markdown_table  # noqa: E402
from common import median_seconds  # noqa: E402
from common import peak_extra_mb  # noqa: E402
from common import record  # noqa: E402

SETUP = """
import os, numpy as np, tensorflow as tf
from keras import ops
from keras_gss.layers import GaussianMixtureHead
from keras_gss.ops import diagonal_gaussian_log_likelihood
C, M, D, SHAPE = {classes}, {components}, {dim}, {shape}
rng = np.random.default_rng(0)
features = rng.normal(size=SHAPE).astype("float32")
x = rng.normal(size=SHAPE[:-1] + (D,)).astype("float32")
x /= np.linalg.norm(x, axis=-1, keepdims=True)
means = rng.normal(size=(C, M, D)).astype("float32")
means /= np.linalg.norm(means, axis=-1, keepdims=True)
scales = rng.uniform(0.1, 0.3, size=(C, M, D)).astype("float32")
x_t, means_t, scales_t = tf.constant(x), tf.constant(means), tf.constant(scales)


@tf.function
def ours(x):
    return diagonal_gaussian_log_likelihood(x, means_t, scales_t)


@tf.function
def broadcast(x):
    # The formula as written: (N, C*M, D) differences, squared and summed.
    flat = tf.reshape(x, (-1, 1, D))
    mu = tf.reshape(means_t, (1, C * M, D))
    sigma = tf.reshape(scales_t, (1, C * M, D))
    z = (flat - mu) / sigma
    ll = (-0.5 * tf.reduce_sum(z * z, -1) - tf.reduce_sum(tf.math.log(sigma), -1)
          - 0.5 * D * np.log(2 * np.pi))
    return tf.reshape(ll, tuple(x.shape[:-1]) + (C, M))
"""

RUN = {
    "ours": "ours(x_t).numpy()",
    "broadcast": "broadcast(x_t).numpy()",
    "sklearn": """
from sklearn.mixture import GaussianMixture
gmm = GaussianMixture(C * M, covariance_type="diag")
gmm.weights_ = np.full(C * M, 1.0 / (C * M))
gmm.means_ = means.reshape(-1, D).astype(np.float64)
gmm.covariances_ = (scales.reshape(-1, D) ** 2).astype(np.float64)
gmm.precisions_cholesky_ = 1.0 / scales.reshape(-1, D).astype(np.float64)
gmm.score_samples(x.reshape(-1, D))
""",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=150)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--shape", default="2,128,128,256")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    setup = SETUP.format(classes=args.classes, components=args.components,
                         dim=args.dim, shape=shape)
    namespace = {}
    exec(setup, namespace)
    import numpy as np
    from sklearn.mixture import GaussianMixture
    from scipy.special import logsumexp

    c, m, d = args.classes, args.components, args.dim
    x, means, scales = namespace["x"], namespace["means"], namespace["scales"]
    ours = namespace["ours"](namespace["x_t"]).numpy()

    # Correctness: scikit-learn's mixture log-density from our component log-densities.
    gmm = GaussianMixture(c * m, covariance_type="diag")
    gmm.weights_ = np.full(c * m, 1.0 / (c * m))
    gmm.means_ = means.reshape(-1, d).astype(np.float64)
    gmm.covariances_ = (scales.reshape(-1, d) ** 2).astype(np.float64)
    gmm.precisions_cholesky_ = 1.0 / scales.reshape(-1, d).astype(np.float64)
    sample = x.reshape(-1, d)[:4096]
    reference = gmm.score_samples(sample)
    mixture = logsumexp(ours.reshape(-1, c * m)[:4096].astype(np.float64), axis=-1) - np.log(c * m)
    error = float(np.max(np.abs(mixture - reference) / np.maximum(1.0, np.abs(reference))))
    print(f"max relative error vs scikit-learn score_samples: {error:.2e}")

    import time
    times = {"ours": median_seconds(lambda: namespace["ours"](namespace["x_t"]).numpy(),
                                    runs=args.runs)}
    tic = time.perf_counter()
    exec(RUN["sklearn"], namespace)
    times["sklearn"] = time.perf_counter() - tic  # one run: it takes seconds

    peaks = {}
    for name in ("ours", "broadcast", "sklearn"):
        peak, output = peak_extra_mb(setup, RUN[name])
        peaks[name] = peak
        if peak is None:
            print(f"{name}: the process failed (out of memory?): {output[-300:]}")
    if peaks["broadcast"] is not None:
        times["broadcast"] = median_seconds(
            lambda: namespace["broadcast"](namespace["x_t"]).numpy(), runs=max(3, args.runs // 4),
            warmup=1)

    head = namespace["GaussianMixtureHead"](c, num_components=m, embedding_dim=d,
                                            class_norm=False)
    import tensorflow as tf
    head_fn = tf.function(lambda f: head(f, training=False)["logits"])
    features_t = tf.constant(namespace["features"])
    times["whole head"] = median_seconds(lambda: head_fn(features_t).numpy(), runs=args.runs)

    n = int(np.prod(shape[:-1]))
    rows = []
    for name in ("ours", "broadcast", "sklearn", "whole head"):
        t = times.get(name)
        peak = peaks.get(name)
        rows.append([
            name,
            "-" if t is None else f"{1000 * t:.1f}",
            "-" if t is None or name == "ours" else f"{t / times['ours']:.1f}×",
            "-" if peak is None else f"{peak:.0f}",
            "-" if peak is None or name == "ours" else f"{peak / peaks['ours']:.1f}×",
        ])
    table = markdown_table(
        ["log-likelihood", "median ms", "time vs ours", "peak extra MB", "memory vs ours"], rows)
    notes = (f"N = {n} pixels × C·M = {c * m} components × D = {d}; the broadcast tensor alone "
             f"is {n * c * m * d * 4 / 2**30:.1f} GiB. `ours` agrees with scikit-learn's "
             f"`score_samples` to {error:.1e} (max relative error, float32 vs float64). "
             "scikit-learn: one run, float64. `whole head`: projection, normalisation and "
             "likelihood (no peak measured). A failed process (`-`) means the broadcast did not "
             "fit in this machine's memory.")
    record(f"Head cost at C={c}, M={m}, D={d}, features {shape}",
           "python benchmarks/head_cost.py " + " ".join(sys.argv[1:]), table, notes)


if __name__ == "__main__":
    main()

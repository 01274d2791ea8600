"""Training cost of EM: a GMMSeg step with and without memory + Sinkhorn EM.

SegFormer-B0 GMMSeg at the Cityscapes setting (C=19, M=5, D=64, 32 000
entries per queue), batch 2 at 512×512 by default. Three runs of `fit` in one
process, each timed per step by a callback (mean over the steps after a
warm-up, so the periodic M-step is counted at its share):
- `CE only`: cross-entropy through the GMM posterior, no Sinkhorn E-step, no
  memory write, no M-step;
- `EM, interval 5`: Sinkhorn E-step, memory write and contrast loss every
  step, M-step every 5 steps (the paper's code);
- `EM, interval 1`: the same with an M-step every step.

    python benchmarks/em_training_cost.py     # appends to benchmarks/RESULTS.md
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_gss  # noqa: E402
from common import markdown_table  # noqa: E402
from common import record  # noqa: E402
from keras_gss.models import GMMSegImageSegmenter  # noqa: E402


class CrossEntropyOnly(GMMSegImageSegmenter):
    """GMMSeg without the EM work: only Eq. 11b's cross-entropy (the base's loss)."""

    def head_loss(self, labels, outputs, replicas):
        return 0.0


class StepTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_train_batch_begin(self, batch, logs=None):
        self._tic = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter() - self._tic)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--memory-size", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    size, batch = args.image_size, args.batch_size
    rng = np.random.default_rng(0)
    steps = args.steps + args.warmup
    images = rng.normal(size=(batch, size, size, 3)).astype("float32")
    labels = rng.integers(0, 19, size=(batch, size, size)).astype("int32")
    images = np.repeat(images, steps, axis=0)
    labels = np.repeat(labels, steps, axis=0)

    results = {}
    for name, cls, interval in (("CE only", CrossEntropyOnly, None),
                                ("EM, interval 5", GMMSegImageSegmenter, 5),
                                ("EM, interval 1", GMMSegImageSegmenter, 1)):
        keras.utils.set_random_seed(0)
        backbone = keras_gss.models.segformer_backbone("b0", image_shape=(size, size, 3))
        model = cls(backbone, num_classes=19, num_components=5, embedding_dim=64,
                    memory_size=args.memory_size)
        model.compile()
        timer = StepTimer()
        callbacks = [timer]
        if interval:
            callbacks.append(keras_gss.callbacks.SinkhornEM(update_interval=interval))
        # keras.Model.fit directly, so no SinkhornEM is added to the CE-only run.
        keras.Model.fit(model, images, labels, batch_size=batch, epochs=1,
                        callbacks=callbacks, verbose=0)
        results[name] = float(np.mean(timer.times[args.warmup:]))
        print(f"{name}: {1000 * results[name]:.0f} ms per step")

    base = results["CE only"]
    rows = [[name, f"{1000 * t:.0f}", f"{100 * (t - base) / t:.1f}%" if t != base else "-"]
            for name, t in results.items()]
    table = markdown_table(["training step", "mean ms", "EM share of the step"], rows)
    queue_gb = 19 * 5 * args.memory_size * 64 * 4 / 1e9
    notes = (f"SegFormer-B0 GMMSeg, batch {batch} × {size}×{size}, C=19, M=5, D=64, memory "
             f"{args.memory_size} per queue ({queue_gb:.2f} GB float32); mean over {args.steps} "
             f"steps after {args.warmup} warm-up steps. EM share = (step − CE-only step) / step.")
    record("EM training cost", "python benchmarks/em_training_cost.py " + " ".join(sys.argv[1:]),
           table, notes)


if __name__ == "__main__":
    main()

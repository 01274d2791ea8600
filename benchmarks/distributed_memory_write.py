"""Feature-memory write under `tf.distribute.MirroredStrategy`: in place vs functional.

Each replica writes the same rows (as after GMMSeg's all-gather) into a Cityscapes-size memory
(C=19, M=5, D=64, 32 000 entries per queue: 0.78 GB per replica). Timed side by side, per
step of `strategy.run` inside one `tf.function`:

- `FeatureMemory.write`: gathers and scatters each replica's own copy in place;
- the functional write it replaced: the same rows scattered into a copy of the queue, which
  is then assigned back (a mirrored variable with `only_first_replica` aggregation broadcasts
  that assignment from the first replica).

Uses every GPU when there are two or more, else two logical CPU devices.

    python benchmarks/distributed_memory_write.py      # appends to benchmarks/RESULTS.md
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

GPUS = tf.config.list_physical_devices("GPU")
if len(GPUS) < 2:  # before anything initialises the devices
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from common import markdown_table  # noqa: E402
from common import median_seconds  # noqa: E402
from common import record  # noqa: E402
from keras_gss.layers import FeatureMemory  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capacity", type=int, default=32000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    c, m, d = 19, 5, 64
    devices = ([f"/gpu:{i}" for i in range(len(GPUS))] if len(GPUS) >= 2
               else ["/cpu:0", "/cpu:1"])
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        memory, reference = (FeatureMemory(c, m, d, capacity=args.capacity,
                                           correct_only=False, fill="empty") for _ in range(2))
        memory.build()
        reference.build()  # its own variable: one never written sparsely reads without copies
    rng = np.random.default_rng(0)
    pixels = 2 * 128 * 128  # a batch of 2 at 512² seen at stride 4
    features = tf.constant(rng.normal(size=(pixels, d)).astype("float32"))
    labels = tf.constant(rng.integers(0, c, size=pixels).astype("int32"))
    components = tf.constant(rng.integers(0, m, size=pixels).astype("int32"))
    s = memory.samples_per_component  # the functional write scatters as many rows
    slots = tf.constant(np.stack([np.repeat(np.arange(c), m * s), np.tile(np.repeat(
        np.arange(m), s), c), rng.integers(0, args.capacity, size=c * m * s)], 1).astype("int32"))
    rows = tf.constant(rng.normal(size=(c * m * s, d)).astype("float32"))

    def functional():
        queue = reference.queue.value
        reference.queue.assign(tf.tensor_scatter_nd_update(queue, slots, rows))

    in_place = tf.function(lambda: strategy.run(
        lambda: memory.write(features, labels, components)))
    copied = tf.function(lambda: strategy.run(functional))
    seconds = {name: median_seconds(step, runs=args.runs)
               for name, step in (("`FeatureMemory.write`, in place", in_place),
                                  ("functional write (scatter into a copy, assign)", copied))}
    copies = [v.numpy() for v in memory.queue.value.values]
    agree = all(np.array_equal(copies[0], other) for other in copies[1:])
    base = seconds["functional write (scatter into a copy, assign)"]
    table = markdown_table(
        ["write", "ms per step (median)", "vs functional"],
        [[name, f"{1e3 * value:.1f}", f"{base / value:.1f}× faster" if value < base else "1.0×"]
         for name, value in seconds.items()])
    gb = c * m * args.capacity * d * 4 / 1e9
    record("Feature-memory write under MirroredStrategy",
           "python benchmarks/distributed_memory_write.py " + " ".join(sys.argv[1:]), table,
           f"{len(devices)} replicas ({', '.join(devices)}), {gb:.2f} GB memory per replica, "
           f"{pixels} pixels per replica per step, median of {args.runs} steps. After the "
           f"runs the replicas' copies of the queue are {'bitwise equal' if agree else 'NOT equal'}.")


if __name__ == "__main__":
    main()

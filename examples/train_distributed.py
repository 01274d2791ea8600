"""Train GMMSeg on several devices or hosts with `tf.distribute`.

One machine, all its GPUs (or N logical CPU devices for a try-out):

    python examples/train_distributed.py --strategy mirrored
    python examples/train_distributed.py --strategy mirrored --cpu-devices 2

Several hosts: run the same command on every host with `TF_CONFIG` naming the
cluster and this host's index (the first worker is the chief):

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
                "task": {"type": "worker", "index": 0}}' \
        python examples/train_distributed.py --strategy multiworker

The batch size is global. Each step all-gathers the embeddings before the E-step
and the memory write, so every replica keeps the same GMM state. SyncBN is turned
on by `fit`.
"""

import argparse

import keras_gss  # first: it keeps TensorFlow's C++ start-up log quiet
import tensorflow as tf


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=("mirrored", "multiworker"), default="mirrored")
    parser.add_argument("--cpu-devices", type=int, default=0,
                        help="split the CPU into this many logical devices (no GPU needed)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16, help="global batch size")
    parser.add_argument("--out", default="outputs/distributed_preset")
    args = parser.parse_args()
    keras_gss.utils.quiet.quiet_frameworks()
    if args.cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    if args.strategy == "multiworker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        devices = ([d.name for d in tf.config.list_logical_devices("CPU")]
                   if args.cpu_devices else None)
        strategy = tf.distribute.MirroredStrategy(devices)
    print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas")

    import keras

    from keras_gss.data import DigitScenes
    from keras_gss.data import normalize_images

    scenes = DigitScenes(image_size=96)
    images, labels, _ = scenes.generate("train", 400)
    data = (tf.data.Dataset.from_tensor_slices((normalize_images(images), labels.astype("int32")))
            .shuffle(400, seed=0).repeat().batch(args.batch_size, drop_remainder=True))
    with strategy.scope():
        model = keras_gss.from_preset("gmmseg_segformer_digitscenes", load_weights=False)
        model.compile(optimizer=keras.optimizers.AdamW(2e-3),
                      metrics=[keras_gss.metrics.MeanIoU(scenes.num_classes)])
    model.fit(data, epochs=max(1, args.steps // 50), steps_per_epoch=min(50, args.steps),
              verbose=2, callbacks=[keras_gss.callbacks.SinkhornEM(update_interval=1,
                                                                   mean_momentum=0.9)])
    if getattr(strategy.cluster_resolver, "task_id", 0) == 0:  # the chief saves
        model.save_to_preset(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

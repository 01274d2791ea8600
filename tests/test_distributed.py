"""Data-parallel training of every family: 2 replicas train exactly as 1 replica on the same
global batches (the GMM state included)."""

import os
import subprocess
import sys
import textwrap

import pytest

MIRRORED = textwrap.dedent("""
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, keras_gss
    from keras import ops
    from keras_gss.data import colour_scenes

    EPOCHS, FAMILY = int(sys.argv[1]), sys.argv[2]
    images, labels, _ = colour_scenes(16, size=32, seed=4)
    labels = labels.astype("int32")
    labels[:, :3, :3] = 255  # void pixels, unevenly spread over the replicas' halves

    def run(strategy):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            backbone = keras_gss.models.segformer_backbone(
                variant=None, image_shape=(32, 32, 3), hidden_dims=[8, 16],
                projection_filters=16, drop_path_rate=0.0)
            model = (keras_gss.models.GMMSegImageSegmenter(
                backbone, num_classes=3, num_components=2, embedding_dim=8, memory_size=24,
                dropout=0.0) if FAMILY == "gmmseg" else
                keras_gss.models.LGMMImageSegmenter(
                    backbone, num_classes=3, num_components=2, embedding_dim=8, memory_size=24,
                    samples_per_class=8, dropout=0.0) if FAMILY == "lgmm" else
                keras_gss.models.DenseHybridImageSegmenter(backbone, num_classes=3, dropout=0.0)
                if FAMILY == "densehybrid" else
                keras_gss.models.SoftmaxImageSegmenter(backbone, num_classes=3, dropout=0.0))
            for layer in model._flatten_layers():
                if isinstance(layer, keras.layers.Dropout):  # keras-hub MixFFN's: keep it exact
                    layer.rate = 0.0
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True  # one variance formula in both runs
            # SGD: Adam's first steps are sign(g) and would amplify float noise in tiny gradients.
            model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        data = tf.data.Dataset.from_tensor_slices((images, labels))
        if FAMILY == "densehybrid":  # real negatives pasted by the tf.data transform
            # One crop: its place and size depend only on (seed, index); which of several
            # crops goes where follows tf.data's shuffle, new for every iterator Keras makes.
            crops = np.random.default_rng(1).random((1, 16, 16, 3)).astype("float32")
            data = keras_gss.data.paste_negatives(data, crops, seed=0)
        data = data.batch(8)
        history = model.fit(data, epochs=EPOCHS, verbose=0, callbacks=model.default_callbacks(
            **({"update_interval": 1, "mean_momentum": 0.9} if FAMILY == "gmmseg" else {})))
        weights = [ops.convert_to_numpy(v) for v in model.trainable_variables]
        if FAMILY == "lgmm":  # the mixture is in the weights; its counts and memory here
            memory, head = model.feature_memory, model.gmm_head
            return {name: ops.convert_to_numpy(v) for name, v in (
                ("class_counts", head.class_counts), ("component_counts", head.component_counts),
                ("queue", memory.queue), ("count", memory.count))}, weights, \
                history.history["loss"]
        if FAMILY != "gmmseg":
            return {}, weights, history.history["loss"]
        memory, head = model.feature_memory, model.gmm_head
        state = {name: ops.convert_to_numpy(v) for name, v in (
            ("means", head.means), ("scales", head.scales), ("queue", memory.queue),
            ("count", memory.count), ("pointer", memory.pointer), ("step", memory.step))}
        # Each replica writes its own copy of the queue in place: the copies must agree.
        copies = getattr(memory.queue.value, "values", ())
        state["copies"] = np.float64(len(copies))
        state["replica_copies"] = np.float64(max(
            (np.abs(c.numpy() - copies[0].numpy()).max() for c in copies[1:]), default=0.0))
        return state, weights, history.history["loss"]

    one_state, one_weights, one_loss = run(tf.distribute.get_strategy())
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert two.num_replicas_in_sync == 2
    two_state, two_weights, two_loss = run(two)
    report = {"loss": [one_loss, two_loss]}
    if FAMILY == "gmmseg":
        report.update(filled=int(one_state["count"].sum()),
                      replica_copies=float(two_state.pop("replica_copies")),
                      copies=int(two_state.pop("copies")))
        one_state.pop("replica_copies"), one_state.pop("copies")
    for name in one_state:
        report[name] = float(np.max(np.abs(one_state[name].astype("float64")
                                           - two_state[name].astype("float64"))))
    # Relative to the weight's size: the class LayerNorm makes some weights grow to 1e4.
    report["weights"] = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)))
                            for a, b in zip(one_weights, two_weights))
    print("REPORT", json.dumps(report))
""")


# Softmax is DenseHybrid's base (its loss without the extra terms): slow.
@pytest.mark.parametrize("family", ["gmmseg", pytest.param("softmax", marks=pytest.mark.slow),
                                    "densehybrid", "lgmm"])
def test_two_replicas_match_one_replica(family):
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    result = subprocess.run([sys.executable, "-c", MIRRORED, "3", family], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    if family == "gmmseg":
        assert report["filled"] > 0 and report["step"] == 0 and report["count"] == 0
        assert report["pointer"] == 0, report
        assert report["copies"] == 2 and report["replica_copies"] == 0.0, report  # one memory
        for name in ("means", "scales", "queue"):
            assert report[name] <= 1e-5, {k: v for k, v in report.items() if k != "loss"}
    if family == "lgmm":  # one memory and the same counts: every replica wrote the global batch
        for name in ("class_counts", "component_counts", "count"):
            assert report[name] == 0.0, {k: v for k, v in report.items() if k != "loss"}
        # Unit-norm embeddings of weights that agree to 1e-4 (measured: 1.1e-5).
        assert report["queue"] <= 1e-4, report
    assert report["weights"] <= 1e-4, report
    one, two = report["loss"]
    # A Sinkhorn assignment that flips on float noise moves GMMSeg's 0.01-weighted component
    # term: measured with TensorFlow 2.21, 1.9e-4 with it and 1.5e-6 without it.
    assert max(abs(a - b) for a, b in zip(one, two)) <= 1e-4 * (5 if family == "gmmseg" else 1)


WORKER = textwrap.dedent("""
    import sys
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads TF_CONFIG
    FAMILY = sys.argv[2]
    import keras, numpy as np, keras_gss
    from keras import ops
    from keras_gss.data import colour_scenes

    images, labels, _ = colour_scenes(16, size=32, seed=4)
    keras.utils.set_random_seed(0)
    with strategy.scope():
        backbone = keras_gss.models.segformer_backbone(
            variant=None, image_shape=(32, 32, 3), hidden_dims=[8, 16], projection_filters=16)
        model = (keras_gss.models.GMMSegImageSegmenter(
            backbone, num_classes=3, num_components=2, embedding_dim=8, memory_size=24)
            if FAMILY == "gmmseg" else
            keras_gss.models.SoftmaxImageSegmenter(backbone, num_classes=3))
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    data = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32"))).batch(8)
    history = model.fit(data.with_options(options), epochs=2, verbose=0,
                        callbacks=model.default_callbacks(**(
                            {"update_interval": 1, "mean_momentum": 0.9}
                            if FAMILY == "gmmseg" else {})))
    state = {}
    if FAMILY == "gmmseg":
        memory, head = model.feature_memory, model.gmm_head
        state = {name: ops.convert_to_numpy(v) for name, v in (
            ("means", head.means), ("scales", head.scales), ("queue", memory.queue),
            ("count", memory.count), ("step", memory.step))}
    np.savez(sys.argv[1], replicas=strategy.num_replicas_in_sync,
             loss=np.asarray(history.history["loss"]), **state,
             **{f"weight_{i}": ops.convert_to_numpy(v)
                for i, v in enumerate(model.trainable_variables)})
""")


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("family", ["gmmseg", "softmax"])
def test_two_workers_keep_identical_gmm_state(tmp_path, family):
    import json

    import numpy as np

    cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(2)]}
    workers = []
    for index in range(2):
        config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config), TF_CPP_MIN_LOG_LEVEL="3",
                   KERAS_BACKEND="tensorflow")
        workers.append(subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tmp_path / f"worker{index}.npz"), family],
            env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        for worker in workers:  # the time bound: a hung collective fails the test, not CI
            _, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err[-3000:]
    finally:
        for worker in workers:
            worker.kill()
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert int(first["replicas"]) == 2
    assert len(first["loss"]) == 2 and np.all(np.isfinite(first["loss"]))
    if family == "gmmseg":  # 2 epochs × 2 global batches
        assert int(first["step"]) == 4 and first["count"].sum() > 0
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


@pytest.mark.slow  # the example end to end; its MirroredStrategy training is tested above
def test_distributed_example_runs_on_two_cpu_devices(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "preset"
    result = subprocess.run(
        [sys.executable, os.path.join(root, "examples", "train_distributed.py"),
         "--cpu-devices", "2", "--steps", "4", "--batch-size", "4", "--out", str(out)],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
        timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy: 2 replicas" in result.stdout
    assert (out / "task.weights.h5").is_file()


DATA_PARALLEL = textwrap.dedent("""
    import json, sys
    import keras, numpy as np, keras_gss
    from keras import ops
    from keras_gss.data import colour_scenes

    images, labels, _ = colour_scenes(16, size=32, seed=4)
    labels = labels.astype("int32")
    FAMILY = sys.argv[1]
    if FAMILY == "densehybrid":  # a pasted negative in every image
        images[:, 20:28, 20:28] = np.random.default_rng(1).random((16, 8, 8, 3))
        labels[:, 20:28, 20:28] = 254

    def run(distribution):
        keras.distribution.set_distribution(distribution)
        keras.utils.set_random_seed(0)
        backbone = keras_gss.models.segformer_backbone(
            variant=None, image_shape=(32, 32, 3), hidden_dims=[8, 16], projection_filters=16,
            drop_path_rate=0.0)
        model = (keras_gss.models.GMMSegImageSegmenter(
            backbone, num_classes=3, num_components=2, embedding_dim=8, memory_size=24,
            dropout=0.0) if FAMILY == "gmmseg" else
            keras_gss.models.LGMMImageSegmenter(
                backbone, num_classes=3, num_components=2, embedding_dim=8, memory_size=24,
                samples_per_class=8, dropout=0.0) if FAMILY == "lgmm" else
            keras_gss.models.DenseHybridImageSegmenter(backbone, num_classes=3, dropout=0.0)
            if FAMILY == "densehybrid" else
            keras_gss.models.SoftmaxImageSegmenter(backbone, num_classes=3, dropout=0.0))
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.Dropout):
                layer.rate = 0.0
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
        history = model.fit(images, labels, batch_size=8, epochs=3, verbose=0,
                            callbacks=model.default_callbacks(**(
                                {"update_interval": 1, "mean_momentum": 0.9}
                                if FAMILY == "gmmseg" else {})))
        state = {"loss": np.asarray(history.history["loss"])}
        if FAMILY == "gmmseg":
            memory, head = model.feature_memory, model.gmm_head
            state.update({name: ops.convert_to_numpy(v) for name, v in (
                ("means", head.means), ("scales", head.scales), ("queue", memory.queue),
                ("step", memory.step))})
        if FAMILY == "lgmm":
            state.update({name: ops.convert_to_numpy(v) for name, v in (
                ("class_counts", model.gmm_head.class_counts),
                ("component_counts", model.gmm_head.component_counts),
                ("queue", model.feature_memory.queue))})
        return state, [ops.convert_to_numpy(v) for v in model.trainable_variables]

    devices = keras.distribution.list_devices("cpu")
    one_state, one_weights = run(keras.distribution.DataParallel(devices=devices[:1]))
    two_state, two_weights = run(keras.distribution.DataParallel(devices=devices[:2]))
    report = {"devices": len(devices), "step": int(two_state.get("step", 0))}
    for name in ("means", "scales", "queue", "loss", "class_counts", "component_counts"):
        if name in one_state:
            report[name] = float(np.max(np.abs(one_state[name] - two_state[name])))
    report["weights"] = max(float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1.0)))
                            for a, b in zip(one_weights, two_weights))
    print("REPORT", json.dumps(report))
""")


# GMMSeg (the first family with training state) by default; the others with
# `pytest -m slow` (their MirroredStrategy runs above stay in the default run).
@pytest.mark.parametrize("family", ["gmmseg", pytest.param("softmax", marks=pytest.mark.slow),
                                    pytest.param("densehybrid", marks=pytest.mark.slow),
                                    pytest.param("lgmm", marks=pytest.mark.slow)])
def test_jax_data_parallel_matches_one_device(family):
    import json

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="jax",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    result = subprocess.run([sys.executable, "-c", DATA_PARALLEL, family], env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.split("REPORT", 1)[1])
    # GMMSeg's component term moves when a Sinkhorn assignment flips on float noise (4.3e-4).
    assert report["devices"] == 2
    assert report["loss"] <= 1e-4 * (5 if family == "gmmseg" else 1), report
    if family == "gmmseg":
        assert report["step"] == 6
        for name in ("means", "scales", "queue"):
            assert report[name] <= 1e-5, report
    if family == "lgmm":
        assert report["class_counts"] == report["component_counts"] == 0.0, report
        assert report["queue"] <= 1e-4, report
    assert report["weights"] <= 1e-4, report

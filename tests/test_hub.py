"""Publish and load presets through a local Hub-compatible server, in fresh processes."""

import os
import subprocess
import sys
import textwrap

import pytest

from tests.hub_server import HubServer

ROUND_TRIP = textwrap.dedent("""
    import json, os, urllib.request
    import numpy as np, keras, keras_gss
    from keras import ops
    from keras_gss.data import colour_scenes

    def requests_so_far():
        url = os.environ["HF_ENDPOINT"] + "/_requests"
        return json.load(urllib.request.urlopen(url))["count"]

    def state(m):
        return {"means": m.gmm_head.means, "scales": m.gmm_head.scales,
                "queue": m.feature_memory.queue, "count": m.feature_memory.count,
                "step": m.feature_memory.step}

    def same(a, b, images):
        assert np.abs(a.predict(images, verbose=0) - b.predict(images, verbose=0)).max() < 1e-6
        assert np.abs(a.predict_anomaly(images, verbose=0)
                      - b.predict_anomaly(images, verbose=0)).max() < 1e-6
        for name, value in state(a).items():
            np.testing.assert_array_equal(ops.convert_to_numpy(value),
                                          ops.convert_to_numpy(state(b)[name]), err_msg=name)

    keras.utils.set_random_seed(0)
    images, labels, _ = colour_scenes(8, size=32)
    backbone = keras_gss.models.segformer_backbone(
        variant=None, image_shape=(32, 32, 3), hidden_dims=[8, 16], projection_filters=16)
    model = keras_gss.models.GMMSegImageSegmenter(
        backbone, num_classes=3, num_components=2, embedding_dim=8, memory_size=32)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    em = keras_gss.callbacks.SinkhornEM(update_interval=1, mean_momentum=0.9)
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0, callbacks=[em])
    first = keras_gss.publish_preset(model, "hf://tester/tiny-gmmseg")
    assert first.startswith("hf://tester/tiny-gmmseg@")

    same(model, keras_gss.from_preset("hf://tester/tiny-gmmseg"), images)
    pinned = keras_gss.from_preset(first)
    same(model, pinned, images)
    print("VERIFY", keras_gss.verify_preset(first))
    before = requests_so_far()
    same(model, keras_gss.from_preset(first), images)
    print("REQUESTS_ON_SECOND_LOAD", requests_so_far() - before)

    model.fit(images, labels, batch_size=4, epochs=1, verbose=0, callbacks=[em])
    second = keras_gss.publish_preset(model, "hf://tester/tiny-gmmseg")
    assert second != first
    same(pinned, keras_gss.from_preset(first), images)
    same(model, keras_gss.from_preset("hf://tester/tiny-gmmseg"), images)
    same(pinned, keras_gss.from_preset("hf://tester/tiny-gmmseg", revision=first.split("@")[1]),
         images)
    try:
        keras_gss.from_preset("hf://tester/tiny-gmmseg@" + "0" * 40)
    except OSError as error:
        print("MISSING_REVISION", error)
    print("FIRST", first)
    from keras_gss.presets import PRESETS, register_presets
    record = dict(PRESETS["gmmseg_segformer_b0"],
                  weights={"handle": "hf://tester/tiny-gmmseg", "revision": first.split("@")[1]})
    register_presets({"tiny_published": record})
    same(pinned, keras_gss.from_preset("tiny_published"), images)
    import keras_gss.cli
    model.save_to_preset("cli_preset")
    keras_gss.cli.main(["publish", "cli_preset", "hf://tester/cli-demo", "--message", "from cli"])
""")

OFFLINE = textwrap.dedent("""
    import sys, keras_gss
    try:
        model = keras_gss.from_preset(sys.argv[1])
        print("LOADED", model.gmm_head.num_classes)
    except OSError as error:
        print("ERROR", error)
""")


def _run(code, env, *args, cwd=None):
    result = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                            text=True, timeout=600, cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def hub():
    server = HubServer().start()
    yield server
    server.stop()


def test_publish_load_pin_verify_offline(hub, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_TOKEN="test",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    out = _run(ROUND_TRIP, env, cwd=tmp_path)
    assert "VERIFY {'logits': 0.0, 'anomaly_score': 0.0}" in out
    assert "REQUESTS_ON_SECOND_LOAD 0" in out  # a cached pinned commit needs no request
    assert "MISSING_REVISION" in out and "does not exist on the Hub" in out
    first = next(line.split()[1] for line in out.splitlines() if line.startswith("FIRST"))
    assert hub.repos["tester/tiny-gmmseg"]["log"][1] == first.split("@")[1]
    card = hub.repos["tester/tiny-gmmseg"]["commits"][first.split("@")[1]]["README.md"].decode()
    assert "pipeline_tag: image-segmentation" in card

    cli_handle = out.strip().splitlines()[-1]
    assert cli_handle.startswith("hf://tester/cli-demo@")
    assert "task.json" in hub.repos["tester/cli-demo"]["commits"][cli_handle.split("@")[1]]

    offline = dict(env, HF_HUB_OFFLINE="1")
    assert "LOADED 3" in _run(OFFLINE, offline, first)
    empty = dict(offline, HF_HOME=str(tmp_path / "empty"))
    out = _run(OFFLINE, empty, first)
    assert "ERROR" in out and "not in the local Hub cache" in out and "download_preset" in out


def test_bad_handles_name_the_argument():
    import keras_gss

    for handle in ("tester/tiny", "hf://tiny", "hf://a/b/c"):
        with pytest.raises(ValueError, match="`handle`"):
            keras_gss.hub.parse_handle(handle)
    with pytest.raises(ValueError, match="must not pin a revision"):
        keras_gss.publish_preset(None, "hf://tester/x@main")

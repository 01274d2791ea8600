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
        return {"means": m.gmm_head.means, "scales": m.gmm_head.scales}

    def same(a, b, images):
        assert not b.feature_memory.allocated  # a published preset leaves the memory out
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
    # Converters and tokenizers read hf:// too: only the files they need.
    import huggingface_hub
    from keras_gss import convert
    from keras_gss.models import DiscreteVAE
    api = huggingface_hub.HfApi()
    if os.path.isdir("mit_hub"):  # transformers' SegFormer, written by the test (convert extra)
        api.create_repo("tester/mit-tiny")
        api.upload_folder(folder_path="mit_hub", repo_id="tester/mit-tiny")
        hub_mit = convert.mit("hf://tester/mit-tiny", image_shape=(32, 32, 3))
        local_mit = convert.mit("mit_hub", image_shape=(32, 32, 3))
        for a, b in zip(hub_mit.weights, local_mit.weights):
            np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
        print("MIT_FROM_HUB", len(hub_mit.weights))
    tokenizer = DiscreteVAE(32, hidden_dim=8, blocks_per_group=1, group_count=3, init_dim=32)
    tokenizer.encode(np.zeros((1, 16, 16, 3), "float32"))
    tokenizer.save_to_preset("tokenizer")
    api.create_repo("tester/tokenizer")
    api.upload_folder(folder_path="tokenizer", repo_id="tester/tokenizer")
    restored = DiscreteVAE.from_preset("hf://tester/tokenizer")
    for a, b in zip(tokenizer.weights, restored.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    print("TOKENIZER_FROM_HUB", len(restored.weights))
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


def _write_tiny_segformer(folder):
    """transformers' SegFormer encoder as its Hub repo holds it, plus a file not to fetch."""
    try:
        import torch
        from transformers import SegformerConfig
        from transformers import SegformerModel
    except ImportError:
        if os.environ.get("KERAS_GSS_REQUIRE_CONVERT"):
            raise
        return False
    torch.manual_seed(0)
    config = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], hidden_sizes=[8, 16],
                             num_attention_heads=[1, 2], sr_ratios=[2, 1],
                             patch_sizes=[7, 3], strides=[4, 2])
    SegformerModel(config).save_pretrained(folder)
    (folder / "pytorch_model.bin").write_bytes(b"not needed")
    return True


@pytest.fixture
def hub():
    server = HubServer().start()
    yield server
    server.stop()


def test_publish_load_pin_verify_offline(hub, tmp_path):
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_TOKEN="test",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    with_mit = _write_tiny_segformer(tmp_path / "mit_hub")
    out = _run(ROUND_TRIP, env, cwd=tmp_path)
    assert "VERIFY {'logits': 0.0, 'anomaly_score': 0.0}" in out
    assert "TOKENIZER_FROM_HUB" in out
    if with_mit:
        assert "MIT_FROM_HUB" in out  # and equal to converting the local folder
        paths = [path for _, path in hub.requests if "tester/mit-tiny" in path]
        assert any(p.endswith("/model.safetensors") for p in paths)
        assert not any("pytorch_model.bin" in p for p in paths)  # only what it converts
    assert "REQUESTS_ON_SECOND_LOAD 0" in out  # a cached pinned commit needs no request
    assert "MISSING_REVISION" in out and "does not exist on the Hub" in out
    first = next(line.split()[1] for line in out.splitlines() if line.startswith("FIRST"))
    log = hub.repos["tester/tiny-gmmseg"]["log"]
    assert log[1] == first.split("@")[1]  # the weights commit, then the card naming it
    card = hub.repos["tester/tiny-gmmseg"]["commits"][log[2]]["README.md"].decode()
    assert "pipeline_tag: image-segmentation" in card and first.split("@")[1] in card
    assert "Not recorded: published from a model object" in card

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


def test_a_converter_download_offline_names_the_repository_and_the_files(tmp_path):
    from keras_gss.hub import download_files

    with pytest.raises(OSError) as caught:
        download_files("hf://nvidia/mit-b0", ("config.json", "model.safetensors"),
                       cache_dir=str(tmp_path), local_files_only=True)
    message = str(caught.value)
    assert message.startswith("Repository 'hf://nvidia/mit-b0' is not in the local Hub cache")
    assert "huggingface-cli download nvidia/mit-b0 config.json model.safetensors" in message
    assert "Preset" not in message and "download_preset" not in message


TINY_RECIPE = {
    "name": "tiny_digitscenes", "preset": "gmmseg_segformer_digitscenes",
    "data": {"name": "digitscenes", "image_size": 32, "train_scenes": 16, "test_scenes": 4},
    "crop": 32, "augmentation": None, "batch_size": 4, "iterations": 2,
    "model": {"memory_size": 64}, "optimizer": {"name": "adamw", "learning_rate": 2e-3},
    "callbacks": {"update_interval": 1, "mean_momentum": 0.9},
}
LOAD = textwrap.dedent("""
    import sys, numpy as np, keras_gss
    try:
        model = keras_gss.from_preset(sys.argv[1])
        images = np.load(sys.argv[2])["images"]
        print("LOADED", float(np.abs(model.predict(images, verbose=0)).sum()))
    except OSError as error:
        print("ERROR", error)
""")


def test_trained_preset_card_and_interrupted_download(hub, tmp_path):
    """keras-gss train -> publish: the card carries datasets, metrics, revision and command; a
    download cut off halfway leaves nothing half-written, and the next load completes it."""
    import json

    from huggingface_hub import scan_cache_dir

    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_TOKEN="test",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY_RECIPE))
    # Train, then publish, in one fresh process (each start costs ~15 s on 2 cores).
    train_publish = ("import keras_gss.cli as c; assert c.main(['train', 'tiny.json', '--out', "
                     "'run', '--verbose', '0']) == 0; c.main(['publish', 'run/preset', "
                     "'hf://tester/trained'])")
    handle = _run(train_publish, env, cwd=tmp_path).strip().splitlines()[-1]
    sha = handle.split("@")[1]
    repo = hub.repos["tester/trained"]
    card = repo["commits"][repo["log"][-1]]["README.md"].decode()
    training = json.loads((tmp_path / "run" / "preset" / "training.json").read_text())
    assert "datasets:\n- digitscenes" in card and f"`{sha}`" in card
    assert "keras-gss train tiny.json --out run --verbose 0" in card
    miou = 100 * training["results"]["closed_set"]["miou"]
    assert f"| this model | model | {miou:.1f} |" in card
    assert f"{training['open_set']['threshold']:.6g}" in card

    # The weights file breaks off halfway on every attempt: a clear error, nothing partial kept.
    repo_files = repo["commits"][sha]
    hub.truncate.add("task.weights.h5")
    golden = str(tmp_path / "run" / "golden.npz")
    import numpy as np

    np.savez(golden, images=np.load(
        __import__("io").BytesIO(repo_files["test/input.npz"]))["images"])
    out = _run(LOAD, env, handle, golden)
    assert out.startswith("ERROR") and "hf://tester/trained" in out, out
    snapshot = tmp_path / "hf" / "hub" / "models--tester--trained" / "snapshots" / sha
    present = [p for p in snapshot.rglob("*") if p.is_file()] if snapshot.is_dir() else []
    assert not (snapshot / "task.weights.h5").exists()
    for path in present:  # whatever is visible is whole
        assert path.read_bytes() == repo_files[str(path.relative_to(snapshot))]
    offline = _run(LOAD, dict(env, HF_HUB_OFFLINE="1"), handle, golden)
    assert offline.startswith("ERROR") and "interrupted" in offline, (offline, present)

    hub.truncate.clear()
    # The next load completes the download; predict (same process) uses the recorded threshold.
    from PIL import Image

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "street.png")
    out = _run(LOAD + "\nimport keras_gss.cli\nkeras_gss.cli.main(['predict', sys.argv[1], "
               "'street.png', '--out', 'pred'])", env, handle, golden, cwd=tmp_path)
    assert out.startswith("LOADED"), out
    cache = scan_cache_dir(tmp_path / "hf" / "hub")
    files = {f.file_name: f.size_on_disk for r in cache.repos for rev in r.revisions
             if rev.commit_hash == sha for f in rev.files}
    assert files["task.weights.h5"] == len(repo_files["task.weights.h5"])

    assert f"anomaly threshold {training['open_set']['threshold']:.4g}" in out

"""Every Python block of README.md and docs/*.md runs, and does what its comments say."""

import glob
import os
import re

import numpy as np
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _write_cityscapes_fixture(root):
    from PIL import Image

    for city in ("aachen", "bochum"):
        os.makedirs(root / "leftImg8bit" / "train" / city)
        os.makedirs(root / "gtFine" / "train" / city)
        stem = f"{city}_000000_000019"
        Image.fromarray(np.zeros((256, 512, 3), np.uint8)).save(
            root / "leftImg8bit" / "train" / city / f"{stem}_leftImg8bit.png")
        label = np.where(np.arange(512) < 256, 0, 13).astype(np.uint8)
        Image.fromarray(np.tile(label, (256, 1))).save(
            root / "gtFine" / "train" / city / f"{stem}_gtFine_labelTrainIds.png")


def _run_snippets(path, tmp_path):
    """Each ```python block of `path` in its own namespace, in the folder `tmp_path`."""
    text = open(path).read()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    cwd = os.getcwd()
    os.chdir(tmp_path)
    namespaces = []
    try:
        for code in snippets:
            namespaces.append({})
            exec(compile(code, os.path.basename(path), "exec"), namespaces[-1])
    finally:
        os.chdir(cwd)
    return namespaces


def _named(namespaces, name):
    return next(n for n in namespaces if name in n)


def test_readme_python_snippets_run(tmp_path):
    namespaces = _run_snippets(os.path.join(ROOT, "README.md"), tmp_path)
    assert len(namespaces) == 6
    # The base's one-pass prediction and open-set map.
    base = _named(namespaces, "baseline")
    outputs, known, ids = base["outputs"], base["known"], base["ids"]
    assert outputs["logits"].shape == (16, 32, 32, 3)
    assert outputs["anomaly_score"].shape == (16, 32, 32) and ids.shape == (16, 32, 32)
    np.testing.assert_array_equal(ids, np.where(outputs["anomaly_score"] > known, 3,
                                                outputs["logits"].argmax(-1)))
    labelled = base["labels"] != 255
    assert np.mean(outputs["anomaly_score"][labelled] <= known) == pytest.approx(0.95, abs=0.01)
    # GMMSeg: shapes, the open-set map, and the preset round trip.
    gmm = _named(namespaces, "restored")
    assert gmm["logits"].shape == (16, 32, 32, 3) and gmm["scores"].shape == (16, 32, 32)
    assert set(np.asarray(gmm["open_set"]).ravel().tolist()) <= {0, 1, 2, 3}
    assert np.abs(gmm["restored"].predict(gmm["images"], verbose=0) - gmm["logits"]).max() < 1e-6
    # DenseHybrid: the hybrid is the sum of its parts, the closed-set model's logits moved on.
    hybrid = _named(namespaces, "hybrid")["hybrid"]
    np.testing.assert_allclose(hybrid["anomaly_score"], hybrid["discriminative_score"]
                               + hybrid["generative_score"], rtol=1e-5, atol=1e-5)
    assert hybrid["logits"].shape == (16, 32, 32, 3)
    # L-GMM: open-set recognition of digits it never saw, every metric a fraction.
    osr = _named(namespaces, "osr")["osr"]
    assert set(osr) == {"accuracy", "model", "max_softmax", "max_logit", "energy"}
    assert all(0 <= v <= 1 for name in ("model", "max_softmax") for v in osr[name].values())
    assert osr["accuracy"] > 0.3  # 6 known classes, chance 1/6; 71% measured, 4 short epochs
    # GSS: Stage I's metric, maskiges decoded from argmax tokens, a learned decoder's logits.
    gss = _named(namespaces, "ftw")
    assert 0 <= gss["stage_one"]["miou"] <= 1 and gss["maskiges"].shape == (16, 32, 32, 3)
    assert 0 < gss["maskiges"].min() and gss["maskiges"].max() < 1
    assert gss["outputs"]["logits"].shape == (16, 32, 32, 3)
    assert gss["outputs"]["anomaly_score"].shape == (16, 32, 32)
    # The zoo builds offline.
    assert tuple(_named(namespaces, "zoo_model")["zoo_model"].output.shape) == (None, 64, 64, 19)


def test_docs_python_snippets_run(tmp_path):
    _write_cityscapes_fixture(tmp_path / "cityscapes")
    namespaces = []
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        namespaces += _run_snippets(path, tmp_path)
    images, labels = next(iter(_named(namespaces, "train")["train"]))
    assert images.shape == (2, 768, 768, 3) and labels.shape == (2, 768, 768)
    assert set(np.unique(labels.numpy())) <= {0, 13, 255}
    synthetic = _named(namespaces, "synthetic")
    assert tuple(synthetic["samples"].shape) == (4, 24, 32, 3)
    assert type(synthetic["synthetic"].flow).__name__ == "NormalizingFlow"
    streamed = _named(namespaces, "results")["results"]["closed_set"]
    assert 0.0 <= streamed["miou"] <= 1.0 and len(streamed["iou"]) == 19


def test_readme_is_for_users():
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert len(readme.splitlines()) < 250
    for page in re.findall(r"`(docs/[a-z_]+\.md)`", readme):
        assert os.path.isfile(os.path.join(ROOT, page)), page

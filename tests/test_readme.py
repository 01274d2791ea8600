import os
import re

import numpy as np


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


def test_readme_python_snippets_run(tmp_path):
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert snippets
    _write_cityscapes_fixture(tmp_path / "cityscapes")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    namespaces = []
    try:
        for code in snippets:
            namespaces.append({})
            exec(compile(code, "README.md", "exec"), namespaces[-1])
    finally:
        os.chdir(cwd)
    images, labels = next(iter(next(n for n in namespaces if "train" in n)["train"]))
    assert images.shape == (2, 768, 768, 3) and labels.shape == (2, 768, 768)
    assert set(np.unique(labels.numpy())) <= {0, 13, 255}
    namespace = next(n for n in namespaces if "logits" in n)
    assert namespace["logits"].shape == (16, 32, 32, 3)
    assert namespace["scores"].shape == (16, 32, 32)
    assert set(np.asarray(namespace["open_set"]).ravel().tolist()) <= {0, 1, 2, 3}
    streamed = next(n for n in namespaces if "results" in n)["results"]["closed_set"]
    assert 0.0 <= streamed["miou"] <= 1.0 and len(streamed["iou"]) == 19
    restored = namespace["restored"]
    assert (restored.predict(namespace["images"], verbose=0)
            - namespace["logits"]).__abs__().max() < 1e-6

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _write_png(path, array):
    """Lossless, whatever the name says (`decode_image` reads the bytes, not the name)."""
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


@pytest.fixture
def mixed_size_benchmarks(tmp_path, rng):
    """ADE20K (train + validation) and Fishyscapes L&F folders, images of several sizes.

    ADE20K labels hold stored values 0 ("other", ignored) and 1..9 (the first
    nine classes), so a 9-class model reads them.
    """
    ade, laf = tmp_path / "ADEChallengeData2016", tmp_path / "fs_laf"
    sizes = [(40, 48), (36, 60), (32, 44)]
    for split in ("training", "validation"):
        for i, (h, w) in enumerate(sizes):
            stem = f"ADE_{split[:5]}_{i:08d}"
            _write_png(f"{ade}/images/{split}/{stem}.jpg",
                       rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            _write_png(f"{ade}/annotations/{split}/{stem}.png",
                       rng.integers(0, 10, (h, w)).astype(np.uint8))
    for i, (h, w) in enumerate(sizes[:2]):
        _write_png(f"{laf}/original/{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        _write_png(f"{laf}/labels/{i}.png", rng.choice([0, 1, 255], (h, w)).astype(np.uint8))
    return str(ade), str(laf)

import json
import os
import re
import subprocess
import sys

import keras_gss
from keras_gss import cli
from keras_gss.data import DigitScenes

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_cli_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert out.count("architecture only") == len(keras_gss.list_presets()) - 1
    assert "gmmseg_segformer_b5" in out
    assert ("trained here (mIoU 35.8, near-OOD/far-OOD AUROC 78.9/78.0), not published"
            in out)


def test_quickstart_smoke_then_cli_evaluate(tmp_path, capsys):
    """The main job end to end at toy size, then the CLI on its saved model."""
    out = tmp_path / "qs"
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "quickstart.py"), "--out", str(out),
         "--image-size", "32", "--steps", "6", "--finetune-steps", "6",
         "--flow-pretrain-steps", "6", "--train-scenes", "24", "--test-scenes", "6"],
        capture_output=True, text=True, timeout=900,  # as a user runs it: no log settings
        env={k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| gmmseg | model |" in done.stdout and "| softmax | mahalanobis |" in done.stdout
    for row in ("densehybrid_real | model:discriminative", "densehybrid_synthetic | model",
                "gmmseg_dp_real | model:generative"):
        assert f"| {row} |" in done.stdout, row
    assert os.path.getsize(out / "score_maps.png") > 0
    # Quiet start-up: none of TensorFlow's C++ log (absl, oneDNN, CUDA probes), no Keras noise.
    noise = re.findall(r".*(?:absl|cuda|CUDA|oneDNN|cpu_feature_guard|^[IWE]\d{4} |"
                       r"shuffle=True).*", done.stdout + done.stderr, flags=re.M)
    assert not noise, noise[:5]
    with open(out / "results.json") as file:
        results = json.load(file)["results"]
    from tests.test_training import _assert_recorded_metrics_are_the_models

    for name in ("softmax", "gmmseg"):
        # Each row is the saved model's own numbers (its own score, max softmax, mIoU).
        model = keras_gss.from_preset(str(out / f"{name}_preset"))
        _assert_recorded_metrics_are_the_models(model, results[name], image_size=32, scenes=6)
        assert set(results[name]["far-OOD"]) >= {"model", "max_softmax", "energy"}
        # Every anomaly set is also scored against each kind of known pixel alone.
        assert {"near-OOD/textures", "near-OOD/digits", "far-OOD/digits"} <= set(results[name])
        assert os.path.getsize(out / f"{name}_near-OOD_overlays.png") > 0
    DigitScenes(image_size=32).write(str(tmp_path / "data"),
                                     sizes={"test": 4, "test_near": 4}, verbose=0)
    # In process: the quick start above already covered a fresh interpreter.
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "gmmseg_preset"), "--data", str(tmp_path / "data"),
                     "--anomaly-splits", "test_near", "--out", str(tmp_path / "eval"),
                     "--name", "gmm", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| gmm | model |" in printed and "test_near/digits AUROC" in printed
    assert os.path.getsize(tmp_path / "eval" / "gmm_test_near_roc_pr.png") > 0
    # keras-gss predict on the same preset and written images.
    from PIL import Image
    import numpy as np
    from keras_gss.data import normalize_images

    image_dir = tmp_path / "data" / "test" / "images"
    assert cli.main(["predict", str(out / "gmmseg_preset"), str(image_dir),
                     "--out", str(tmp_path / "pred")]) == 0
    names = sorted(os.listdir(image_dir))
    model = keras_gss.from_preset(str(out / "gmmseg_preset"))
    for name in names:
        stem = tmp_path / "pred" / os.path.splitext(name)[0]
        ids = np.asarray(Image.open(f"{stem}_class_ids.png"))
        image = np.asarray(Image.open(image_dir / name).convert("RGB"))
        expected = model.predict(normalize_images(image[None]), verbose=0)[0].argmax(-1)
        assert (ids == expected).mean() > 0.999  # same input size, so no resampling
        for suffix in ("anomaly", "open_set"):
            assert np.asarray(Image.open(f"{stem}_{suffix}.png")).shape == (32, 32, 3)


def test_every_command_has_help(capsys):
    for command in ("list", "train", "evaluate", "predict", "convert", "publish"):
        try:
            cli.main([command, "--help"])
        except SystemExit as done:
            assert done.code == 0
        assert "usage: keras-gss " + command in capsys.readouterr().out


def test_zoo_readme_lists_every_preset(capsys):
    assert cli.main(["list", "--markdown"]) == 0
    table = capsys.readouterr().out.strip()
    with open(os.path.join(ROOT, "zoo", "README.md")) as file:
        assert table in file.read()  # regenerate with `keras-gss list --markdown`
    for name in keras_gss.list_presets():
        assert f"| `{name}` |" in table


def test_zoo_cards_match_the_records():
    from keras_gss.presets import preset_card

    cards = sorted(os.listdir(os.path.join(ROOT, "zoo", "cards")))
    assert cards == sorted(f"{name}.md" for name in keras_gss.list_presets())
    for name in keras_gss.list_presets():
        with open(os.path.join(ROOT, "zoo", "cards", f"{name}.md")) as file:
            assert file.read() == preset_card(name), f"regenerate zoo/cards/{name}.md"
    digits = preset_card("gmmseg_segformer_digitscenes")
    assert "| 35.8 | 78.9 | 20.1 | 43.0 | 78.0 | 14.9 | 41.3 |" in digits
    assert "Reported by the paper (GMMSeg Table 1" in preset_card("gmmseg_segformer_b5")

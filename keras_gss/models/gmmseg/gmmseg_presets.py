"""GMMSeg zoo records (architecture configs ship with the package).

Each record: backbone and head config; data config (input size, mean/std,
ignore index, classes, sliding window); open-set config (score, sign,
recommended threshold and its calibration, set when weights are published);
weights (Hub handle and pinned revision); provenance (paper, license,
training data, metrics measured here, and the paper's own numbers).
"""

from keras_gss.data.digit_scenes import CLASS_NAMES as DIGITSCENES_CLASSES
from keras_gss.data.normalization import IMAGENET_MEAN
from keras_gss.data.normalization import IMAGENET_STD
from keras_gss.data.readers import CITYSCAPES_CLASSES

_PAPER = (
    "Liang et al., GMMSeg: Gaussian Mixture based Generative Semantic "
    "Segmentation Models, NeurIPS 2022"
)
# Training settings of the paper (§4.1) and the authors' configs (specs §1.9).
_DATASETS = {
    "cityscapes": {
        "data": {"dataset": "cityscapes", "image_shape": (768, 768, 3),
                 "class_names": CITYSCAPES_CLASSES, "num_classes": 19,
                 "sliding_window": {"crop": 768, "stride": 512}},
        "training_dataset": "Cityscapes fine train (2,975 images, 19 classes)",
        "num_components": 5,
    },
    "ade20k": {
        "data": {"dataset": "ade20k", "image_shape": (512, 512, 3), "class_names": None,
                 "num_classes": 150, "sliding_window": None},
        "training_dataset": "ADE20K (ADEChallengeData2016) train (20,210 images, 150 classes)",
        "num_components": 8,  # the authors' ADE20K config
    },
    "coco_stuff10k": {
        "data": {"dataset": "coco_stuff10k", "image_shape": (512, 512, 3), "class_names": None,
                 "num_classes": 171, "sliding_window": None},
        "training_dataset": "COCO-Stuff-10k train (9,000 images, 171 classes)",
        "num_components": 5,
    },
    "digitscenes": {
        "data": {"dataset": "digitscenes", "image_shape": (96, 96, 3),
                 "class_names": DIGITSCENES_CLASSES, "num_classes": len(DIGITSCENES_CLASSES),
                 "sliding_window": None},
        "training_dataset": "DigitScenes train (2,000 generated 96×96 scenes, 9 classes; "
                            "keras_gss.data.DigitScenes, seed 0)",
        "num_components": 3,
    },
}
# Numbers printed in the paper (Tables 1 and 2), not measured by keras_gss.
_TABLE_1 = "GMMSeg Table 1 (single scale)"
_TABLE_2 = "GMMSeg Table 2 (anomaly score -max_c p(x|c))"
_PAPER_REPORTED = {
    "gmmseg_segformer_b5": {
        "source": f"{_TABLE_1}; {_TABLE_2}", "miou": 82.6,
        "fishyscapes_laf": {"auroc": 97.83, "ap": 50.03, "fpr95": 12.55},
        "road_anomaly": {"auroc": 89.37, "ap": 57.65, "fpr95": 44.34}},
    "gmmseg_segformer_b5_ade20k": {"source": _TABLE_1, "miou": 50.6},
    "gmmseg_segformer_b5_cocostuff10k": {
        "source": f"{_TABLE_1}; the authors' README gives 44.81", "miou": 44.7},
    "gmmseg_deeplabv3plus_resnet101": {
        "source": f"{_TABLE_1}; {_TABLE_2}; the paper's model runs at output stride 8, "
                  "keras-hub's at 32", "miou": 81.1,
        "fishyscapes_laf": {"auroc": 97.34, "ap": 43.47, "fpr95": 13.11},
        "road_anomaly": {"auroc": 84.71, "ap": 34.42, "fpr95": 47.90}},
}
# The quick start's small MiT (3 stages), sized for 2 CPU cores.
_DIGITSCENES_BACKBONE = {"architecture": "segformer", "variant": None,
                         "hidden_dims": [16, 32, 64], "depths": [1, 1, 1],
                         "num_heads": [1, 2, 4], "projection_filters": 64}


def _record(name, backbone, dataset, description, config=None):
    setting = _DATASETS[dataset]
    data = dict(setting["data"])
    num_classes = data.pop("num_classes")
    return {
        "family": "gmmseg",
        "task": "GMMSegImageSegmenter",
        "description": description,
        "backbone": backbone,
        "config": {"num_classes": num_classes, "num_components": setting["num_components"],
                   "embedding_dim": 64, "memory_size": 32000, **(config or {})},
        "data": {**data, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "ignore_index": 255},
        "open_set": {
            "score": "anomaly_score", "definition": "-max_c log p(x | c)",
            "higher_is_anomalous": True, "threshold": None,
            "calibration": "set from training.json when trained weights are published",
        },
        # Where the weights will be published; no revision until they are.
        "weights": {"handle": f"hf://keras-gss/{name}", "revision": None},
        "provenance": {
            "paper": _PAPER, "license": "Apache-2.0",
            "training_dataset": setting["training_dataset"],
            "recipe": f"zoo/recipes/{name}.json",
            "metrics": None,  # measured by keras_gss, with the command that measured them
            "paper_reported": _PAPER_REPORTED.get(name),
        },
    }


presets = {
    f"gmmseg_segformer_{v}": _record(
        f"gmmseg_segformer_{v}", {"architecture": "segformer", "variant": v}, "cityscapes",
        f"GMMSeg head (C=19, M=5, D=64) on SegFormer MiT-{v.upper()}, Cityscapes setting.")
    for v in ("b0", "b1", "b2", "b3", "b4", "b5")
}
presets.update({
    f"gmmseg_deeplabv3plus_{v}": _record(
        f"gmmseg_deeplabv3plus_{v}", {"architecture": "deeplabv3plus", "variant": v},
        "cityscapes",
        f"GMMSeg head (C=19, M=5, D=64) on DeepLabV3+ {v} (keras-hub, output stride 32), "
        "Cityscapes setting.")
    for v in ("resnet50", "resnet101")
})
presets["gmmseg_segformer_b5_ade20k"] = _record(
    "gmmseg_segformer_b5_ade20k", {"architecture": "segformer", "variant": "b5"}, "ade20k",
    "GMMSeg head (C=150, M=8, D=64) on SegFormer MiT-B5, ADE20K setting.")
presets["gmmseg_segformer_b5_cocostuff10k"] = _record(
    "gmmseg_segformer_b5_cocostuff10k", {"architecture": "segformer", "variant": "b5"},
    "coco_stuff10k",
    "GMMSeg head (C=171, M=5, D=64) on SegFormer MiT-B5, COCO-Stuff-10k setting.")
presets["gmmseg_segformer_digitscenes"] = _record(
    "gmmseg_segformer_digitscenes", _DIGITSCENES_BACKBONE, "digitscenes",
    "GMMSeg head (C=9, M=3, D=32) on a 3-stage MiT (16/32/64), DigitScenes 96×96; "
    "trains on 2 CPU cores in minutes.",
    config={"embedding_dim": 32, "memory_size": 2000, "class_norm": False})
# Printed by this run (2 CPU cores, 3 min 54 s); 200 test scenes per split.
presets["gmmseg_segformer_digitscenes"]["provenance"]["metrics"] = {
    "command": "keras-gss train zoo/recipes/gmmseg_segformer_digitscenes.json "
               "--out outputs/recipe_digitscenes",
    "date": "2026-11-23", "keras_gss_version": "0.1.0",
    "miou": 30.0,
    "near-OOD": {"auroc": 77.4, "ap": 11.5, "fpr95": 57.1},
    "far-OOD": {"auroc": 83.1, "ap": 22.3, "fpr95": 58.7},
}

"""GMMSeg zoo records (architecture configs ship with the package; layout in
`keras_gss.models.preset_records`)."""

from keras_gss.models.preset_records import DEEPLAB_VARIANTS
from keras_gss.models.preset_records import DIGITSCENES_BACKBONE
from keras_gss.models.preset_records import SEGFORMER_VARIANTS
from keras_gss.models.preset_records import zoo_record

_PAPER = (
    "Liang et al., GMMSeg: Gaussian Mixture based Generative Semantic "
    "Segmentation Models, NeurIPS 2022"
)
# Components per class: the paper's 5, the authors' 8 on ADE20K (specs §1.9).
_COMPONENTS = {"cityscapes": 5, "ade20k": 8, "coco_stuff10k": 5, "digitscenes": 3}
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


def _record(name, backbone, dataset, description, config=None):
    config = {"num_components": _COMPONENTS[dataset], "embedding_dim": 64,
              "memory_size": 32000, **(config or {})}
    return zoo_record(name, "gmmseg", "GMMSegImageSegmenter", _PAPER, backbone, dataset,
                      description, {"score": "anomaly_score",
                                    "definition": "-max_c log p(x | c)"},
                      config=config, paper_reported=_PAPER_REPORTED.get(name))


presets = {
    f"gmmseg_segformer_{v}": _record(
        f"gmmseg_segformer_{v}", {"architecture": "segformer", "variant": v}, "cityscapes",
        f"GMMSeg head (C=19, M=5, D=64) on SegFormer MiT-{v.upper()}, Cityscapes setting.")
    for v in SEGFORMER_VARIANTS
}
presets.update({
    f"gmmseg_deeplabv3plus_{v}": _record(
        f"gmmseg_deeplabv3plus_{v}", {"architecture": "deeplabv3plus", "variant": v},
        "cityscapes",
        f"GMMSeg head (C=19, M=5, D=64) on DeepLabV3+ {v} (keras-hub, output stride 32), "
        "Cityscapes setting.")
    for v in DEEPLAB_VARIANTS
})
presets["gmmseg_segformer_b5_ade20k"] = _record(
    "gmmseg_segformer_b5_ade20k", {"architecture": "segformer", "variant": "b5"}, "ade20k",
    "GMMSeg head (C=150, M=8, D=64) on SegFormer MiT-B5, ADE20K setting.")
# The authors' one released model: mmseg's SegFormer head and PyTorch's BatchNorm epsilon, so
# `keras-gss convert gmmseg` loads their checkpoint into exactly this architecture.
presets["gmmseg_segformer_b5_cocostuff10k"] = _record(
    "gmmseg_segformer_b5_cocostuff10k",
    {"architecture": "segformer", "variant": "b5", "decoder": "mmseg"}, "coco_stuff10k",
    "GMMSeg head (C=171, M=5, D=64) on MiT-B5 with mmseg's SegFormer head, COCO-Stuff-10k "
    "setting: the architecture of the authors' released checkpoint.",
    config={"norm_epsilon": 1e-5})
presets["gmmseg_segformer_digitscenes"] = _record(
    "gmmseg_segformer_digitscenes", DIGITSCENES_BACKBONE, "digitscenes",
    "GMMSeg head (C=9, M=3, D=32) on a 3-stage MiT (32/64/128), DigitScenes 96×96; "
    "trains on 2 CPU cores in minutes.",
    config={"embedding_dim": 32, "memory_size": 2000})
# Printed by this run (2 CPU cores, 5 min 1 s); 200 test scenes per split.
presets["gmmseg_segformer_digitscenes"]["provenance"]["metrics"] = {
    "command": "keras-gss train zoo/recipes/gmmseg_segformer_digitscenes.json "
               "--out outputs/recipe_digitscenes",
    "date": "2026-12-01", "keras_gss_version": "0.1.0",
    "miou": 35.8,
    "near-OOD": {"auroc": 78.9, "ap": 20.1, "fpr95": 43.0},
    "far-OOD": {"auroc": 78.0, "ap": 14.9, "fpr95": 41.3},
}

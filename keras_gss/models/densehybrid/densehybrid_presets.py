"""DenseHybrid zoo records (architecture configs ship with the package; layout in
`keras_gss.models.preset_records`)."""

from keras_gss.models.preset_records import DEEPLAB_VARIANTS
from keras_gss.models.preset_records import DIGITSCENES_BACKBONE
from keras_gss.models.preset_records import SEGFORMER_VARIANTS
from keras_gss.models.preset_records import zoo_record

_PAPER = ("Grcić and Šegvić, Hybrid Open-set Segmentation with Synthetic Negative Data, "
          "IEEE TPAMI 2024 (DenseHybrid, ECCV 2022)")
_SCORE = {"score": "anomaly_score",
          "definition": "ln P(d_out|x) - LSE(s) (Eq. 9); parts: discriminative_score, "
                        "generative_score"}
# Eq. 41's (β1, β2 = β3, β4): the paper's LDN setting for SegFormer (not in the paper) and
# the small benchmark, its DeepLabV3+ (Fishyscapes) setting for DeepLabV3+.
_BETAS = {"segformer": [1.0, 0.3, 0.3, 0.03], "deeplabv3plus": [1.0, 0.1, 0.1, 0.01]}


def _record(name, backbone, dataset, description):
    betas = _BETAS[backbone["architecture"]]
    return zoo_record(name, "densehybrid", "DenseHybridImageSegmenter", _PAPER, backbone,
                      dataset, description, _SCORE, config={"betas": betas})


presets = {
    f"densehybrid_segformer_{v}": _record(
        f"densehybrid_segformer_{v}", {"architecture": "segformer", "variant": v},
        "cityscapes",
        f"DenseHybrid (C=19; dataset-posterior head, hybrid score) on SegFormer "
        f"MiT-{v.upper()}, Cityscapes setting; fine-tuned with pasted ADE20K negatives.")
    for v in SEGFORMER_VARIANTS
}
presets.update({
    f"densehybrid_deeplabv3plus_{v}": _record(
        f"densehybrid_deeplabv3plus_{v}", {"architecture": "deeplabv3plus", "variant": v},
        "cityscapes",
        f"DenseHybrid (C=19) on DeepLabV3+ {v} (keras-hub, output stride 32; the paper's is "
        "WideResNet-38), Cityscapes setting; fine-tuned with pasted ADE20K negatives.")
    for v in DEEPLAB_VARIANTS
})
presets["densehybrid_segformer_digitscenes"] = _record(
    "densehybrid_segformer_digitscenes", DIGITSCENES_BACKBONE, "digitscenes",
    "DenseHybrid (C=9) on the quick start's 3-stage MiT (32/64/128), DigitScenes 96×96, "
    "with pasted scikit-image pictures no test split uses as negatives.")

"""L-GMM zoo records (architecture configs ship with the package; layout in
`keras_gss.models.preset_records`)."""

from keras_gss.models.preset_records import DIGITSCENES_BACKBONE
from keras_gss.models.preset_records import SEGFORMER_VARIANTS
from keras_gss.models.preset_records import zoo_record

_PAPER = ("Anonymous authors, A latent generative model for closed-set and open-set "
          "recognition (L-GMM; under review, no code released)")
_SCORE = {"score": "anomaly_score", "definition": "-max_y log p(z | y)"}
# Numbers printed in the paper (Tables 5, 6 and 8), not measured by keras_gss.
_PAPER_REPORTED = {
    "lgmm_resnet50": {"source": "L-GMM Table 8 (ImageNet val, from scratch)",
                      "top1": 76.51, "top5": 93.03},
    "lgmm_deeplabv3plus_resnet101": {
        "source": "L-GMM Tables 5 and 6 (the text says 81.0 mIoU)", "miou": 81.3,
        "fishyscapes_laf": {"auroc": 97.31, "ap": 45.42, "fpr95": 14.15},
        "road_anomaly": {"auroc": 85.01, "ap": 34.73, "fpr95": 48.21}},
    "lgmm_segformer_b5": {
        "source": "L-GMM Tables 5 and 6 ('MiT-Base'; its baseline numbers are GMMSeg's B5)",
        "miou": 82.5,
        "fishyscapes_laf": {"auroc": 97.76, "ap": 48.75, "fpr95": 13.21},
        "road_anomaly": {"auroc": 89.41, "ap": 58.13, "fpr95": 45.29}},
}
_HEAD = "L-GMM head (G=3, d=128, 2000 embeddings per class)"


def _record(name, backbone, dataset, description, task="LGMMImageSegmenter", config=None):
    return zoo_record(name, "lgmm", task, _PAPER, backbone, dataset, description, _SCORE,
                      config={"num_components": 3, "embedding_dim": 128,
                              "memory_size": 2000, **(config or {})},
                      paper_reported=_PAPER_REPORTED.get(name))


classifier_presets = {
    "lgmm_resnet50": _record(
        "lgmm_resnet50", {"architecture": "resnet", "variant": "resnet50"}, "imagenet",
        f"{_HEAD} on a keras-hub ResNet-50 image encoder, ImageNet-1K classification "
        "setting (trained from scratch, as the paper does).", task="LGMMImageClassifier"),
}
# `keras-gss train` trains segmenters from the dataset readers; there is no ImageNet reader,
# so the classifier is trained with `fit` (examples/open_set_digits.py shows how).
classifier_presets["lgmm_resnet50"]["provenance"]["recipe"] = None
segmenter_presets = {
    f"lgmm_segformer_{v}": _record(
        f"lgmm_segformer_{v}", {"architecture": "segformer", "variant": v}, "cityscapes",
        f"{_HEAD} per pixel on SegFormer MiT-{v.upper()}, Cityscapes setting.")
    for v in SEGFORMER_VARIANTS
}
segmenter_presets["lgmm_deeplabv3plus_resnet101"] = _record(
    "lgmm_deeplabv3plus_resnet101", {"architecture": "deeplabv3plus", "variant": "resnet101"},
    "cityscapes",
    f"{_HEAD} per pixel on DeepLabV3+ ResNet-101 (keras-hub, output stride 32), Cityscapes "
    "setting.")
segmenter_presets["lgmm_segformer_digitscenes"] = _record(
    "lgmm_segformer_digitscenes", DIGITSCENES_BACKBONE, "digitscenes",
    "L-GMM head (C=9, G=3, d=128, 2000 embeddings per class) on the quick start's 3-stage "
    "MiT (32/64/128), DigitScenes 96×96; trains on 2 CPU cores in minutes.")

"""Softmax baseline zoo records: the closed-set models the open-set families are measured
against."""

from keras_gss.models.preset_records import DIGITSCENES_BACKBONE
from keras_gss.models.preset_records import zoo_record

_SEGFORMER = ("Xie et al., SegFormer: Simple and Efficient Design for Semantic Segmentation "
              "with Transformers, NeurIPS 2021")
_DEEPLAB = ("Chen et al., Encoder-Decoder with Atrous Separable Convolution for Semantic "
            "Image Segmentation (DeepLabV3+), ECCV 2018")
_SCORE = {"score": "max_softmax", "definition": "1 - max_c softmax(logits)_c"}


def _record(name, paper, backbone, dataset, description):
    return zoo_record(name, "softmax", "SoftmaxImageSegmenter", paper, backbone, dataset,
                      description, _SCORE)


presets = {
    "softmax_segformer_b5": _record(
        "softmax_segformer_b5", _SEGFORMER, {"architecture": "segformer", "variant": "b5"},
        "cityscapes", "Softmax classifier (C=19) on SegFormer MiT-B5, Cityscapes setting; "
        "anomaly score max softmax."),
    "softmax_deeplabv3plus_resnet101": _record(
        "softmax_deeplabv3plus_resnet101", _DEEPLAB,
        {"architecture": "deeplabv3plus", "variant": "resnet101"}, "cityscapes",
        "Softmax classifier (C=19) on DeepLabV3+ ResNet-101 (keras-hub, output stride 32), "
        "Cityscapes setting; anomaly score max softmax."),
    "softmax_segformer_digitscenes": _record(
        "softmax_segformer_digitscenes", _SEGFORMER, DIGITSCENES_BACKBONE, "digitscenes",
        "Softmax classifier (C=9) on the quick start's 3-stage MiT (32/64/128), DigitScenes "
        "96×96; anomaly score max softmax."),
}

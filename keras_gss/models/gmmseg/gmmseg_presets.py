"""GMMSeg zoo records (architecture configs ship with the package)."""

from keras_gss.data.normalization import IMAGENET_MEAN
from keras_gss.data.normalization import IMAGENET_STD
from keras_gss.data.readers import CITYSCAPES_CLASSES

# Cityscapes setting of the paper (§4.1): 768 crops, sliding-window test.
_CITYSCAPES_DATA = {
    "dataset": "cityscapes",
    "image_shape": (768, 768, 3),
    "mean": IMAGENET_MEAN,
    "std": IMAGENET_STD,
    "ignore_index": 255,
    "class_names": CITYSCAPES_CLASSES,
    "sliding_window": {"crop": 768, "stride": 512},
}
_GMM_CONFIG = {
    "num_classes": len(CITYSCAPES_CLASSES),
    "num_components": 5,
    "embedding_dim": 64,
    "memory_size": 32000,
}
_OPEN_SET = {"score": "anomaly_score", "higher_is_anomalous": True}
_PAPER = (
    "Liang et al., GMMSeg: Gaussian Mixture based Generative Semantic "
    "Segmentation Models, NeurIPS 2022"
)


def _record(name, architecture, variant, description):
    return {
        "family": "gmmseg",
        "task": "GMMSegImageSegmenter",
        "description": description,
        "backbone": {"architecture": architecture, "variant": variant},
        "config": dict(_GMM_CONFIG),
        "data": dict(_CITYSCAPES_DATA),
        "open_set": dict(_OPEN_SET),
        # Where the weights will be published; no revision until they are.
        "weights": {"handle": f"hf://keras-gss/{name}", "revision": None},
        "provenance": {"paper": _PAPER, "license": "Apache-2.0"},
    }


presets = {
    f"gmmseg_segformer_{v}": _record(
        f"gmmseg_segformer_{v}", "segformer", v,
        f"GMMSeg head (C=19, M=5, D=64) on SegFormer MiT-{v.upper()}, "
        "Cityscapes setting.",
    )
    for v in ("b0", "b1", "b2", "b3", "b4", "b5")
}
presets.update(
    {
        f"gmmseg_deeplabv3plus_{v}": _record(
            f"gmmseg_deeplabv3plus_{v}", "deeplabv3plus", v,
            f"GMMSeg head (C=19, M=5, D=64) on DeepLabV3+ {v} "
            "(keras-hub, output stride 32), Cityscapes setting.",
        )
        for v in ("resnet50", "resnet101")
    }
)

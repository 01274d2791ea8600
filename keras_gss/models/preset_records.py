"""What every family's zoo record shares: dataset settings and the record's layout.

Each record: backbone and head config; data config (input size, mean/std,
ignore index, classes, sliding window); open-set config (score, sign,
recommended threshold and its calibration, set when weights are published);
weights (Hub handle and pinned revision); provenance (paper, license,
training data, recipe, metrics measured here, and the paper's own numbers).
"""

from keras_gss.data.digit_scenes import CLASS_NAMES as DIGITSCENES_CLASSES
from keras_gss.data.normalization import IMAGENET_MEAN
from keras_gss.data.normalization import IMAGENET_STD
from keras_gss.data.readers import CITYSCAPES_CLASSES
from keras_gss.data.readers import COCO_STUFF_CLASSES

# The papers' training settings per dataset (GMMSeg §4.1, specs §1.9). ADE20K and COCO-Stuff are
# tested as mmseg does (keep-ratio resize to 2048×512), but in 512 windows 341 apart, not whole:
# keras-hub's MiT takes square inputs of its built size.
MMSEG_512 = {"crop": 512, "stride": 341, "scale": (2048, 512)}
DATASETS = {
    "cityscapes": {
        "data": {"dataset": "cityscapes", "image_shape": (768, 768, 3),
                 "class_names": CITYSCAPES_CLASSES, "num_classes": 19,
                 "sliding_window": {"crop": 768, "stride": 512}},
        "training_dataset": "Cityscapes fine train (2,975 images, 19 classes)",
    },
    "ade20k": {
        "data": {"dataset": "ade20k", "image_shape": (512, 512, 3), "class_names": None,
                 "num_classes": 150, "sliding_window": MMSEG_512},
        "training_dataset": "ADE20K (ADEChallengeData2016) train (20,210 images, 150 classes)",
    },
    "coco_stuff10k": {
        "data": {"dataset": "coco_stuff10k", "image_shape": (512, 512, 3),
                 "class_names": COCO_STUFF_CLASSES, "num_classes": 171,
                 "sliding_window": MMSEG_512},
        "training_dataset": "COCO-Stuff-10k train (9,000 images, 171 classes)",
    },
    "imagenet": {
        "data": {"dataset": "imagenet", "image_shape": (224, 224, 3), "class_names": None,
                 "num_classes": 1000, "sliding_window": None},
        "training_dataset": "ImageNet-1K train (1.28M images, 1000 classes)",
    },
    "digitscenes": {
        "data": {"dataset": "digitscenes", "image_shape": (96, 96, 3),
                 "class_names": DIGITSCENES_CLASSES, "num_classes": len(DIGITSCENES_CLASSES),
                 "sliding_window": None},
        "training_dataset": "DigitScenes train (2,000 generated 96×96 scenes, 9 classes; "
                            "keras_gss.data.DigitScenes, seed 0)",
    },
}
# The quick start's small MiT (3 stages at MiT-B0's first widths), sized for 2 CPU cores.
DIGITSCENES_BACKBONE = {"architecture": "segformer", "variant": None,
                        "hidden_dims": [32, 64, 128], "depths": [1, 1, 1],
                        "num_heads": [1, 2, 4], "projection_filters": 128}
SEGFORMER_VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5")
DEEPLAB_VARIANTS = ("resnet50", "resnet101")


def zoo_record(name, family, task, paper, backbone, dataset, description, open_set,
               config=None, paper_reported=None):
    """One zoo record, in the layout every family shares (see the module docstring).

    Args:
        name: str. The preset name; its Hub handle is `hf://keras-gss/<name>`.
        family: str. The family (`"gmmseg"`, `"softmax"`, ...).
        task: str. The task class's name, registered with the family's presets.
        paper: str. The paper the record follows.
        backbone: dict. `build_backbone` arguments.
        dataset: str. A key of `DATASETS`.
        description: str. One sentence.
        open_set: dict. `score` and `definition` of the anomaly score.
        config: dict. Task arguments beyond `num_classes`.
        paper_reported: dict. Numbers printed in the paper, with their source.
    """
    setting = DATASETS[dataset]
    data = dict(setting["data"])
    num_classes = data.pop("num_classes")
    return {
        "family": family,
        "task": task,
        "description": description,
        "backbone": backbone,
        "config": {"num_classes": num_classes, **(config or {})},
        "data": {**data, "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "ignore_index": 255},
        "open_set": {
            **open_set, "higher_is_anomalous": True, "threshold": None,
            "calibration": "set from training.json when trained weights are published",
        },
        # Where the weights will be published; no revision until they are.
        "weights": {"handle": f"hf://keras-gss/{name}", "revision": None},
        "provenance": {
            "paper": paper, "license": "Apache-2.0",
            "training_dataset": setting["training_dataset"],
            "recipe": f"zoo/recipes/{name}.json",
            "metrics": None,  # measured by keras_gss, with the command that measured them
            "paper_reported": paper_reported,
        },
    }

"""Readers for the official directory layouts of the papers' benchmarks.

Every reader returns an unbatched `tf.data.Dataset` in a fixed (sorted)
order. Closed-set readers yield `(image, label)`; anomaly readers yield
`(image, label, anomaly)`:

- `image`: uint8 `(H, W, 3)`;
- `label`: int32 `(H, W)`, train ids `0..C-1`, `255` = ignore (anomaly
  pixels and sets without class labels are all `255`);
- `anomaly`: int32 `(H, W)`, `1` = anomaly, `0` = inlier, `255` = void (the
  SMIYC convention), ready for `keras_gss.metrics.anomaly_metrics`.

One mechanism serves every dataset: a layout lists `(image, label file)`
pairs and gives 256-entry lookup tables from the stored label values to
train ids and to the anomaly mask. A missing directory or an image without
its label file raises `FileNotFoundError` naming the expected path.

Example, on a tiny Cityscapes-layout folder:

>>> import os, tempfile
>>> import numpy as np
>>> from PIL import Image
>>> root = tempfile.mkdtemp()
>>> for folder in ("leftImg8bit/val/lindau", "gtFine/val/lindau"):
...     os.makedirs(os.path.join(root, folder))
>>> Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(
...     f"{root}/leftImg8bit/val/lindau/lindau_000000_000019_leftImg8bit.png")
>>> Image.fromarray(np.full((4, 8), 13, np.uint8)).save(
...     f"{root}/gtFine/val/lindau/lindau_000000_000019_gtFine_labelTrainIds.png")
>>> image, label = next(iter(read_cityscapes(root, "val")))
>>> image.shape, image.dtype.name, int(label[0, 0])
(TensorShape([4, 8, 3]), 'uint8', 13)
>>> import shutil; shutil.rmtree(root)
"""

import glob
import json
import os
import struct

import numpy as np

from keras_gss.utils.checks import check_choice

IGNORE = 255

# Cityscapes labelIds -> trainIds (cityscapesscripts' `labels.py`); others ignore.
CITYSCAPES_ID_TO_TRAIN_ID = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
# COCO ids 1..182 that COCO-Stuff annotates; the 11 unused thing ids are dropped.
COCO_STUFF_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
# COCO-Stuff's 171 names in that order (80 things, then 91 stuff), as mmseg's COCOStuffDataset.
COCO_STUFF_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush", "banner", "blanket", "branch", "bridge", "building-other", "bush",
    "cabinet", "cage", "cardboard", "carpet", "ceiling-other", "ceiling-tile", "cloth",
    "clothes", "clouds", "counter", "cupboard", "curtain", "desk-stuff", "dirt", "door-stuff",
    "fence", "floor-marble", "floor-other", "floor-stone", "floor-tile", "floor-wood",
    "flower", "fog", "food-other", "fruit", "furniture-other", "grass", "gravel",
    "ground-other", "hill", "house", "leaves", "light", "mat", "metal", "mirror-stuff",
    "moss", "mountain", "mud", "napkin", "net", "paper", "pavement", "pillow", "plant-other",
    "plastic", "platform", "playingfield", "railing", "railroad", "river", "road", "rock",
    "roof", "rug", "salad", "sand", "sea", "shelf", "sky-other", "skyscraper", "snow",
    "solid-other", "stairs", "stone", "straw", "structural-other", "table", "tent",
    "textile-other", "towel", "tree", "vegetable", "wall-brick", "wall-concrete",
    "wall-other", "wall-panel", "wall-stone", "wall-tile", "wall-wood", "water-other",
    "waterdrops", "window-blind", "window-other", "wood",
)
# StreetHazards stores 1..14: 4 ("other") is ignored, 14 is the anomaly.
STREETHAZARDS_CLASSES = (
    "unlabeled", "building", "fence", "pedestrian", "pole", "road line",
    "road", "sidewalk", "vegetation", "car", "wall", "traffic sign",
)


def _table(mapping, default=IGNORE):
    """A 256-entry lookup table from stored values to ids."""
    table = np.full(256, default, np.int32)
    for stored, value in mapping.items():
        table[stored] = value
    return table


def _shift_table(num_classes, offset):
    """Stored `v` in `offset..offset+C-1` -> `v - offset`; the rest ignore."""
    return _table({v + offset: v for v in range(num_classes)})


def _missing(dataset, pattern, fix):
    return FileNotFoundError(
        f"{dataset}: expected files matching `{pattern}`, found none. {fix}"
    )


def _pairs(dataset, image_pattern, label_of, fix):
    """Sorted `(image, label)` paths; every image must have its label file."""
    images = sorted(glob.glob(image_pattern))
    if not images:
        raise _missing(dataset, image_pattern, fix)
    labels = [label_of(path) for path in images]
    for image, label in zip(images, labels):
        if not os.path.isfile(label):
            raise FileNotFoundError(
                f"{dataset}: image `{image}` has no label file; expected "
                f"`{label}`. {fix}"
            )
    return images, labels


def _require_dir(dataset, path, fix):
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{dataset}: expected the directory `{path}`, which does not "
            f"exist. {fix}"
        )


def _decoder(example_path, channels, tf):
    """A tf.data decode function for files like `example_path`.

    PNG/JPEG decode natively; COCO-Stuff `.mat` labels (scipy) and other
    image formats such as SMIYC's WebP (Pillow) go through Python.
    """
    extension = os.path.splitext(example_path)[1].lower()
    if extension in (".png", ".jpg", ".jpeg", ".bmp", ".gif"):
        return lambda path: tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )

    def python_decode(file_name):
        file_name = file_name.decode()
        if extension == ".mat":
            from scipy.io import loadmat

            return loadmat(file_name)["S"].astype(np.uint8)[..., None]
        from PIL import Image

        mode = "RGB" if channels == 3 else "L"
        array = np.asarray(Image.open(file_name).convert(mode), np.uint8)
        return array.reshape(array.shape[:2] + (channels,))

    return lambda path: tf.numpy_function(python_decode, [path], tf.uint8)


def image_size(path):
    """`(height, width)` of a PNG or JPEG from its header, or None for other formats.

    Reads at most the first 64 KiB, so checking a whole dataset is cheap.
    """
    with open(path, "rb") as file:
        head = file.read(65536)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return height, width
    if head[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 9 <= len(head):  # JPEG markers up to the frame header (SOFn)
        if head[offset] != 0xFF:
            return None
        marker = head[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        length = struct.unpack(">H", head[offset + 2:offset + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", head[offset + 5:offset + 9])
            return height, width
        offset += 2 + length
    return None


def _check_sizes(images, labels):
    """Raise a `ValueError` naming the first image and label whose sizes differ."""
    for image, label in zip(images, labels):
        image_shape, label_shape = image_size(image), image_size(label)
        if image_shape and label_shape and image_shape != label_shape:
            raise ValueError(
                f"`images` and `labels`: image and label file sizes differ: {image} is "
                f"{image_shape[1]}×{image_shape[0]} but {label} is "
                f"{label_shape[1]}×{label_shape[0]}. Fix or remove that pair (a label "
                "must be the size of its image).")


def build_dataset(images, labels, label_table=None, anomaly_table=None):
    """A `tf.data.Dataset` of decoded pairs mapped through lookup tables.

    Args:
        images: list of image paths (PNG, JPEG; other formats via Pillow).
        labels: list of label paths, one per image, of its size (PNG, or a COCO-Stuff
            `.mat` holding `S`).
        label_table: 256 int32 values mapping stored label values to train
            ids, or None for all-ignore labels (anomaly-only sets).
        anomaly_table: 256 int32 values mapping stored values to the
            anomaly mask (0 / 1 / 255), or None for a closed-set reader.

    Returns:
        `(image, label)` or `(image, label, anomaly)` elements.
    """
    import tensorflow as tf

    label_lut = tf.constant(
        np.full(256, IGNORE, np.int32) if label_table is None else label_table
    )
    anomaly_lut = None if anomaly_table is None else tf.constant(anomaly_table)

    decode_image = _decoder(images[0], 3, tf)
    decode_label = _decoder(labels[0], 1, tf)

    def load(image_path, label_path):
        image = tf.ensure_shape(decode_image(image_path), [None, None, 3])
        stored = tf.ensure_shape(decode_label(label_path), [None, None, 1])
        same_size = tf.reduce_all(tf.shape(image)[:2] == tf.shape(stored)[:2])
        check = tf.debugging.Assert(
            same_size, ["image and label file sizes differ:", image_path, label_path])
        with tf.control_dependencies([check]):
            stored = tf.cast(stored[..., 0], tf.int32)
        label = tf.gather(label_lut, stored)
        if anomaly_lut is None:
            return image, label
        return image, label, tf.gather(anomaly_lut, stored)

    _check_sizes(images, labels)  # eagerly: a tf.data error would not name the argument
    # Absolute, so the dataset still reads after the working directory changes.
    images = [os.path.abspath(path) for path in images]
    labels = [os.path.abspath(path) for path in labels]
    pairs = tf.data.Dataset.from_tensor_slices((images, labels))
    return pairs.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def read_cityscapes(root, split="train"):
    """Cityscapes fine annotations, 19 train ids.

    Layout: `root/leftImg8bit/<split>/<city>/<stem>_leftImg8bit.png` and
    `root/gtFine/<split>/<city>/<stem>_gtFine_labelTrainIds.png` (written by
    cityscapesscripts' `createTrainIdLabelImgs`). Where the trainIds files
    are absent, `<stem>_gtFine_labelIds.png` is read and mapped with the
    official table. Splits: `train`, `val`, `test`.
    """
    check_choice("split", split, ("train", "val", "test"))
    fix = ("Download leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip "
           "from cityscapes-dataset.com and unpack both into `root`.")
    _require_dir("Cityscapes", os.path.join(root, "leftImg8bit", split), fix)
    pattern = os.path.join(root, "leftImg8bit", split, "*", "*_leftImg8bit.png")

    def label_of(suffix):
        def find(path):
            city = os.path.basename(os.path.dirname(path))
            stem = os.path.basename(path)[: -len("_leftImg8bit.png")]
            return os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_{suffix}.png")

        return find

    first = sorted(glob.glob(pattern))[:1]
    if first and not os.path.isfile(label_of("labelTrainIds")(first[0])):
        images, labels = _pairs("Cityscapes", pattern, label_of("labelIds"), fix)
        return build_dataset(images, labels, _table(CITYSCAPES_ID_TO_TRAIN_ID))
    images, labels = _pairs("Cityscapes", pattern, label_of("labelTrainIds"), fix)
    return build_dataset(images, labels, _table({i: i for i in range(19)}))


def read_ade20k(root, split="training"):
    """ADE20K SceneParsing (ADEChallengeData2016), 150 classes.

    Layout: `root/images/<split>/ADE_*.jpg` and
    `root/annotations/<split>/ADE_*.png`, stored values 1..150 -> 0..149 and
    0 ("other") -> ignore. Splits: `training`, `validation`.
    """
    check_choice("split", split, ("training", "validation"))
    fix = ("Download ADEChallengeData2016.zip (MIT Scene Parsing benchmark) and "
           "pass its unpacked folder as `root`.")
    _require_dir("ADE20K", os.path.join(root, "images", split), fix)
    images, labels = _pairs(
        "ADE20K",
        os.path.join(root, "images", split, "*.jpg"),
        lambda p: os.path.join(root, "annotations", split,
                               os.path.basename(p)[:-4] + ".png"),
        fix,
    )
    return build_dataset(images, labels, _shift_table(150, 1))


def read_coco_stuff10k(root, split="train"):
    """COCO-Stuff-10k v1.1, 171 classes (things and stuff).

    Layout: `root/imageLists/<split>.txt` naming images, `root/images/<name>.jpg`
    and `root/annotations/<name>.mat` (MATLAB, labels in `S`; needs scipy).
    Stored values are COCO ids 1..182, mapped in order to 0..170 without the 11
    unused thing ids; 0 (unlabeled) -> ignore. Splits: `train`, `test`.
    """
    check_choice("split", split, ("train", "test"))
    fix = ("Download cocostuff-10k-v1.1.zip (github.com/nightrome/cocostuff10k) "
           "and pass its unpacked folder as `root`.")
    listing = os.path.join(root, "imageLists", f"{split}.txt")
    if not os.path.isfile(listing):
        raise _missing("COCO-Stuff-10k", listing, fix)
    with open(listing) as file:
        names = [line.strip() for line in file if line.strip()]
    images = [os.path.join(root, "images", f"{name}.jpg") for name in names]
    labels = [os.path.join(root, "annotations", f"{name}.mat") for name in names]
    for path in images + labels:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"COCO-Stuff-10k: `{listing}` lists a file that is missing: "
                f"expected `{path}`. {fix}"
            )
    used = [i for i in range(1, 183) if i not in COCO_STUFF_UNUSED_IDS]
    return build_dataset(images, labels, _table({c: i for i, c in enumerate(used)}))


def read_fishyscapes_laf(root):
    """Fishyscapes Lost & Found validation set (anomaly mask only).

    Layout: `root/original/<name>.png` and `root/labels/<name>.png`, stored
    0 = inlier, 1 = anomaly, 255 (or 2, as some exports write it) = void.
    """
    fix = ("Export the Fishyscapes LostAndFound validation set (fishyscapes.com) "
           "as `original/` images and `labels/` masks under `root`.")
    _require_dir("Fishyscapes L&F", os.path.join(root, "original"), fix)
    images, labels = _pairs(
        "Fishyscapes L&F",
        os.path.join(root, "original", "*.png"),
        lambda p: os.path.join(root, "labels", os.path.basename(p)),
        fix,
    )
    return build_dataset(images, labels, None, _table({0: 0, 1: 1}))


def read_road_anomaly(root):
    """Road Anomaly (Lis et al. 2019), anomaly mask only.

    Layout: `root/frame_list.json` naming the frames, `root/frames/<name>.jpg`
    and `root/frames/<stem>.labels/labels_semantic.png`, stored 0 = inlier,
    2 = anomaly, any other value = void.
    """
    fix = ("Download RoadAnomaly_jpg.zip (road anomaly dataset, Lis et al.) and "
           "pass its `RoadAnomaly_jpg` folder as `root`.")
    listing = os.path.join(root, "frame_list.json")
    if not os.path.isfile(listing):
        raise _missing("Road Anomaly", listing, fix)
    with open(listing) as file:
        names = json.load(file)
    images = [os.path.join(root, "frames", name) for name in names]
    labels = [os.path.join(root, "frames", os.path.splitext(name)[0] + ".labels",
                           "labels_semantic.png") for name in names]
    for path in images + labels:
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"Road Anomaly: `{listing}` lists a frame whose file is "
                f"missing: expected `{path}`. {fix}"
            )
    return build_dataset(images, labels, None, _table({0: 0, 2: 1}))


def read_smiyc(root, track="anomaly"):
    """SegmentMeIfYouCan validation sets: RoadAnomaly21 or RoadObstacle21.

    Layout: `root/dataset_AnomalyTrack/images/<name>.jpg` (track `anomaly`) or
    `root/dataset_ObstacleTrack/images/<name>.webp` (track `obstacle`, read
    with Pillow), masks `.../labels_masks/<name>_labels_semantic.png`, stored
    0 = inlier, 1 = anomaly, 255 = void. Test images have no public masks.
    """
    check_choice("track", track, ("anomaly", "obstacle"))
    folder = os.path.join(root, "dataset_AnomalyTrack" if track == "anomaly"
                          else "dataset_ObstacleTrack")
    fix = ("Download the SegmentMeIfYouCan dataset (segmentmeifyoucan.com) and "
           "pass the folder holding `dataset_AnomalyTrack/` and "
           "`dataset_ObstacleTrack/` as `root`.")
    _require_dir("SMIYC", os.path.join(folder, "labels_masks"), fix)
    images, labels = _pairs(
        "SMIYC",
        os.path.join(folder, "images", "*.jpg" if track == "anomaly" else "*.webp"),
        lambda p: os.path.join(folder, "labels_masks",
                               os.path.splitext(os.path.basename(p))[0]
                               + "_labels_semantic.png"),
        fix,
    )
    return build_dataset(images, labels, None, _table({0: 0, 1: 1}))


def read_streethazards(root, split="train"):
    """StreetHazards (Hendrycks et al.), 12 known classes plus anomalies.

    Layout: `root/train/images/training/<town>/*.png` (split `train`),
    `root/train/images/validation/<town>/*.png` (`val`) and
    `root/test/images/test/<town>/*.png` (`test`), each with its mask at the
    same path under `annotations/` instead of `images/`. Stored 1..14:
    classes 1-3 and 5-13 -> 0..11, 4 ("other") -> ignore, 14 -> anomaly
    (DenseHybrid's mapping). The `test` split yields the anomaly mask too.
    """
    check_choice("split", split, ("train", "val", "test"))
    parent, folder = {"train": ("train", "training"), "val": ("train", "validation"),
                      "test": ("test", "test")}[split]
    fix = ("Download streethazards_train.tar and streethazards_test.tar "
           "(github.com/hendrycks/anomaly-seg) and unpack both into `root`.")
    image_dir = os.path.join(root, parent, "images", folder)
    _require_dir("StreetHazards", image_dir, fix)
    images, labels = _pairs(
        "StreetHazards",
        os.path.join(image_dir, "*", "*.png"),
        lambda p: os.path.join(root, parent, "annotations", folder,
                               *p.split(os.sep)[-2:]),
        fix,
    )
    known = [1, 2, 3] + list(range(5, 14))
    classes = _table({stored: i for i, stored in enumerate(known)})
    if split != "test":
        return build_dataset(images, labels, classes)
    anomaly = _table({**{stored: 0 for stored in known}, 14: 1})
    return build_dataset(images, labels, classes, anomaly)


READERS = {
    "cityscapes": read_cityscapes,
    "ade20k": read_ade20k,
    "coco_stuff10k": read_coco_stuff10k,
    "fishyscapes_laf": read_fishyscapes_laf,
    "road_anomaly": read_road_anomaly,
    "smiyc": read_smiyc,
    "streethazards": read_streethazards,
}


def read_dataset(name, root, **kwargs):
    """Read a benchmark by name: `read_dataset("cityscapes", root, split="val")`."""
    check_choice("name", name, tuple(READERS))
    return READERS[name](root, **kwargs)

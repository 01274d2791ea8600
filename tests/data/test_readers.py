"""Readers on tiny fixture directories written in each benchmark's official layout."""

import json
import os

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from keras_gss.data import readers

# Stored label values covering every rule of every layout: 0..20 plus 255.
STORED = np.arange(24, dtype=np.uint8).reshape(4, 6)
STORED[3, 5] = 255


def _image(path, seed, size=(4, 6)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
    Image.fromarray(pixels).save(path, **({"lossless": True} if path.endswith(".webp") else {}))
    return pixels


def _label(path, values=STORED):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(values).save(path)


def _take(dataset):
    return [tuple(np.asarray(t) for t in element) for element in dataset]


def _expected(mapping):
    table = np.full(256, 255, np.int32)
    for stored, value in mapping.items():
        table[stored] = value
    return table[STORED]


def test_cityscapes_train_ids_and_label_ids(tmp_path):
    root = str(tmp_path)
    pixels = {}
    for city, stem, seed in (("aachen", "aachen_000001_000019", 1),
                             ("bremen", "bremen_000000_000019", 2)):
        pixels[stem] = _image(f"{root}/leftImg8bit/train/{city}/{stem}_leftImg8bit.png", seed)
        _label(f"{root}/gtFine/train/{city}/{stem}_gtFine_labelTrainIds.png")
        _label(f"{root}/gtFine/train/{city}/{stem}_gtFine_labelIds.png")
    elements = _take(readers.read_cityscapes(root, "train"))
    assert len(elements) == 2
    np.testing.assert_array_equal(elements[0][0], pixels["aachen_000001_000019"])  # sorted order
    # trainIds files are read as they are: 0..18 kept, the rest ignored.
    np.testing.assert_array_equal(elements[1][1], np.where(STORED < 19, STORED, 255))
    assert elements[0][1].dtype == np.int32 and elements[0][0].dtype == np.uint8

    for path in tmp_path.glob("gtFine/train/*/*labelTrainIds.png"):
        path.unlink()
    _, label = _take(readers.read_cityscapes(root, "train"))[0]
    np.testing.assert_array_equal(label, _expected(readers.CITYSCAPES_ID_TO_TRAIN_ID))
    assert label[1, 1] == 0 and label[3, 3] == 8  # id 7 road, id 21 vegetation


def test_ade20k_reduces_zero_label(tmp_path):
    root = str(tmp_path)
    _image(f"{root}/images/validation/ADE_val_00000001.jpg", 0)
    _label(f"{root}/annotations/validation/ADE_val_00000001.png")
    (image, label), = _take(readers.read_ade20k(root, "validation"))
    assert image.shape == (4, 6, 3)
    np.testing.assert_array_equal(label, _expected({v: v - 1 for v in range(1, 151)}))
    assert label[0, 0] == 255 and label[0, 1] == 0


def test_coco_stuff10k_reads_mat_and_drops_unused_ids(tmp_path):
    root = str(tmp_path)
    names = ["COCO_train2014_000000000077", "COCO_train2014_000000000078"]
    os.makedirs(f"{root}/imageLists")
    with open(f"{root}/imageLists/train.txt", "w") as file:
        file.write("\n".join(names) + "\n")
    os.makedirs(f"{root}/annotations")
    stored = np.array([[0, 1, 11, 12, 13, 182]], np.uint8)
    for i, name in enumerate(names):
        _image(f"{root}/images/{name}.jpg", i, size=(1, 6))
        savemat(f"{root}/annotations/{name}.mat", {"S": stored.astype(np.uint16)})
    elements = _take(readers.read_coco_stuff10k(root, "train"))
    assert len(elements) == 2
    # 0 unlabeled -> ignore; 1..11 -> 0..10; 12 unused -> ignore; 13 -> 11; 182 -> 170.
    np.testing.assert_array_equal(elements[0][1], [[255, 0, 10, 255, 11, 170]])


def test_fishyscapes_laf(tmp_path):
    root = str(tmp_path)
    _image(f"{root}/original/0000_04_Maurener_Weg_8_000000_000030.png", 3)
    _label(f"{root}/labels/0000_04_Maurener_Weg_8_000000_000030.png")
    (_, label, anomaly), = _take(readers.read_fishyscapes_laf(root))
    assert np.all(label == 255)
    np.testing.assert_array_equal(anomaly, _expected({0: 0, 1: 1}))


def test_road_anomaly(tmp_path):
    root = str(tmp_path)
    with open(f"{root}/frame_list.json", "w") as file:
        json.dump(["animals01_Guiness_sheep.jpg"], file)
    _image(f"{root}/frames/animals01_Guiness_sheep.jpg", 4)
    _label(f"{root}/frames/animals01_Guiness_sheep.labels/labels_semantic.png")
    (_, label, anomaly), = _take(readers.read_road_anomaly(root))
    np.testing.assert_array_equal(anomaly, _expected({0: 0, 2: 1}))
    assert np.all(label == 255)


@pytest.mark.parametrize("track,folder,extension", [
    ("anomaly", "dataset_AnomalyTrack", "jpg"),
    ("obstacle", "dataset_ObstacleTrack", "webp"),
])
def test_smiyc_tracks(tmp_path, track, folder, extension):
    root = str(tmp_path)
    pixels = _image(f"{root}/{folder}/images/validation_1.{extension}", 5)
    _label(f"{root}/{folder}/labels_masks/validation_1_labels_semantic.png")
    (image, _, anomaly), = _take(readers.read_smiyc(root, track))
    np.testing.assert_array_equal(anomaly, _expected({0: 0, 1: 1}))
    if extension == "webp":  # lossless, so exact
        np.testing.assert_array_equal(image, pixels)


def test_streethazards_splits(tmp_path):
    root = str(tmp_path)
    _image(f"{root}/train/images/training/t1-3/300.png", 6)
    _label(f"{root}/train/annotations/training/t1-3/300.png")
    _image(f"{root}/test/images/test/t5/300.png", 7)
    _label(f"{root}/test/annotations/test/t5/300.png")
    known = [1, 2, 3] + list(range(5, 14))
    classes = _expected({stored: i for i, stored in enumerate(known)})
    (_, label), = _take(readers.read_streethazards(root, "train"))
    np.testing.assert_array_equal(label, classes)
    (_, label, anomaly), = _take(readers.read_streethazards(root, "test"))
    np.testing.assert_array_equal(label, classes)
    assert anomaly[2, 2] == 1 and label[2, 2] == 255  # stored 14
    assert anomaly[0, 4] == 255 and anomaly[0, 1] == 0  # "other" void, "unlabeled" inlier
    with pytest.raises(FileNotFoundError, match=r"train/images/validation"):
        readers.read_streethazards(root, "val")


def test_missing_and_malformed_directories_say_what_was_expected(tmp_path):
    root = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/val.*cityscapes-dataset.com"):
        readers.read_cityscapes(root, "val")
    with pytest.raises(ValueError, match=r"`split` must be one of \['train', 'val', 'test'\]"):
        readers.read_cityscapes(root, "validation")
    with pytest.raises(FileNotFoundError, match=r"imageLists/test.txt"):
        readers.read_coco_stuff10k(root, "test")
    with pytest.raises(FileNotFoundError, match=r"frame_list.json"):
        readers.read_road_anomaly(root)
    with pytest.raises(ValueError, match=r"`name` must be one of"):
        readers.read_dataset("kitti", root)

    # An image without its label names the label path it looked for.
    _image(f"{root}/images/training/ADE_train_00000001.jpg", 0)
    with pytest.raises(FileNotFoundError, match=r"annotations/training/ADE_train_00000001.png"):
        readers.read_ade20k(root)
    # A folder exists but holds no images of the expected kind.
    os.makedirs(f"{root}/original")
    with pytest.raises(FileNotFoundError, match=r"original/\*\.png"):
        readers.read_fishyscapes_laf(root)
    # Image and label of different sizes fail when read, naming both files.
    _label(f"{root}/annotations/training/ADE_train_00000001.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match=r"`images` and `labels`: image and label file sizes "
                       r"differ: .*ADE_train_00000001\.jpg is \d+×\d+ but "
                       r".*ADE_train_00000001\.png is 3×3"):
        readers.read_ade20k(root)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_image_size_reads_headers(tmp_path, fmt):
    from PIL import Image

    path = str(tmp_path / f"x.{fmt.lower()}")
    Image.fromarray(np.zeros((37, 53, 3), np.uint8)).save(path, format=fmt)
    assert readers.image_size(path) == (37, 53)
    (tmp_path / "x.txt").write_text("not an image")
    assert readers.image_size(str(tmp_path / "x.txt")) is None

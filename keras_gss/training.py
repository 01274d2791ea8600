"""Zoo recipes: `load_recipe` and `train_recipe` (`keras-gss train RECIPE`).

A recipe is a JSON file (see `zoo/recipes/`) naming a zoo preset, its
training data, crop and augmentation, optimizer and schedule, the options
of the task's own callbacks (`"callbacks"`: GMMSeg's `SinkhornEM`
settings) and, for DenseHybrid, the negatives pasted into the training
crops (`"negatives"`: source, crop size, shape, probability, count) and the
trained closed-set preset it fine-tunes (`"init_from"`); for GSS, the
stages around the prior: the frozen tokenizer (`"tokenizer"`: a tokenizer
recipe to train, DALL-E's files to convert, or a trained tokenizer's
directory) and the learned maskige decoder (`"maskige_decoder_stage"`). A
recipe whose preset is a tokenizer (`zoo/recipes/gss_tokenizer_*.json`)
trains that tokenizer alone. `train_recipe` builds the preset's
architecture, trains it with `model.fit` (resumable: an interrupted run
continues from its last epoch with GMM state, memory and step counter),
evaluates it, calibrates the open-set threshold, and saves a preset whose
`training.json` the model card of `publish_preset` is written from.
"""

import json
import math
import os
import shlex
import sys

from keras_gss.evaluation import INLIER_COVERAGE
from keras_gss.evaluation import calibrate_threshold  # noqa: F401 (public here since 0.1)
from keras_gss.inference import window_settings
from keras_gss.preset_files import TRAINING_FILE
from keras_gss.version import __version__

REQUIRED = ("name", "preset", "data", "crop", "batch_size", "iterations", "optimizer")
DIGITSCENES = "digitscenes"
NATURAL_CROPS = "natural_crops"  # a tokenizer recipe's data (GSS Stage I)
# Where a recipe's pasted negatives come from (DenseHybrid): pictures no DigitScenes split
# uses, or crops of ADE20K train images masked to two of their classes (the authors').
NEGATIVE_SOURCES = (DIGITSCENES, "ade20k")


def load_recipe(recipe):
    """Read and check a recipe (a path to JSON, or a dict).

    Example:

    >>> recipe = load_recipe({"name": "demo", "preset": "gmmseg_segformer_b0",
    ...     "data": {"name": "cityscapes", "root": "data/cityscapes"}, "crop": 768,
    ...     "batch_size": 16, "iterations": 80000,
    ...     "optimizer": {"name": "adamw", "learning_rate": 6e-5}})
    >>> recipe["callbacks"], recipe["augmentation"]["scale_range"]
    ({}, [0.5, 2.0])
    """
    from keras_gss.data.readers import READERS
    from keras_gss.models.gss.gss_presets import TOKENIZER_PRESETS
    from keras_gss.optimizers import OPTIMIZERS
    from keras_gss.presets import PRESETS

    source = recipe if isinstance(recipe, dict) else None
    if source is None:
        if not os.path.isfile(str(recipe)):
            raise OSError(f"Recipe {recipe!r} does not exist; recipes are JSON files such as "
                          "zoo/recipes/gmmseg_segformer_digitscenes.json.")
        with open(recipe) as file:
            try:
                source = json.load(file)
            except json.JSONDecodeError as error:
                raise ValueError(f"Recipe {recipe!r} is not valid JSON: {error}") from error
    missing = [key for key in REQUIRED if key not in source]
    if missing:
        raise ValueError(f"Recipe {recipe if source is not recipe else source.get('name')!r} "
                         f"lacks {missing}; every recipe needs {list(REQUIRED)}.")
    tokenizer = source["preset"] in TOKENIZER_PRESETS  # GSS's Stage I
    if source["preset"] not in PRESETS and not tokenizer:
        raise ValueError(f"Recipe {source['name']!r} names preset {source['preset']!r}, which "
                         "is not in keras_gss.list_presets() nor a tokenizer preset "
                         f"({sorted(TOKENIZER_PRESETS)}).")
    data = source["data"]
    names = (NATURAL_CROPS,) if tokenizer else (DIGITSCENES, *READERS)
    if data.get("name") not in names:
        raise ValueError(f"Recipe {source['name']!r}: data name {data.get('name')!r} must be "
                         f"one of {sorted(names)}.")
    if source["optimizer"].get("name") not in OPTIMIZERS:
        raise ValueError(f"Recipe {source['name']!r}: optimizer name must be one of "
                         f"{sorted(OPTIMIZERS)}.")
    negatives = source.get("negatives")
    if negatives is not None and negatives.get("source") not in NEGATIVE_SOURCES:
        raise ValueError(f"Recipe {source['name']!r}: negatives source "
                         f"{negatives.get('source')!r} must be one of {list(NEGATIVE_SOURCES)}.")
    recipe = {"callbacks": {}, "model": {}, "schedule": None, "seed": 0, "encoder_weights": None,
              "negatives": None, "init_from": None, "tokenizer": None,
              "maskige_decoder_stage": None,
              "augmentation": {"scale_range": [0.5, 2.0], "base_size": None,
                               "photometric": True},
              **source}
    return recipe


def _datasets(recipe, data_root):
    """`(train tf.data of uint8 pairs, eval set or None, anomaly sets)`.

    DigitScenes sets are uint8 arrays; the readers' sets are `tf.data` streams.
    """
    import tensorflow as tf

    from keras_gss.data import DigitScenes
    from keras_gss.data.readers import read_dataset

    data = dict(recipe["data"])
    if data["name"] == DIGITSCENES:
        scenes = DigitScenes(image_size=data.get("image_size", 96), seed=data.get("seed", 0))
        sizes = {"train": data.get("train_scenes", 2000)}
        sizes.update({s: data.get("test_scenes", 200) for s in ("test", "test_near", "test_far")})

        def split(name):
            return (DigitScenes.read(data_root, name) if data_root
                    else scenes.generate(name, sizes[name]))

        images, labels, _ = split("train")
        train = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
        evaluation = tuple(split("test")[:2])
        anomaly_sets = {"near-OOD": split("test_near"), "far-OOD": split("test_far")}
        return train, evaluation, anomaly_sets
    root = data_root or data["root"]
    train = read_dataset(data["name"], root, split=data.get("train_split", "train"))

    # Streamed: the readers' images differ in size (ADE20K, COCO-Stuff) and sets can be large.
    evaluation = None
    if data.get("eval_split"):
        evaluation = read_dataset(data["name"], root, split=data["eval_split"])
    anomaly_sets = {}
    for name, spec in data.get("anomaly_sets", {}).items():
        spec = dict(spec)
        anomaly_sets[name] = read_dataset(spec.pop("name"), spec.pop("root"), **spec)
    return train, evaluation, anomaly_sets


def _negatives(recipe, data_root):
    """The recipe's negatives for `paste_negatives`, or `None`."""
    spec = recipe["negatives"]
    if spec is None:
        return None
    if spec["source"] == DIGITSCENES:
        from keras_gss.data import DigitScenes

        data = recipe["data"]
        scenes = DigitScenes(image_size=data.get("image_size", 96), seed=data.get("seed", 0))
        return scenes.negatives(1000, spec["size"])
    from keras_gss.data import object_negatives
    from keras_gss.data import read_dataset

    ade = read_dataset("ade20k", spec["root"], split=spec.get("split", "training"))
    return object_negatives(ade, spec["size"], seed=recipe["seed"])


def _train_stream(recipe, train, batch_size, negatives=None):
    import tensorflow as tf

    from keras_gss.data import paste_negatives
    from keras_gss.data import training_augmentation
    from keras_gss.data.normalization import IMAGENET_MEAN
    from keras_gss.data.normalization import IMAGENET_STD

    augmentation = recipe["augmentation"]
    augment = training_augmentation(
        recipe["crop"], scale_range=tuple(augmentation["scale_range"]),
        base_size=augmentation.get("base_size"), photometric=augmentation["photometric"],
        seed=recipe["seed"]) if augmentation else None
    mean = tf.constant(IMAGENET_MEAN, tf.float32)
    std = tf.constant(IMAGENET_STD, tf.float32)

    def crop(image, label):
        if augment is not None:
            image, label = augment(image, label)
        # The crop is static; say so, since MiT needs known spatial sizes.
        size = recipe["crop"]
        return tf.ensure_shape(image, [size, size, 3]), tf.ensure_shape(label, [size, size])

    def normalise(image, label):
        return (tf.cast(image, tf.float32) / 255.0 - mean) / std, label

    stream = (train.shuffle(recipe.get("shuffle_buffer", 1000), seed=recipe["seed"])
              .repeat().map(crop, num_parallel_calls=tf.data.AUTOTUNE))
    if negatives is not None:  # DenseHybrid Eq. 15, into the augmented uint8 crops
        spec = recipe["negatives"]
        stream = paste_negatives(stream, negatives, probability=spec.get("probability", 1.0),
                                 count=spec.get("count", 1), shape=spec.get("shape", "rectangle"),
                                 seed=recipe["seed"])
    return (stream.map(normalise, num_parallel_calls=tf.data.AUTOTUNE)
            .batch(batch_size, drop_remainder=True).prefetch(2))


def _load_encoder_weights(model, weights):
    """Pretrained encoder weights: a `.weights.h5` file, a keras-hub preset (name, folder or
    `hf://`), `"converted:<name>"` (from `keras-gss convert`) or a source checkpoint to convert
    (NVlabs', mmseg's or transformers' MiT: a `.pth`/`.safetensors` file or its folder)."""
    import keras_hub

    from keras_gss import convert

    encoder = getattr(model.backbone, "image_encoder", model.backbone)
    if str(weights).startswith(convert.CONVERTED):
        weights = convert.resolve_converted(weights)
    if str(weights).endswith(".h5"):
        encoder.load_weights(weights)
        return
    if convert.is_checkpoint(weights):
        convert.mit(weights, backbone=encoder)
        return
    shape = {"image_shape": encoder.image_shape} if hasattr(encoder, "image_shape") else {}
    pretrained = keras_hub.models.Backbone.from_preset(weights, **shape)  # built at its size
    shapes = [tuple(v.shape) for v in encoder.weights]
    if shapes != [tuple(v.shape) for v in pretrained.weights]:
        raise ValueError(f"`encoder_weights` {weights!r} do not fit the preset's encoder "
                         "(different variable shapes).")
    encoder.set_weights(pretrained.get_weights())


def _tokenizer_stage(spec, out_dir, verbose):
    """GSS's Stage I: the directory of the frozen tokenizer a recipe's `"tokenizer"` names.

    `{"recipe": path or dict}` trains it into `out_dir/tokenizer` (once: a
    rerun reuses it); `{"convert": "dall_e", "encoder": path, "decoder":
    path}` converts OpenAI's released pickles there; `{"preset": dir}` is
    a trained tokenizer's directory.
    """
    stage_dir = os.path.join(out_dir, "tokenizer")
    path = os.path.join(stage_dir, "tokenizer")
    if "preset" in spec:
        return spec["preset"]
    if os.path.isdir(path):
        if verbose:
            print(f"Stage I: reusing the tokenizer in {path}")
        return path
    if "recipe" in spec:
        from keras_gss.models.gss.stage_one import train_tokenizer

        train_tokenizer(load_recipe(spec["recipe"]), stage_dir, verbose=verbose)
    elif spec.get("convert") == "dall_e":
        from keras_gss.convert import dall_e

        for key in ("encoder", "decoder"):
            if not os.path.isfile(str(spec.get(key))):
                raise OSError(f"The recipe's tokenizer {key} {spec.get(key)!r} does not exist: "
                              "download OpenAI's encoder.pkl and decoder.pkl "
                              "(github.com/openai/DALL-E) and set their paths.")
        dall_e(spec["encoder"], spec["decoder"]).save_to_preset(path)
    else:
        raise ValueError(f"A recipe's `tokenizer` must hold 'recipe', 'convert' or 'preset'; "
                         f"received {spec!r}.")
    return path


def train_recipe(recipe, out_dir, data_root=None, steps=None, batch_size=None,
                 evaluate=True, verbose=1, command=None, callbacks=None):
    """Train a zoo preset from a recipe; returns `(model, summary)`.

    Writes `out_dir/preset` (the trained preset with `training.json`),
    `out_dir/results.json` / `.md` and figures, and `out_dir/backup` while
    training (removed when done; rerun the same command to resume).

    Args:
        recipe: a recipe path or dict (see `load_recipe`).
        out_dir: output folder.
        data_root: the dataset folder; defaults to the recipe's `root`. For
            DigitScenes, a folder written by `DigitScenes().write` (default:
            generate the scenes in memory).
        steps: training steps; defaults to the recipe's `iterations`. The
            schedule spans exactly these steps.
        batch_size: global batch size; defaults to the recipe's.
        evaluate: evaluate and calibrate the threshold after training.
        verbose: `0` silent, `1` progress bars, `2` one line per epoch.
        command: the command line recorded in `training.json`.
        callbacks: extra Keras callbacks for `fit` (e.g. TensorBoard).
    """
    import keras

    from keras_gss.data import DigitScenes
    from keras_gss.data.normalization import normalize_images
    from keras_gss.evaluation import evaluate as evaluate_model
    from keras_gss.evaluation import format_table
    from keras_gss.metrics import MeanIoU
    from keras_gss.optimizers import build_optimizer
    from keras_gss.models.gss.gss_presets import TOKENIZER_PRESETS
    from keras_gss.models.open_set_image_segmenter import copy_weights
    from keras_gss.presets import PRESETS
    from keras_gss.presets import from_preset

    recipe = load_recipe(recipe)
    if recipe["preset"] in TOKENIZER_PRESETS:  # GSS's Stage I on its own
        from keras_gss.models.gss.stage_one import train_tokenizer

        return train_tokenizer(recipe, out_dir, steps=steps, batch_size=batch_size,
                               verbose=verbose, command=command)
    steps = int(steps or recipe["iterations"])
    batch_size = int(batch_size or recipe["batch_size"])
    if steps <= 0 or batch_size <= 0:
        raise ValueError(f"`steps` and `batch_size` must be positive; received {steps}, "
                         f"{batch_size}.")
    keras.utils.set_random_seed(recipe["seed"])
    crop = recipe["crop"]
    options = dict(recipe["model"])
    if recipe["tokenizer"]:  # GSS: Stage I (the frozen tokenizer) before the prior
        options["tokenizer"] = _tokenizer_stage(recipe["tokenizer"], out_dir, verbose)
    model = from_preset(recipe["preset"], load_weights=False, image_shape=(crop, crop, 3),
                        **options)
    if recipe["init_from"]:  # fine-tune a trained (closed-set) preset, as DenseHybrid does
        copy_weights(from_preset(recipe["init_from"], image_shape=(crop, crop, 3)), model)
    elif recipe["encoder_weights"]:
        _load_encoder_weights(model, recipe["encoder_weights"])
    schedule = None if recipe["schedule"] is None else dict(recipe["schedule"])
    options = dict(recipe["optimizer"])
    model.compile(optimizer=build_optimizer(model, total_steps=steps, schedule=schedule,
                                            **options),
                  metrics=[MeanIoU(model.num_classes)])
    train, evaluation, anomaly_sets = _datasets(recipe, data_root)
    steps_per_epoch = min(steps, int(recipe.get("steps_per_epoch", 1000)))
    epochs = math.ceil(steps / steps_per_epoch)
    os.makedirs(out_dir, exist_ok=True)
    backup = os.path.join(out_dir, "backup")
    callbacks = [*model.default_callbacks(**recipe["callbacks"]),
                 keras.callbacks.BackupAndRestore(backup), *(callbacks or [])]
    if verbose:
        print(f"{recipe['name']}: {recipe['preset']} for {steps} steps of batch {batch_size} "
              f"({epochs} epochs × {steps_per_epoch})")
    model.fit(_train_stream(recipe, train, batch_size, _negatives(recipe, data_root)),
              epochs=epochs,
              steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=verbose)
    stage = recipe["maskige_decoder_stage"]
    if stage:  # GSS-FT(-W): the learned X⁻¹ on the trained prior's maskiges, all else frozen
        stage_steps = int(stage["iterations"])
        per_epoch = min(stage_steps, steps_per_epoch)
        if verbose:
            print(f"{recipe['name']}: the learned maskige decoder for {stage_steps} steps")
        model.fit_maskige_decoder(
            _train_stream(recipe, train, batch_size), epochs=math.ceil(stage_steps / per_epoch),
            steps_per_epoch=per_epoch, verbose=verbose,
            optimizer=build_optimizer(model, total_steps=stage_steps,
                                      schedule=stage.get("schedule"), **stage["optimizer"]))

    record = PRESETS[recipe["preset"]]
    summary = {
        "recipe": recipe,
        "command": command or " ".join(shlex.quote(a) for a in sys.argv),
        "steps": steps, "batch_size": batch_size, "keras_gss_version": __version__,
        "datasets": [recipe["data"]["name"]] + [s.get("name", n) for n, s in
                                               recipe["data"].get("anomaly_sets", {}).items()],
        "results": None, "open_set": dict(record["open_set"]),
    }
    if evaluate and evaluation is not None:
        # Windows for images other than the crop size, as the paper tests Cityscapes.
        same_size = isinstance(evaluation, tuple) and evaluation[0].shape[1:3] == (crop, crop)
        window = None if same_size else window_settings(record["data"]["sliding_window"], crop)
        closed = evaluation if isinstance(evaluation, tuple) else (evaluation, None)
        summary["results"] = evaluate_model(
            model, *closed, anomaly_sets=anomaly_sets, out_dir=out_dir,
            name=recipe["name"], verbose=int(verbose == 1), sliding_window=window,
            preprocess=normalize_images, negative_groups=(
                DigitScenes.negative_groups if recipe["data"]["name"] == DIGITSCENES else None))
        threshold = summary["results"]["closed_set"].pop("threshold")
        model.anomaly_threshold = threshold  # saved in the preset's task.json
        summary["open_set"].update(
            threshold=threshold,
            calibration=f"{100 * INLIER_COVERAGE:.0f}th percentile of the score over the "
                        f"labelled pixels of the {recipe['data']['name']} evaluation split "
                        f"(accepts {100 * INLIER_COVERAGE:.0f}% of known-class pixels)")
        table = format_table({recipe["name"]: summary["results"]})
        with open(os.path.join(out_dir, "results.md"), "w") as file:
            file.write(table + "\n")
        if verbose:
            print("\n" + table)
    preset_dir = os.path.join(out_dir, "preset")
    model.save_to_preset(preset_dir)
    with open(os.path.join(preset_dir, TRAINING_FILE), "w") as file:
        json.dump(summary, file, indent=2)
    with open(os.path.join(out_dir, "results.json"), "w") as file:
        json.dump(summary, file, indent=2)
    if verbose:
        print(f"wrote {preset_dir} (publish with: keras-gss publish {preset_dir} hf://ORG/REPO)")
    return model, summary

"""The zoo: preset names -> records, and `from_preset` / `list_presets`."""

import json
import os
import warnings

import keras

from keras_gss.models import gmmseg
from keras_gss.models.backbones import build_backbone
from keras_gss.utils.checks import close_matches
from keras_gss.version import __version__

PRESETS = {}
TASKS = {"GMMSegImageSegmenter": gmmseg.GMMSegImageSegmenter}
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
BACKBONE_WEIGHTS_FILE = "model.weights.h5"
VERSION_FILE = "keras_gss.json"


def _version_tuple(version):
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def write_version(directory):
    """Record the keras_gss version that wrote a preset directory."""
    with open(os.path.join(directory, VERSION_FILE), "w") as file:
        json.dump({"keras_gss_version": __version__}, file)


def _check_version(directory):
    path = os.path.join(directory, VERSION_FILE)
    if not os.path.isfile(path):
        return
    with open(path) as file:
        saved = json.load(file).get("keras_gss_version", "0")
    if _version_tuple(saved) > _version_tuple(__version__):
        raise OSError(
            f"Preset {directory!r} was saved by keras_gss {saved}, newer than the "
            f"installed {__version__}; upgrade with `pip install -U keras_gss`."
        )


def _load_weights(load, directory, name):
    try:
        with warnings.catch_warnings():  # presets carry training state; a new model has none
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            load(os.path.join(directory, name))
    except Exception as error:  # h5py raises OSError, KeyError or ValueError
        raise OSError(
            f"Preset {directory!r}: {name} is corrupted or truncated "
            f"({type(error).__name__}: {error}). Delete the directory (for a Hub "
            "preset, its snapshot in the Hub cache) and download it again."
        ) from error


def register_presets(records):
    for name, record in records.items():
        if name in PRESETS:
            raise ValueError(f"Preset {name!r} is registered twice.")
        PRESETS[name] = record


register_presets(gmmseg.presets)


def list_presets(family=None):
    """Names of the zoo presets, sorted; optionally of one family.

    Example:

    >>> "gmmseg_segformer_b5" in list_presets("gmmseg")
    True
    """
    return sorted(
        name for name, record in PRESETS.items()
        if family is None or record["family"] == family
    )


def from_preset(preset, load_weights=True, num_classes=None, revision=None,
                cache_dir=None, local_files_only=False, **kwargs):
    """Build a model from a zoo name, a `hf://org/repo[@rev]` handle or a dir.

    Zoo architectures ship with the package, so
    `from_preset(name, load_weights=False)` works offline. A directory is
    one written by `model.save_to_preset(dir)` and restores the GMM state
    too, and the feature memory if it was saved with `include_memory=True`.

    Args:
        preset: str. A name from `list_presets()`, a Hugging Face handle
            `"hf://org/repo"` (optionally `"@revision"`), or a local preset
            directory.
        load_weights: bool. Load trained weights. Defaults to `True`.
        num_classes: int. Replace the number of classes (a new, untrained
            head; backbone weights still load). Defaults to the preset's.
        revision: str. Branch, tag or commit of an `hf://` handle; overrides
            `@revision`.
        cache_dir: str. Hub cache folder. Defaults to huggingface_hub's.
        local_files_only: bool. Load from the Hub cache only, never the
            network (as `HF_HUB_OFFLINE=1`).
        **kwargs: other constructor arguments of the task (for zoo names,
            also `image_shape`).

    Example:

    >>> model = from_preset("gmmseg_segformer_b0", num_classes=3,
    ...                     load_weights=False, image_shape=(64, 64, 3),
    ...                     memory_size=64)
    >>> tuple(model.output.shape)
    (None, 64, 64, 3)
    """
    if not isinstance(preset, str):
        raise ValueError(
            f"`preset` must be a string; received {type(preset).__name__}."
        )
    if preset in PRESETS:
        return _from_record(preset, load_weights, num_classes, kwargs)
    if preset.startswith("hf://"):
        from keras_gss.hub import download_preset

        folder = download_preset(preset, revision=revision, cache_dir=cache_dir,
                                 local_files_only=local_files_only)
        return _from_directory(folder, load_weights, num_classes, kwargs)
    if os.path.isdir(preset):
        return _from_directory(preset, load_weights, num_classes, kwargs)
    matches = close_matches(preset, PRESETS)
    hint = f" Did you mean {', '.join(map(repr, matches))}?" if matches else ""
    raise ValueError(
        f"Unknown preset {preset!r}: not a zoo name, an existing directory "
        f"or an hf:// handle.{hint} keras_gss.list_presets() lists the zoo."
    )


def _from_record(name, load_weights, num_classes, kwargs):
    record = PRESETS[name]
    weights = record["weights"]
    if load_weights and not weights.get("revision"):
        raise ValueError(
            f"No trained weights are published for preset {name!r} yet; "
            "build its architecture with load_weights=False."
        )
    if load_weights:  # the published preset holds the architecture too
        return from_preset(f"{weights['handle']}@{weights['revision']}",
                           num_classes=num_classes, **kwargs)
    image_shape = kwargs.pop("image_shape", record["data"]["image_shape"])
    backbone = build_backbone(image_shape=image_shape, **record["backbone"])
    config = {**record["config"], **kwargs}
    if num_classes is not None:
        config["num_classes"] = num_classes
    return TASKS[record["task"]](backbone=backbone, **config)


def _from_directory(directory, load_weights, num_classes, kwargs):
    path = os.path.join(directory, TASK_CONFIG_FILE)
    if not os.path.isfile(path):
        raise OSError(
            f"Preset directory {directory!r} has no {TASK_CONFIG_FILE}; "
            "write one with model.save_to_preset(directory)."
        )
    _check_version(directory)
    with open(path) as file:
        config = json.load(file)
    replace_head = (
        num_classes is not None
        and num_classes != config["config"].get("num_classes")
    )
    if replace_head:
        kwargs["num_classes"] = num_classes
    config["config"].update(kwargs)
    model = keras.saving.deserialize_keras_object(config)
    if not load_weights:
        return model
    for name in (BACKBONE_WEIGHTS_FILE,) + (
        () if replace_head else (TASK_WEIGHTS_FILE,)
    ):
        if not os.path.isfile(os.path.join(directory, name)):
            raise OSError(
                f"Preset directory {directory!r} has no {name}; pass "
                "load_weights=False to build the architecture only."
            )
    _load_weights(model.backbone.load_weights, directory, BACKBONE_WEIGHTS_FILE)
    if replace_head:
        print(
            f"keras_gss: new head with num_classes={num_classes}; only the "
            "backbone weights were loaded."
        )
    else:
        _load_weights(model.load_task_weights, directory, TASK_WEIGHTS_FILE)
    return model

"""The zoo registry (preset names -> records), `from_preset`, publishing and verifying.

The registry imports no family: each family's `__init__.py` registers its
task class and records with `register_presets`, as keras-hub's families do,
so `import keras_gss` fills it.
"""

import os
import shutil
import tempfile
import warnings

import keras
import numpy as np

from keras_gss import hub
from keras_gss.models.backbones import build_backbone
from keras_gss.models.open_set_image_segmenter import predict_logits_and_scores
from keras_gss.preset_files import BACKBONE_WEIGHTS_FILE
from keras_gss.preset_files import CONFIG_FILE
from keras_gss.preset_files import CONVERTED
from keras_gss.preset_files import CONVERSION_FILE
from keras_gss.preset_files import TASK_CONFIG_FILE
from keras_gss.preset_files import TASK_WEIGHTS_FILE
from keras_gss.preset_files import TRAINING_FILE
from keras_gss.preset_files import check_version
from keras_gss.preset_files import read_json
from keras_gss.preset_files import resolve_converted
from keras_gss.utils.checks import close_matches

PRESETS = {}
TASKS = {}


def register_presets(records, task=None):
    """Add a family's zoo records (and its task class) to the registry.

    Args:
        records: dict preset name -> record (see `keras_gss.models.preset_records`).
        task: the task class the records name in `"task"`. Defaults to a
            class registered before.
    """
    if task is not None:
        TASKS[task.__name__] = task
    for name, record in records.items():
        if name in PRESETS:
            raise ValueError(f"Preset {name!r} is registered twice.")
        if record["task"] not in TASKS:
            raise ValueError(f"Preset {name!r} names task {record['task']!r}, which is not "
                             "registered; pass its class as `task`.")
        PRESETS[name] = record


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


def from_preset(preset, load_weights=True, num_classes=None, revision=None,
                cache_dir=None, local_files_only=False, **kwargs):
    """Build a model from a zoo name, a `hf://org/repo[@rev]` handle or a dir.

    Zoo architectures ship with the package, so
    `from_preset(name, load_weights=False)` works offline. A directory is
    one written by `model.save_to_preset(dir)` and restores the model's
    state too (the GMM's, say), and its training state if it was saved with
    `include_training_state=True`.

    Args:
        preset: str. A name from `list_presets()`, a Hugging Face handle
            `"hf://org/repo"` (optionally `"@revision"`), a local preset
            directory, or `"converted:<name>"` (what `keras-gss convert`
            wrote under `keras_gss.convert.converted_dir()`).
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
    if preset.startswith(CONVERTED):
        preset = resolve_converted(preset, "preset")
    if preset.startswith("hf://"):
        folder = hub.download_preset(preset, revision=revision, cache_dir=cache_dir,
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


def preset_data(preset):
    """The data settings a preset records (class names, mean/std, sliding window), or None.

    A zoo name gives its record's; a converted preset (a folder or
    `"converted:<name>"`) the record its conversion wrote.

    Example:

    >>> preset_data("gmmseg_segformer_b5_cocostuff10k")["sliding_window"]
    {'crop': 512, 'stride': 341, 'scale': (2048, 512)}
    """
    if preset in PRESETS:
        return PRESETS[preset]["data"]
    if preset.startswith(CONVERTED):
        preset = resolve_converted(preset, "preset")
    path = os.path.join(preset, CONVERSION_FILE)
    return read_json(path).get("data") if os.path.isfile(path) else None


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
    check_version(directory)
    config = read_json(path)
    fix = ("Save the model again with model.save_to_preset(directory), or download the "
           "preset again.")
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise OSError(f"{path} does not describe a task (no 'config' object). {fix}")
    if os.path.isfile(os.path.join(directory, CONFIG_FILE)):
        read_json(os.path.join(directory, CONFIG_FILE), fix)  # the backbone's, nested in task.json
    replace_head = (
        num_classes is not None
        and num_classes != config["config"].get("num_classes")
    )
    if replace_head:
        kwargs["num_classes"] = num_classes
    config["config"].update(kwargs)
    try:
        model = keras.saving.deserialize_keras_object(config)
    except (TypeError, KeyError, ValueError) as error:
        raise OSError(f"{path} describes no model this keras_gss can build "
                      f"({type(error).__name__}: {error}). {fix}") from error
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


def preset_card(name):
    """The model card of a zoo preset, from its record (`zoo/cards/<name>.md`)."""
    record = PRESETS[name]
    repo, _ = hub.parse_handle(record["weights"]["handle"])
    return hub.model_card(repo, record["description"], revision=record["weights"]["revision"],
                          record=record)


def _golden(model, images):
    logits, scores = predict_logits_and_scores(model, images)
    return {"logits": logits} if scores is None else {"logits": logits,
                                                       "anomaly_score": scores}


def publish_preset(model, handle, commit_message=None, token=None, private=False):
    """Upload a model as a preset, with golden tensors and a model card.

    Two commits: the preset and golden tensors, then the model card naming
    that first commit as the weights revision.

    Args:
        model: a keras_gss task model, or a preset directory (a
            `keras-gss train` output keeps its `training.json`, from which
            the card's metrics and training command are written).
        handle: `"hf://org/repo"`; the repo is created if needed.
        commit_message: str. Defaults to "Upload keras_gss preset".
        token: Hub token. Defaults to the logged-in one.
        private: bool. Create the repo private.

    Returns:
        The handle pinned to the weights commit, `"hf://org/repo@<commit>"`.
    """
    repo, revision = hub.parse_handle(handle)
    if revision:
        raise ValueError(
            f"`handle` must not pin a revision when publishing; received {handle!r}."
        )
    with tempfile.TemporaryDirectory() as folder:
        folder = os.path.join(folder, "preset")
        if isinstance(model, str):
            shutil.copytree(model, folder)
            model = from_preset(folder)
        else:
            model.save_to_preset(folder)
        shape = (1,) + tuple(model.input.shape[1:])
        images = np.random.default_rng(0).normal(size=shape).astype("float32")
        os.makedirs(os.path.join(folder, "test"), exist_ok=True)
        np.savez(os.path.join(folder, hub.GOLDEN_INPUT), images=images)
        np.savez(os.path.join(folder, hub.GOLDEN_EXPECTED), **_golden(model, images))
        training = None
        if os.path.isfile(os.path.join(folder, TRAINING_FILE)):
            training = read_json(os.path.join(folder, TRAINING_FILE))
        return hub.upload_preset(folder, repo, hub.describe(model), training=training,
                                 commit_message=commit_message, token=token, private=private)


def verify_preset(preset, atol=1e-5, **download_options):
    """Reload a published preset and compare it with its golden tensors.

    Args:
        preset: an `hf://` handle or a downloaded preset directory.
        atol: largest absolute difference allowed.
        **download_options: for `download_preset` (`cache_dir`, ...).

    Returns:
        dict output name -> largest absolute difference.

    Raises:
        ValueError: an output differs by more than `atol`.
    """
    folder = hub.download_preset(preset, **download_options) \
        if preset.startswith("hf://") else preset
    golden = os.path.join(folder, hub.GOLDEN_EXPECTED)
    if not os.path.isfile(golden):
        raise OSError(f"Preset {preset!r} has no {hub.GOLDEN_EXPECTED}; publish it with "
                      "keras_gss.publish_preset to get one.")
    model = from_preset(folder)
    images = np.load(os.path.join(folder, hub.GOLDEN_INPUT))["images"]
    expected = dict(np.load(golden))
    differences = {name: float(np.max(np.abs(value - expected[name])))
                   for name, value in _golden(model, images).items() if name in expected}
    bad = {k: v for k, v in differences.items() if not v <= atol}
    if bad:
        raise ValueError(f"Preset {preset!r} does not reproduce its golden outputs: largest "
                         f"differences {bad} exceed atol={atol}.")
    return differences

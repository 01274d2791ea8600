"""What a keras_gss preset directory holds, and reading it with clear errors.

A leaf module: it imports nothing of keras_gss but the version, so the
registry, the Hub I/O, the converters and the tasks can all use it. It also
names where `keras-gss convert` writes (`converted_dir`).
"""

import json
import os

from keras_gss.version import __version__

TASK_CONFIG_FILE = "task.json"
CONFIG_FILE = "config.json"
TASK_WEIGHTS_FILE = "task.weights.h5"
BACKBONE_WEIGHTS_FILE = "model.weights.h5"
VERSION_FILE = "keras_gss.json"
TRAINING_FILE = "training.json"
# A converted preset's provenance and its data settings (class names, test-time windows).
CONVERSION_FILE = "conversion.json"
# A tokenizer preset (GSS's frozen image tokenizer) holds these two and the version.
TOKENIZER_CONFIG_FILE = "tokenizer.json"
TOKENIZER_WEIGHTS_FILE = "tokenizer.weights.h5"
# What a loadable preset holds; a folder missing one was cut short.
PRESET_FILES = (TASK_CONFIG_FILE, CONFIG_FILE, BACKBONE_WEIGHTS_FILE, TASK_WEIGHTS_FILE)


def read_json(path, fix="Save the preset again with model.save_to_preset(directory)."):
    """A JSON file of a preset, or an `OSError` naming the file and the fix.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "task.json")
    >>> _ = open(path, "w").write("{not json")
    >>> read_json(path)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    OSError: ...task.json is not valid JSON (line 1 column 2: ...). Save the preset again ...
    """
    try:
        with open(path) as file:
            return json.load(file)
    except json.JSONDecodeError as error:
        raise OSError(f"{path} is not valid JSON (line {error.lineno} column {error.colno}: "
                      f"{error.msg}). {fix}") from error
    except UnicodeDecodeError as error:
        raise OSError(f"{path} is not a text file ({error}). {fix}") from error


def _version_tuple(version):
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def write_version(directory):
    """Record the keras_gss version that wrote a preset directory."""
    with open(os.path.join(directory, VERSION_FILE), "w") as file:
        json.dump({"keras_gss_version": __version__}, file)


def check_version(directory):
    """Raise an `OSError` if a newer keras_gss wrote `directory`."""
    path = os.path.join(directory, VERSION_FILE)
    if not os.path.isfile(path):
        return
    saved = read_json(path).get("keras_gss_version", "0")
    if _version_tuple(saved) > _version_tuple(__version__):
        raise OSError(
            f"Preset {directory!r} was saved by keras_gss {saved}, newer than the "
            f"installed {__version__}; upgrade with `pip install -U keras_gss`."
        )


# `keras-gss convert` output, named "converted:<name>" (an `encoder_weights` "converted:mit_b5",
# a preset "converted:gmmseg_segformer_b5_cocostuff10k"): folders under `converted_dir()`.
CONVERTED = "converted:"
GMMSEG_PRESET = "gmmseg_segformer_b5_cocostuff10k"  # the GMMSeg authors' released model


def converted_dir(name=""):
    """Where `keras-gss convert` keeps converted weights: `$KERAS_GSS_HOME/converted/<name>`.

    `KERAS_GSS_HOME` defaults to `~/.keras_gss`.
    """
    home = os.environ.get("KERAS_GSS_HOME") or os.path.join(os.path.expanduser("~"),
                                                            ".keras_gss")
    return os.path.join(home, "converted", name)


def convert_command(name):
    """The command that converts a starting-weights name into `converted_dir(name)`."""
    return (f"keras-gss convert mit hf://nvidia/{name.replace('_', '-')} (or NVlabs' {name}.pth, "
            f"or mmseg's {name}_mmseg.pth)")


def resolve_converted(reference, argument="encoder_weights"):
    """A `"converted:<name>"` reference as its folder; it must have been converted here."""
    name = reference[len(CONVERTED):]
    folder = converted_dir(name)
    if not os.path.isdir(folder):
        fix = ("keras-gss convert gmmseg <the authors' .pth>" if name == GMMSEG_PRESET
               else convert_command(name))
        scratch = "; or train from scratch with --encoder-weights none" \
            if argument == "encoder_weights" else ""
        raise FileNotFoundError(f"`{argument}` {reference!r}: {folder} does not exist. Convert "
                                f"the weights once with: {fix}{scratch}.")
    return folder

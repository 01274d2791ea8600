"""What a keras_gss preset directory holds, and reading it with clear errors.

A leaf module: it imports nothing of keras_gss but the version, so the
registry, the Hub I/O and the tasks can all use it.
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

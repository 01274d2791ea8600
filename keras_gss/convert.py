"""Converters from the authors' released PyTorch weights to keras_gss models.

PyTorch checkpoints are pickles, and unpickling can run any code a file
names. `read_torch_checkpoint` never does: its unpickler accepts only the
calls that rebuild tensors (`torch._utils._rebuild_tensor_v2`,
`_rebuild_parameter`), plain containers, and, for whole pickled modules
(DALL-E's `encoder.pkl`, `decoder.pkl`), inert stand-ins for the classes
of the modules in `MODULE_PREFIXES`, which record their state and run
nothing. Any other global refuses the file, naming it. PyTorch need not be
installed.
"""

import io
import os
import pickle
import zipfile

import numpy as np

# Classes of these modules may appear in a whole pickled module; they become inert records.
MODULE_PREFIXES = ("dall_e.", "torch.nn.modules.")
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


class PickledObject:
    """An inert record of a pickled object of an allowed class: its name and state."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.state = args, kwargs, None

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<pickled {type(self).__qualname__}>"


class _Storage:
    def __init__(self, dtype):
        self.dtype = dtype


def _numpy_dtype(name):
    if name == "bfloat16":
        import ml_dtypes  # ships with TensorFlow and JAX

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _rebuild_tensor(storage, offset, size, stride, *unused):
    itemsize = storage.dtype.itemsize
    if len(size) == 0:
        return storage[offset].copy()
    return np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)).copy()


def _rebuild_parameter(data, *unused):
    return data


class _OrderedDict(dict):
    """A dict that takes attributes: state dicts carry `_metadata`."""


_CALLS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): _OrderedDict,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,  # pickle protocol 2's name for it
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive, prefix):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        if (module, name) in _CALLS:
            return _CALLS[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _Storage(_numpy_dtype(_STORAGE_DTYPES[name]))
        if module == "torch" and name == "device" or module.startswith(MODULE_PREFIXES):
            return type(name, (PickledObject,), {"__module__": module})
        raise pickle.UnpicklingError(
            f"Refusing to load `{module}.{name}`: a PyTorch checkpoint should hold only tensors "
            f"and modules of {MODULE_PREFIXES}. The file may not be what it claims to be; "
            "re-save its state_dict with torch.save if you trust it.")

    def persistent_load(self, pid):
        kind, storage, key, _, numel = pid[:5]
        if kind != "storage" or not isinstance(storage, _Storage):
            raise pickle.UnpicklingError(f"Unknown persistent id {pid!r} in a PyTorch file.")
        if key not in self.storages:
            raw = self.archive.read(f"{self.prefix}data/{key}")
            self.storages[key] = np.frombuffer(raw, dtype=storage.dtype)[:numel]
        return self.storages[key]


def read_torch_checkpoint(path):
    """The objects in a `torch.save` file, with tensors as numpy arrays; runs no pickled code.

    Args:
        path: a file written by `torch.save` (PyTorch ≥ 1.6's zip format).

    Returns:
        What was saved: a dict of arrays for a `state_dict`, a
        `PickledObject` tree for a whole module (see `torch_state_dict`).
    """
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path!r} is not a PyTorch zip checkpoint (written by torch.save with PyTorch >= "
            "1.6). Re-save an older file with a recent PyTorch: torch.save(torch.load(f), f2).")
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
        if len(pickles) != 1:
            raise ValueError(f"{path!r} holds {len(pickles)} data.pkl records; expected 1.")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as file:
            return _RestrictedUnpickler(io.BytesIO(file.read()), archive, prefix).load()


def torch_state_dict(obj, prefix=""):
    """A module's `state_dict()` from `read_torch_checkpoint`'s output: name → array."""
    if isinstance(obj, dict):
        if all(isinstance(v, np.ndarray) for v in obj.values()):
            return {prefix + k: v for k, v in obj.items()}
        for key in ("state_dict", "model"):  # checkpoints wrap the state dict
            if key in obj:
                return torch_state_dict(obj[key], prefix)
    if isinstance(obj, PickledObject) and isinstance(obj.state, dict):
        state, result = obj.state, {}
        for group in ("_parameters", "_buffers"):
            result.update({prefix + k: v for k, v in (state.get(group) or {}).items()
                           if v is not None})
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                result.update(torch_state_dict(child, f"{prefix}{name}."))
        return result
    raise ValueError(f"Cannot find a state dict in {type(obj).__name__} {obj!r}.")


def assign_weights(variables, weights, source):
    """Assign `weights` (torch key → array) to `variables` (torch key → (variable, map)).

    Every key must match: a missing, unexpected or mis-shaped key is an error
    that names it (never a silent partial load).
    """
    missing = sorted(set(variables) - set(weights))
    unexpected = sorted(set(weights) - set(variables))
    if missing or unexpected:
        raise ValueError(f"{source}: keys do not match the model. Missing: {missing[:10]}"
                         f"{' …' if len(missing) > 10 else ''}; unexpected: {unexpected[:10]}"
                         f"{' …' if len(unexpected) > 10 else ''}.")
    for key, (variable, transform) in variables.items():
        value = transform(np.asarray(weights[key], "float32"))
        if tuple(value.shape) != tuple(variable.shape):
            raise ValueError(f"{source}: `{key}` has shape {weights[key].shape}, which maps to "
                             f"{value.shape}; the model expects {tuple(variable.shape)}. Check "
                             "the architecture arguments.")
        variable.assign(value)


def _conv(weight):
    return np.transpose(weight, (2, 3, 1, 0))  # torch (O, I, kh, kw) -> Keras (kh, kw, I, O)


def _identity(weight):
    return weight


def _dall_e_variables(dvae, part):
    variables = {}
    for variable in dvae.weights:
        layer, *rest = variable.path.split("/")
        if not layer.startswith(part + "_"):
            continue
        name = layer[len(part) + 1:]
        leaf = "w" if rest[-1] in ("kernel", "embeddings") else "b"
        if name == "output":
            key, transform = f"blocks.output.conv.{leaf}", _conv
        elif name == "input":
            key, transform = f"blocks.input.{leaf}", _conv
            if part == "decoder" and leaf == "w":  # (n_init, V, 1, 1) -> the embedding (V, n_init)
                transform = lambda w: np.transpose(w[:, :, 0, 0])  # noqa: E731
        else:
            group, block = name.split("_block_")
            path = ".".join(rest[:-1]).replace("res_path_conv_", "res_path.conv_")
            key, transform = f"blocks.{group}.block_{block}.{path}.{leaf}", _conv
        if leaf == "b":
            transform = _identity
        variables[key] = (variable, transform)
    return variables


def dall_e(encoder_path, decoder_path, **architecture):
    """DALL-E's released dVAE (`encoder.pkl`, `decoder.pkl`) as a `DiscreteVAE`.

    Args:
        encoder_path, decoder_path: the two files OpenAI publishes (whole
            pickled modules), or `torch.save`d state dicts of
            `dall_e.Encoder` / `dall_e.Decoder`.
        **architecture: `DiscreteVAE` arguments, for a module built with
            non-default ones (`vocab_size`, `hidden_dim`, ...).

    Returns:
        A `keras_gss.models.DiscreteVAE` holding the weights.
    """
    from keras_gss.models.gss.discrete_vae import DiscreteVAE

    dvae = DiscreteVAE(**architecture)
    for part, path in (("encoder", encoder_path), ("decoder", decoder_path)):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`{part}_path` {path!r} does not exist. Download DALL-E's "
                                    f"{part}.pkl and pass its path.")
        weights = torch_state_dict(read_torch_checkpoint(path))
        assign_weights(_dall_e_variables(dvae, part), weights, f"{part}_path {path!r}")
    return dvae

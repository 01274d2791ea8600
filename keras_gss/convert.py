"""Converters from the authors' released PyTorch weights to keras_gss models.

PyTorch checkpoints are pickles, and unpickling can run any code a file
names. `read_torch_checkpoint` never does: its unpickler accepts only the
calls that rebuild tensors (`torch._utils._rebuild_tensor_v2`,
`_rebuild_parameter`), plain containers, and, for whole pickled modules
(DALL-E's `encoder.pkl`, `decoder.pkl`), inert stand-ins for the classes
of the modules in `MODULE_PREFIXES`, which record their state and run
nothing. Any other global refuses the file, naming it. PyTorch need not be
installed.

Converters: `dall_e` (DALL-E's dVAE, GSS's tokenizer) and `mit` (SegFormer's
ImageNet MiT encoder from NVlabs', mmseg's or transformers' layout, into
keras-hub's `MiTBackbone`; `keras-gss convert mit`). Every key must match:
a missing, unexpected or mis-shaped one is an error that names it.
"""

import io
import os
import pickle
import zipfile

import numpy as np

from keras_gss.preset_files import CONVERTED  # noqa: F401
from keras_gss.preset_files import GMMSEG_PRESET
from keras_gss.preset_files import convert_command  # noqa: F401
from keras_gss.preset_files import converted_dir  # noqa: F401
from keras_gss.preset_files import resolve_converted  # noqa: F401

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
        return np.array(storage[offset])  # a 0-d array, as state dicts hold (not a scalar)
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

    A key may map to a list of `(variable, map)` pairs (a fused q/k/v matrix).

    Every key must match: a missing, unexpected or mis-shaped key is an error
    that names it (never a silent partial load).
    """
    missing = sorted(set(variables) - set(weights))
    unexpected = sorted(set(weights) - set(variables))
    if missing or unexpected:
        raise ValueError(f"{source}: keys do not match the model. Missing: {missing[:10]}"
                         f"{' …' if len(missing) > 10 else ''}; unexpected: {unexpected[:10]}"
                         f"{' …' if len(unexpected) > 10 else ''}.")
    values = []  # every shape is checked before any variable changes
    for key, targets in variables.items():
        for variable, transform in ([targets] if isinstance(targets, tuple) else targets):
            value = transform(np.asarray(weights[key], "float32"))
            if tuple(value.shape) != tuple(variable.shape):
                raise ValueError(
                    f"{source}: `{key}` has shape {tuple(weights[key].shape)}, which maps to "
                    f"{value.shape}; the model expects {tuple(variable.shape)}. Check the "
                    "architecture arguments.")
            values.append((variable, value))
    for variable, value in values:
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


# === MiT: SegFormer's encoder, from three source layouts into keras-hub's MiTBackbone ===

MIT_LAYOUTS = ("huggingface", "segformer", "mmseg")
MIT_HEADS = (1, 2, 5, 8)  # every MiT-B0…B5; heads are not in the weights
# SegFormer's Table 6: (hidden dims, depths) of each ImageNet-1K encoder.
MIT_VARIANTS = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2)),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2)),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3)),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3)),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3)),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3)),
}


def mit_variant(backbone):
    """`"mit_b0"`…`"mit_b5"` for a MiTBackbone of a published size, else None."""
    shape = (tuple(backbone.hidden_dims), tuple(backbone.layerwise_depths))
    return next((name for name, sizes in MIT_VARIANTS.items() if sizes == shape), None)


# Source names per layout: `{i}` the stage from 0, `{j}` from 1, `{k}` the block.
_MIT_KEYS = {
    "huggingface": dict(
        embed="encoder.patch_embeddings.{i}.proj",
        embed_norm="encoder.patch_embeddings.{i}.layer_norm",
        block="encoder.block.{i}.{k}.", norm1="layer_norm_1", q="attention.self.query",
        k="attention.self.key", v="attention.self.value", proj="attention.output.dense",
        sr="attention.self.sr", sr_norm="attention.self.layer_norm", norm2="layer_norm_2",
        fc1="mlp.dense1", dwconv="mlp.dwconv.dwconv", fc2="mlp.dense2",
        norm="encoder.layer_norm.{i}"),
    "segformer": dict(  # NVlabs' mix_transformer.py, the released mit_b*.pth
        embed="patch_embed{j}.proj", embed_norm="patch_embed{j}.norm", block="block{j}.{k}.",
        norm1="norm1", q="attn.q", kv="attn.kv", proj="attn.proj", sr="attn.sr",
        sr_norm="attn.norm", norm2="norm2", fc1="mlp.fc1", dwconv="mlp.dwconv.dwconv",
        fc2="mlp.fc2", norm="norm{j}"),
    "mmseg": dict(  # mmseg's MixVisionTransformer (mit2mmseg output; GMMSeg's backbone)
        embed="layers.{i}.0.projection", embed_norm="layers.{i}.0.norm",
        block="layers.{i}.1.{k}.",
        norm1="norm1", qkv="attn.attn.in_proj_", proj="attn.attn.out_proj", sr="attn.sr",
        sr_norm="attn.norm", norm2="norm2", fc1="ffn.layers.0", dwconv="ffn.layers.1",
        fc2="ffn.layers.4", norm="layers.{i}.2"),
}
# transformers ≥ 5 renames the Hub's SegFormer keys on load; read both spellings.
_HF_RENAMES = (
    (r"^stages\.(\d+)\.patch_embeddings\.", r"encoder.patch_embeddings.\1."),
    (r"^stages\.(\d+)\.blocks\.", r"encoder.block.\1."),
    (r"^stages\.(\d+)\.layer_norm\.", r"encoder.layer_norm.\1."),
    (r"attention\.q_proj", "attention.self.query"), (r"attention\.k_proj", "attention.self.key"),
    (r"attention\.v_proj", "attention.self.value"),
    (r"attention\.o_proj", "attention.output.dense"),
    (r"attention\.sequence_reduction\.sequence_reduction", "attention.self.sr"),
    (r"attention\.sequence_reduction\.layer_norm", "attention.self.layer_norm"),
    (r"mlp\.fc1", "mlp.dense1"), (r"mlp\.fc2", "mlp.dense2"),
    (r"layernorm_before", "layer_norm_1"), (r"layernorm_after", "layer_norm_2"),
)
# A source's ImageNet classifier (not the encoder): dropped by name, never by accident.
_MIT_CLASSIFIERS = {"huggingface": ("classifier.weight", "classifier.bias"),
                    "segformer": ("head.weight", "head.bias"), "mmseg": ()}


def _linear(weight):
    return np.transpose(weight)  # torch (out, in) -> Keras (in, out)


def _pointwise(weight):
    return np.transpose(weight[:, :, 0, 0])  # a 1×1 convolution as a Dense kernel


def _depthwise(weight):
    return np.transpose(weight, (2, 3, 0, 1))  # (C, 1, kh, kw) -> (kh, kw, C, 1)


def _rows(index, parts, transform):
    """The `index`-th of `parts` equal row blocks of a fused matrix, then `transform`."""
    def take(weight):
        size = weight.shape[0] // parts
        return transform(weight[index * size:(index + 1) * size])
    return take


def _hf_name(key):
    import re

    for pattern, replacement in _HF_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def mit_layout(weights):
    """`(layout, encoder weights)`: which of `MIT_LAYOUTS` the keys follow, prefixes removed.

    A segmentor checkpoint (mmseg's `backbone.`, transformers' `segformer.`)
    gives its encoder; an ImageNet classifier's head is dropped by name.
    """
    if any(k.startswith("backbone.") for k in weights):  # an mmseg segmentor: its encoder
        weights = {k[len("backbone."):]: v for k, v in weights.items()
                   if k.startswith("backbone.")}
    weights = {(k[len("segformer."):] if k.startswith("segformer.") else k): v
               for k, v in weights.items()}
    if "stages.0.patch_embeddings.proj.weight" in weights:
        weights = {_hf_name(k): v for k, v in weights.items()}
    markers = {"huggingface": "encoder.patch_embeddings.0.proj.weight",
               "segformer": "patch_embed1.proj.weight", "mmseg": "layers.0.0.projection.weight"}
    for layout, marker in markers.items():
        if marker in weights:
            return layout, {k: v for k, v in weights.items()
                            if k not in _MIT_CLASSIFIERS[layout]}
    raise ValueError(f"These weights are not a MiT encoder in any of {MIT_LAYOUTS}: none has "
                     f"{sorted(markers.values())}; the first keys are {sorted(weights)[:5]}.")


def mit_architecture(weights, layout, num_heads=None):
    """`keras_hub.models.MiTBackbone` arguments read off a layout's weights."""
    names = _MIT_KEYS[layout]
    stages = 0
    while f"{names['embed'].format(i=stages, j=stages + 1)}.weight" in weights:
        stages += 1
    depths, dims, patches, ratios = [], [], [], []
    for i in range(stages):
        kernel = weights[f"{names['embed'].format(i=i, j=i + 1)}.weight"]
        dims.append(int(kernel.shape[0]))
        patches.append(int(kernel.shape[-1]))
        block = names["block"].format(i=i, j=i + 1, k=0)
        sr = weights.get(f"{block}{names['sr']}.weight")
        ratios.append(1 if sr is None else int(sr.shape[-1]))
        depth = 0
        while any(k.startswith(names["block"].format(i=i, j=i + 1, k=depth)) for k in weights):
            depth += 1
        depths.append(depth)
    heads = list(num_heads or MIT_HEADS[:stages])
    if len(heads) != stages:
        raise ValueError(f"`num_heads` must give one count per stage ({stages}); received "
                         f"{heads}.")
    return dict(layerwise_depths=depths, num_layers=stages, layerwise_num_heads=heads,
                layerwise_sr_ratios=ratios, max_drop_path_rate=0.1,
                layerwise_patch_sizes=patches,
                layerwise_strides=[(p + 1) // 2 for p in patches], hidden_dims=dims)


def _pair(variables, key, layer, kernel_map):
    kernel = getattr(layer, "gamma", None)
    if kernel is None:
        kernel = layer.kernel
    bias = layer.beta if hasattr(layer, "beta") else layer.bias
    variables[f"{key}.weight"] = (kernel, kernel_map)
    variables[f"{key}.bias"] = (bias, _identity)


def _fused(variables, key, parts):
    """A fused projection's `key.format("weight"/"bias")`: one row block per Dense of `parts`."""
    for leaf, transform in (("weight", _linear), ("bias", _identity)):
        variables[key.format(leaf)] = [
            (part.kernel if leaf == "weight" else part.bias, _rows(n, len(parts), transform))
            for n, part in enumerate(parts)]


def _mit_variables(backbone, layout):
    """Source key → (variable, map) for every weight of a keras-hub `MiTBackbone`."""
    import keras

    names = _MIT_KEYS[layout]
    dense = _pointwise if layout == "mmseg" else _linear
    stage_norms = [layer for layer in backbone.layers
                   if isinstance(layer, keras.layers.LayerNormalization)]
    variables = {}
    for i in range(backbone.num_layers):
        at = dict(i=i, j=i + 1)
        embed = backbone.get_layer(f"patch_and_embed_{i}")
        _pair(variables, names["embed"].format(**at), embed.proj, _conv)
        _pair(variables, names["embed_norm"].format(**at), embed.norm, _identity)
        _pair(variables, names["norm"].format(**at), stage_norms[i], _identity)
        for k in range(backbone.layerwise_depths[i]):
            block = backbone.get_layer(f"hierarchical_encoder_{i}_{k}")
            attention, ffn = block.attn, block.mlp
            prefix = names["block"].format(k=k, **at)
            _pair(variables, prefix + names["norm1"], block.norm1, _identity)
            _pair(variables, prefix + names["norm2"], block.norm2, _identity)
            _pair(variables, prefix + names["proj"], attention.proj, _linear)
            if "qkv" in names:  # one (3C, C) in-projection: q, k, v row blocks
                _fused(variables, prefix + names["qkv"] + "{}",
                       (attention.q, attention.k, attention.v))
            elif "kv" in names:  # q, then one (2C, C) projection: k, v row blocks
                _pair(variables, prefix + names["q"], attention.q, _linear)
                _fused(variables, prefix + names["kv"] + ".{}", (attention.k, attention.v))
            else:
                for part in ("q", "k", "v"):
                    _pair(variables, prefix + names[part], getattr(attention, part), _linear)
            if attention.sr_ratio > 1:
                _pair(variables, prefix + names["sr"], attention.sr, _conv)
                _pair(variables, prefix + names["sr_norm"], attention.norm, _identity)
            _pair(variables, prefix + names["fc1"], ffn.fc1, dense)
            _pair(variables, prefix + names["dwconv"], ffn.dwconv, _depthwise)
            _pair(variables, prefix + names["fc2"], ffn.fc2, dense)
    return variables


CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def is_checkpoint(path):
    """Whether `path` is a source checkpoint to convert (not a Keras preset or weights file)."""
    path = str(path)
    if os.path.isdir(path):
        return (not os.path.isfile(os.path.join(path, "model.weights.h5"))
                and any(os.path.isfile(os.path.join(path, name))
                        for name in ("model.safetensors", "pytorch_model.bin")))
    return path.endswith(CHECKPOINT_SUFFIXES)


def read_weights(source):
    """`(name → array, config or None)` from a checkpoint file, a folder or an `hf://` repo.

    Files: `.safetensors` (through the `safetensors` package) or a
    `torch.save` file (`.pth`, `.bin`, `.pt`; `read_torch_checkpoint`, no
    pickled code runs). A folder (or a downloaded `hf://org/repo`) holds
    `model.safetensors` or `pytorch_model.bin`, and maybe `config.json`.
    """
    import json

    if str(source).startswith("hf://"):
        from keras_gss.hub import download_files

        folder = download_files(source, ("config.json", "model.safetensors"))
        if not os.path.isfile(os.path.join(folder, "model.safetensors")):  # older repos
            folder = download_files(source, ("config.json", "pytorch_model.bin"))
        source = folder
    config = None
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, "config.json")):
            with open(os.path.join(source, "config.json")) as file:
                config = json.load(file)
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(source, name)):
                source = os.path.join(source, name)
                break
        else:
            raise FileNotFoundError(f"{source!r} holds neither model.safetensors nor "
                                    "pytorch_model.bin.")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source!r} does not exist: pass a .pth, .bin or .safetensors "
                                "file, a folder holding one, or an hf://org/repo handle.")
    if str(source).endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(source)), config
    return torch_state_dict(read_torch_checkpoint(source)), config


def mit(source, num_heads=None, image_shape=(224, 224, 3), backbone=None):
    """SegFormer's MiT encoder from the authors' or transformers' weights, as keras-hub's.

    Reads NVlabs' `mit_b*.pth` (`patch_embed1…`), mmseg's converted
    `mit_b*_mmseg.pth` or a segmentor checkpoint's `backbone.` (`layers.0…`),
    or transformers' `nvidia/mit-b*` (`encoder.patch_embeddings…`, either
    spelling). The architecture is read off the weights; `num_heads`
    (default MiT's `(1, 2, 5, 8)`) from `config.json` when there is one.

    Args:
        source: a file, folder or `hf://` handle (see `read_weights`).
        num_heads: attention heads per stage, where no `config.json` says.
        image_shape: the built backbone's input shape.
        backbone: an existing `MiTBackbone` to fill instead of building one
            (every key and shape must match it).

    Returns:
        A `keras_hub.models.MiTBackbone` holding the weights; save it with
        `save_to_preset` and pass that folder as a recipe's `encoder_weights`.
    """
    if backbone is not None and not hasattr(backbone, "layerwise_depths"):
        raise ValueError(f"`backbone` must be a keras-hub MiTBackbone (SegFormer's encoder) to "
                         f"take MiT weights; received {type(backbone).__name__}.")
    weights, config = read_weights(source)
    layout, weights = mit_layout(weights)
    if backbone is None:
        import keras_hub

        if config and num_heads is None:
            num_heads = config.get("num_attention_heads")
        backbone = keras_hub.models.MiTBackbone(
            image_shape=tuple(image_shape), **mit_architecture(weights, layout, num_heads))
    variables = _mit_variables(backbone, layout)
    mapped = {id(v) for targets in variables.values()
              for v, _ in ([targets] if isinstance(targets, tuple) else targets)}
    unmapped = [v.path for v in backbone.weights if id(v) not in mapped]
    if unmapped:  # keras-hub's MiT grew a variable this converter does not know
        raise ValueError(f"No {layout} key maps to the backbone's {unmapped[:5]}; this "
                         "keras-hub version's MiTBackbone differs from the one the converter "
                         "was written for.")
    assign_weights(variables, weights, f"{layout} MiT {source!r}")
    return backbone


# === GMMSeg: the authors' mmseg checkpoint (MiT, mmseg's SegFormer head, the GMM head) ===


# Buffers the authors save that a trained model's inference does not read: the unused
# BaseDecodeHead classifier, the feature memory, its pointers, a constant and a counter.
GMMSEG_DROPPED = ("decode_head.conv_seg.weight", "decode_head.conv_seg.bias",
                  "decode_head.queue", "decode_head.queue_ptr", "decode_head.eye_matrix",
                  "decode_head.iteration_counter")


def _batch_norm(variables, key, layer):
    variables[f"{key}.weight"] = (layer.gamma, _identity)
    variables[f"{key}.bias"] = (layer.beta, _identity)
    variables[f"{key}.running_mean"] = (layer.moving_mean, _identity)
    variables[f"{key}.running_var"] = (layer.moving_variance, _identity)


def _unit_rows(means):
    return means / np.linalg.norm(means, axis=-1, keepdims=True)  # the authors' forward does


def _gmmseg_variables(model):
    """mmseg key → (variable, map) for a `GMMSegImageSegmenter` on `MMSegSegFormerBackbone`."""
    backbone, head = model.backbone, model.gmm_head
    variables = {f"backbone.{k}": v
                 for k, v in _mit_variables(backbone.image_encoder, "mmseg").items()}
    for index in range(backbone.image_encoder.num_layers):
        variables[f"decode_head.convs.{index}.conv.weight"] = (
            backbone.get_layer(f"level_{index}_conv").kernel, _conv)
        _batch_norm(variables, f"decode_head.convs.{index}.bn",
                    backbone.get_layer(f"level_{index}_norm"))
    variables["decode_head.fusion_conv.conv.weight"] = (
        backbone.get_layer("fusion_conv").kernel, _conv)
    _batch_norm(variables, "decode_head.fusion_conv.bn", backbone.get_layer("fusion_norm"))
    variables["decode_head.projection.conv.weight"] = (head.projection.kernel, _pointwise)
    _batch_norm(variables, "decode_head.projection.bn", head.projection_norm)
    _pair(variables, "decode_head.feat_norm", head.feature_norm, _identity)
    _pair(variables, "decode_head.mask_norm", head.class_score_norm, _identity)
    variables["decode_head.means"] = (head.means, _unit_rows)
    variables["decode_head.diagonal"] = (head.scales, _identity)
    return variables


def gmmseg_model(weights, image_shape=(512, 512, 3)):
    """A `GMMSegImageSegmenter` shaped as a GMMSeg checkpoint's weights.

    The MiT is read off `backbone.*`, the decoder's width off its fusion
    conv, `(C, M, D)` off `decode_head.means`; the other arguments are the
    `GMMSEG_PRESET` record's (PyTorch's BatchNorm epsilon among them).
    """
    import keras_hub

    from keras_gss.models.backbones import MMSegSegFormerBackbone
    from keras_gss.models.gmmseg import GMMSegImageSegmenter
    from keras_gss.presets import PRESETS

    needed = ("decode_head.means", "decode_head.fusion_conv.conv.weight")
    missing = [key for key in needed if key not in weights]
    if missing:
        raise ValueError(f"Not a GMMSeg checkpoint (mmseg's SegformerGMMSegHead): no {missing}; "
                         f"its keys start {sorted(weights)[:5]}.")
    layout, encoder = mit_layout(weights)
    if layout != "mmseg":
        raise ValueError(f"The checkpoint's encoder follows the {layout!r} layout; the GMMSeg "
                         "authors' checkpoints hold mmseg's (`backbone.layers.0…`).")
    classes, components, dim = (int(n) for n in weights["decode_head.means"].shape)
    mit_encoder = keras_hub.models.MiTBackbone(image_shape=tuple(image_shape),
                                               **mit_architecture(encoder, layout))
    backbone = MMSegSegFormerBackbone(
        mit_encoder, projection_filters=int(weights["decode_head.fusion_conv.conv.weight"]
                                            .shape[0]))
    config = {**PRESETS[GMMSEG_PRESET]["config"], "num_classes": classes,
              "num_components": components, "embedding_dim": dim}
    return GMMSegImageSegmenter(backbone, **config)


def is_gmmseg_release(model):
    """Whether `model` has the released checkpoint's shape (`GMMSEG_PRESET`'s record)."""
    head = model.gmm_head
    return (mit_variant(model.backbone.image_encoder) == "mit_b5"
            and model.backbone.projection_filters == 768
            and (head.num_classes, head.num_components, head.embedding_dim) == (171, 5, 64))


def gmmseg(source, model=None, image_shape=(512, 512, 3)):
    """The GMMSeg authors' checkpoint as a `GMMSegImageSegmenter` (or into `model`).

    Reads `GMMSeg-Segformer-b5-512x512-80k-cocostuff10k.pth` (or any
    checkpoint of their `SegformerGMMSegHead`): the MiT, mmseg's SegFormer
    head, the projection, the feature and class norms, the means (unit
    rows, as their forward uses them) and the scales. The feature memory and
    the other training buffers (`GMMSEG_DROPPED`, BatchNorm counters) are
    dropped by name; every other key must match, and all shapes are checked
    before anything is assigned. `keras-gss convert gmmseg` saves the result
    with the record's class names and test settings.

    Args:
        source: a `.pth` file, a folder or an `hf://` handle (`read_weights`).
        model: a `GMMSegImageSegmenter` on an `MMSegSegFormerBackbone` with
            `norm_epsilon=1e-5`. Defaults to one shaped as the checkpoint
            (`gmmseg_model`).
        image_shape: input shape of the model built when `model` is None.
            Defaults to the authors' 512×512 crops.
    """
    from keras_gss.models.backbones import MMSegSegFormerBackbone

    weights = {k: v for k, v in read_weights(source)[0].items()
               if k not in GMMSEG_DROPPED and not k.endswith(".num_batches_tracked")}
    if model is None:
        model = gmmseg_model(weights, image_shape)
    if not isinstance(getattr(model, "backbone", None), MMSegSegFormerBackbone):
        raise ValueError("`model` must be a GMMSegImageSegmenter on an MMSegSegFormerBackbone "
                         "(segformer_backbone(..., decoder='mmseg')), the authors' decoder.")
    assign_weights(_gmmseg_variables(model), weights, f"GMMSeg checkpoint {source!r}")
    return model

"""Converters against reference PyTorch modules with random weights (the `convert` extra).

`.ci/run` installs PyTorch and DALL-E's package and sets
`KERAS_GSS_REQUIRE_CONVERT=1`, so there a missing reference fails instead of skipping.
"""

import io
import os
import pickle
import zipfile

import numpy as np
import pytest

from keras_gss import convert


def _require(module):
    if os.environ.get("KERAS_GSS_REQUIRE_CONVERT"):
        return __import__(module)
    return pytest.importorskip(module)


DALL_E_SMALL = dict(vocab_size=512, hidden_dim=64, blocks_per_group=1, init_dim=32)


def _dall_e_modules(torch, dall_e):
    torch.manual_seed(0)
    encoder = dall_e.Encoder(n_hid=64, n_blk_per_group=1, vocab_size=512)
    decoder = dall_e.Decoder(n_init=32, n_hid=64, n_blk_per_group=1, vocab_size=512)
    with torch.no_grad():
        for module in (encoder, decoder):
            for name, parameter in module.named_parameters():
                if name.endswith(".b"):  # DALL-E initialises biases to 0: test them too
                    parameter.normal_(std=0.1)
    return encoder, decoder


def test_dall_e_parity_from_whole_pickled_modules_and_state_dicts(tmp_path):
    torch, dall_e = _require("torch"), _require("dall_e")
    encoder, decoder = _dall_e_modules(torch, dall_e)
    # OpenAI publishes whole pickled modules; a state dict must convert too.
    torch.save(encoder, tmp_path / "encoder.pkl")
    torch.save(decoder.state_dict(), tmp_path / "decoder.pt")
    dvae = convert.dall_e(str(tmp_path / "encoder.pkl"), str(tmp_path / "decoder.pt"),
                          **DALL_E_SMALL)
    images = np.random.default_rng(0).uniform(0.1, 0.9, (2, 32, 40, 3)).astype("float32")
    with torch.no_grad():
        reference = encoder(torch.from_numpy(images).permute(0, 3, 1, 2))
        reference = reference.permute(0, 2, 3, 1).numpy()
        tokens = reference.argmax(-1)
        one_hot = torch.nn.functional.one_hot(torch.from_numpy(tokens), 512).float()
        decoded = decoder(one_hot.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(np.asarray(dvae.token_logits(images)), reference, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(dvae.encode(images)), tokens)
    np.testing.assert_allclose(np.asarray(dvae.decoder_outputs(tokens.astype("int32"))),
                               decoded, atol=1e-4)
    with torch.no_grad():  # dall_e.unmap_pixels(sigmoid(means)) is the codec's unmap of decode
        means = torch.sigmoid(torch.from_numpy(decoded[..., :3]).permute(0, 3, 1, 2))
        pixels = dall_e.unmap_pixels(means).permute(0, 2, 3, 1).numpy()
    from keras_gss.layers.maskige_codec import unmap_pixels

    np.testing.assert_allclose(np.asarray(unmap_pixels(dvae.decode(tokens.astype("int32")))),
                               pixels, atol=1e-5)


def test_renamed_missing_or_misshaped_keys_are_named(tmp_path):
    torch, dall_e = _require("torch"), _require("dall_e")
    encoder, decoder = _dall_e_modules(torch, dall_e)
    torch.save(decoder.state_dict(), tmp_path / "decoder.pt")
    state = encoder.state_dict()
    renamed = dict(state)
    renamed["blocks.group_1.block_1.res_path.conv_9.w"] = renamed.pop(
        "blocks.group_1.block_1.res_path.conv_1.w")
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(ValueError, match=r"Missing: \['blocks.group_1.block_1.res_path.conv_1.w'\]"
                       r"; unexpected: \['blocks.group_1.block_1.res_path.conv_9.w'\]"):
        convert.dall_e(str(tmp_path / "renamed.pt"), str(tmp_path / "decoder.pt"), **DALL_E_SMALL)
    misshaped = dict(state)
    misshaped["blocks.output.conv.w"] = torch.zeros(256, 512, 1, 1)
    torch.save(misshaped, tmp_path / "misshaped.pt")
    with pytest.raises(ValueError, match=r"`blocks.output.conv.w` has shape \(256, 512, 1, 1\)"):
        convert.dall_e(str(tmp_path / "misshaped.pt"), str(tmp_path / "decoder.pt"),
                       **DALL_E_SMALL)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _torch_zip(path, payload):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(payload, protocol=2))


def test_a_pickle_that_calls_anything_but_a_tensor_rebuild_is_refused(tmp_path, monkeypatch):
    _torch_zip(tmp_path / "evil.pt", {"w": _Exploit()})
    calls = []
    monkeypatch.setattr(os, "system", lambda command: calls.append(command))
    with pytest.raises(pickle.UnpicklingError, match=r"Refusing to load `(posix|os|nt)\.system`"):
        convert.read_torch_checkpoint(str(tmp_path / "evil.pt"))
    assert calls == []
    with pytest.raises(ValueError, match="not a PyTorch zip checkpoint"):
        (tmp_path / "legacy.pt").write_bytes(pickle.dumps({"w": 1}))
        convert.read_torch_checkpoint(str(tmp_path / "legacy.pt"))


def test_reads_tensors_of_every_dtype_and_layout_without_torch_code(tmp_path):
    torch = _require("torch")
    tensors = {"float": torch.randn(3, 4), "half": torch.randn(2).half(),
               "long": torch.arange(5), "bool": torch.tensor([True, False]),
               "transposed": torch.randn(3, 4).t(), "slice": torch.randn(6)[2:5],
               "scalar": torch.tensor(2.5)}
    torch.save(tensors, tmp_path / "tensors.pt")
    loaded = convert.read_torch_checkpoint(str(tmp_path / "tensors.pt"))
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(loaded[name], tensor.numpy(), err_msg=name)
        assert loaded[name].dtype == tensor.numpy().dtype, name
        assert isinstance(loaded[name], np.ndarray), name  # 0-d too (BatchNorm's counters)
    assert set(convert.torch_state_dict(loaded)) == set(tensors)
    buffer = io.BytesIO()
    torch.save(torch.randn(2, dtype=torch.bfloat16), buffer)
    (tmp_path / "bf16.pt").write_bytes(buffer.getvalue())
    value = convert.read_torch_checkpoint(str(tmp_path / "bf16.pt"))
    assert value.dtype.name == "bfloat16" and value.shape == (2,)


# === MiT ===

MIT_CONFIGS = {  # B0 itself, and B5's depths at reduced widths
    "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2]),
    "b5_shaped": dict(hidden_sizes=[16, 32, 80, 128], depths=[3, 6, 40, 3]),
}
# B0 from every source; the deep one from the Hub's and mmseg's (GMMSeg's backbone) layouts
MIT_SOURCES = {"b0": ("huggingface", "huggingface_v5", "segformer", "mmseg"),
               "b5_shaped": ("huggingface", "mmseg")}


def _mit_reference(torch, sizes):
    from transformers import SegformerConfig, SegformerModel

    torch.manual_seed(0)
    config = SegformerConfig(num_attention_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1], **sizes)
    model = SegformerModel(config).eval()
    with torch.no_grad():  # norms and biases start at 1 and 0: draw them so they are tested
        for name, parameter in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            elif name.endswith("bias"):
                parameter.normal_(std=0.2)
    return model


# The two authors' layouts, written from their modules' attribute names (NVlabs'
# mix_transformer.py; mmseg's mit.py, whose attention is nn.MultiheadAttention with one
# (3C, C) in-projection and whose MLP is 1×1 convolutions) from transformers' Hub keys.
_LAYOUTS = {
    "segformer": dict(embed="patch_embed{j}.proj", embed_norm="patch_embed{j}.norm",
                      norm="norm{j}", block="block{j}.{k}.", layer_norm_1="norm1",
                      layer_norm_2="norm2", sr="attn.sr", sr_norm="attn.norm",
                      out="attn.proj", dense1="mlp.fc1", dwconv="mlp.dwconv.dwconv",
                      dense2="mlp.fc2"),
    "mmseg": dict(embed="layers.{i}.0.projection", embed_norm="layers.{i}.0.norm",
                  norm="layers.{i}.2", block="layers.{i}.1.{k}.", layer_norm_1="norm1",
                  layer_norm_2="norm2", sr="attn.sr", sr_norm="attn.norm",
                  out="attn.attn.out_proj", dense1="ffn.layers.0", dwconv="ffn.layers.1",
                  dense2="ffn.layers.4"),
}


def _authors_state(hub, layout):
    import re

    names, out = _LAYOUTS[layout], {}
    for key, value in hub.items():
        match = re.match(r"encoder\.(patch_embeddings|layer_norm|block)\.(\d+)\.(?:(\d+)\.)?(.*)",
                         key)
        group, i, k, rest = match[1], int(match[2]), match[3], match[4]
        at = dict(i=i, j=i + 1, k=k)
        if group == "patch_embeddings":
            part, leaf = rest.split(".")
            out[f"{names['embed' if part == 'proj' else 'embed_norm'].format(**at)}.{leaf}"] = value
            continue
        if group == "layer_norm":
            out[f"{names['norm'].format(**at)}.{rest}"] = value
            continue
        prefix, (module, leaf) = names["block"].format(**at), rest.rsplit(".", 1)
        if module in ("attention.self.query", "attention.self.key", "attention.self.value"):
            if module.endswith("query") and layout == "mmseg":
                fused = [hub[key.replace("query", part)] for part in ("query", "key", "value")]
                out[f"{prefix}attn.attn.in_proj_{leaf}"] = np.concatenate(fused, 0)
            elif module.endswith("query"):
                out[f"{prefix}attn.q.{leaf}"] = value
            elif module.endswith("key") and layout == "segformer":
                fused = [value, hub[key.replace("key", "value")]]
                out[f"{prefix}attn.kv.{leaf}"] = np.concatenate(fused, 0)
            continue
        name = {"layer_norm_1": "layer_norm_1", "layer_norm_2": "layer_norm_2",
                "attention.self.sr": "sr", "attention.self.layer_norm": "sr_norm",
                "attention.output.dense": "out", "mlp.dense1": "dense1",
                "mlp.dwconv.dwconv": "dwconv", "mlp.dense2": "dense2"}[module]
        if layout == "mmseg" and name in ("dense1", "dense2") and leaf == "weight":
            value = value[:, :, None, None]  # mmseg's MLP: 1×1 convolutions
        out[f"{prefix}{names[name]}.{leaf}"] = value
    return out


def _save_mit_sources(torch, model, folder):
    """The reference's weights as each source publishes them: four files or folders."""
    from safetensors.numpy import save_file

    model.save_pretrained(folder / "hub")  # the Hub's spelling (encoder.block.…)
    hub = {k: v.numpy() for k, v in model.state_dict().items()}
    legacy = {k: v for k, v in zip(*_load_keys(folder / "hub"))}
    # transformers ≥ 5's own spelling (stages.…) in an ImageNet classifier's checkpoint
    classifier = {f"segformer.{k}": v for k, v in hub.items()}
    classifier["classifier.weight"] = np.zeros((10, model.config.hidden_sizes[-1]), "float32")
    classifier["classifier.bias"] = np.zeros(10, "float32")
    (folder / "classifier").mkdir()
    save_file(classifier, str(folder / "classifier" / "model.safetensors"))
    nvlabs = {k: torch.from_numpy(v) for k, v in _authors_state(legacy, "segformer").items()}
    nvlabs["head.weight"] = torch.zeros(1000, model.config.hidden_sizes[-1])
    nvlabs["head.bias"] = torch.zeros(1000)
    torch.save(nvlabs, folder / "mit_nvlabs.pth")
    mmseg = {f"backbone.{k}": torch.from_numpy(v)
             for k, v in _authors_state(legacy, "mmseg").items()}
    mmseg["decode_head.conv_seg.weight"] = torch.zeros(19, 8, 1, 1)  # a segmentor's head
    torch.save({"meta": {"mmseg_version": "0.x"}, "state_dict": mmseg}, folder / "segmentor.pth")
    return {"huggingface": folder / "hub", "huggingface_v5": folder / "classifier",
            "segformer": folder / "mit_nvlabs.pth", "mmseg": folder / "segmentor.pth"}


def _load_keys(folder):
    from safetensors.numpy import load_file

    weights = load_file(str(folder / "model.safetensors"))
    return list(weights), list(weights.values())


def _hidden_states(torch, model, images):
    with torch.no_grad():
        states = model(torch.from_numpy(images).permute(0, 3, 1, 2),
                       output_hidden_states=True).hidden_states
    return [h.permute(0, 2, 3, 1).numpy() for h in states]


@pytest.mark.parametrize("size", sorted(MIT_CONFIGS))
def test_mit_parity_from_every_source_layout(tmp_path, size):
    import keras

    torch = _require("torch")
    _require("transformers")
    model = _mit_reference(torch, MIT_CONFIGS[size])
    sources = _save_mit_sources(torch, model, tmp_path)
    images = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    reference = _hidden_states(torch, model, images)
    backbone = None
    for name in MIT_SOURCES[size]:  # the first builds from the weights; the rest refill
        source = sources[name]
        if backbone is not None:
            for variable in backbone.weights:
                variable.assign(np.zeros(variable.shape, "float32"))
        backbone = convert.mit(str(source), image_shape=(64, 64, 3), backbone=backbone)
        assert backbone.layerwise_depths == MIT_CONFIGS[size]["depths"]
        pyramid = keras.Model(backbone.input, backbone.pyramid_outputs)(images)
        for level, expected in enumerate(reference):
            np.testing.assert_allclose(np.asarray(pyramid[f"P{level + 1}"]), expected,
                                       atol=1e-4, err_msg=f"{name}, stage {level + 1}")
    assert convert.mit_layout(convert.read_weights(str(sources["mmseg"]))[0])[0] == "mmseg"


def test_converted_mit_is_listed_and_starts_recipes_by_name_or_from_the_checkpoint(
        tmp_path, monkeypatch, capsys):
    import types

    import keras
    import keras_hub

    from keras_gss import cli
    from keras_gss.training import _load_encoder_weights

    torch = _require("torch")
    _require("transformers")
    monkeypatch.setenv("KERAS_GSS_HOME", str(tmp_path / "home"))
    model = _mit_reference(torch, MIT_CONFIGS["b0"])
    checkpoint = _save_mit_sources(torch, model, tmp_path)["segformer"]
    assert cli.main(["convert", "mit", str(checkpoint)]) == 0
    folder = tmp_path / "home" / "converted" / "mit_b0"
    assert f"wrote {folder}: mit_b0 (3,319,392 parameters)" in capsys.readouterr().out
    assert cli.main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "starting weights: mit_b0: converted here" in listing
    assert "starting weights: mit_b1: keras-gss convert mit hf://nvidia/mit-b1" in listing
    assert "starting weights: resnet_50_imagenet: keras-hub" in listing

    images = np.random.default_rng(1).normal(size=(1, 64, 64, 3)).astype("float32")
    expected = _hidden_states(torch, model, images)[-1]
    encoder = keras_hub.models.Backbone.from_preset(str(folder), image_shape=(64, 64, 3))
    np.testing.assert_allclose(np.asarray(encoder(images)), expected, atol=1e-4)
    target = keras_hub.models.MiTBackbone(image_shape=(64, 64, 3), **convert.mit_architecture(
        *reversed(convert.mit_layout(convert.read_weights(str(checkpoint))[0]))))
    segmenter = types.SimpleNamespace(backbone=target)  # what the loader reads of a segmenter
    for weights in ("converted:mit_b0", str(checkpoint)):  # by name, and straight from the file
        for variable in target.weights:
            variable.assign(np.zeros(variable.shape, "float32"))
        _load_encoder_weights(segmenter, weights)
        np.testing.assert_allclose(np.asarray(target(images)), expected, atol=1e-4)
    with pytest.raises(FileNotFoundError, match=r"converted:mit_b1.*keras-gss convert mit "
                                                r"hf://nvidia/mit-b1"):
        _load_encoder_weights(segmenter, "converted:mit_b1")
    with pytest.raises(ValueError, match="must be a keras-hub MiTBackbone"):
        convert.mit(str(checkpoint), backbone=keras.Sequential([keras.layers.Dense(2)]))

    state = torch.load(checkpoint, weights_only=True)  # a renamed, a mis-shaped key: named
    renamed = dict(state)
    renamed["block1.0.attn.kv_proj.weight"] = renamed.pop("block1.0.attn.kv.weight")
    torch.save(renamed, tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"Missing: \['block1.0.attn.kv.weight'\]; "
                                         r"unexpected: \['block1.0.attn.kv_proj.weight'\]"):
        convert.mit(str(tmp_path / "renamed.pth"), backbone=target)
    misshaped = dict(state, **{"norm4.weight": torch.ones(3)})
    torch.save(misshaped, tmp_path / "misshaped.pth")
    with pytest.raises(ValueError, match=r"`norm4.weight` has shape \(3,\)"):
        convert.mit(str(tmp_path / "misshaped.pth"), backbone=target)
    np.testing.assert_allclose(np.asarray(target(images)), expected, atol=1e-4)  # untouched
    torch.save({"conv.weight": torch.ones(3)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"not a MiT encoder.*\['conv.weight'\]"):
        convert.mit(str(tmp_path / "other.pth"))


# === GMMSeg ===

def _gmmseg_head_reference(torch, in_channels, channels, num_classes, components, dim):
    """The authors' SegformerGMMSegHead at inference, transcribed from the spec (reference-notes
    §1): mmseg ConvModules (1×1 conv without bias, BatchNorm, ReLU) per level, resized to the
    finest and concatenated finest first, fused, projected; LayerNorm, L2; diagonal Gaussians
    around L2-normalised means; max over components; LayerNorm over classes. Buffers and
    parameters carry the authors' names."""
    import math

    nn, functional = torch.nn, torch.nn.functional

    class ConvModule(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 1, bias=False)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.ModuleList([ConvModule(c, channels) for c in in_channels])
            self.fusion_conv = ConvModule(channels * len(in_channels), channels)
            self.projection = ConvModule(channels, dim)
            self.conv_seg = nn.Conv2d(channels, num_classes, 1)  # mmseg's, never used
            self.register_buffer("queue", torch.randn(num_classes * components, dim, 16))
            self.register_buffer("queue_ptr", torch.zeros(num_classes * components,
                                                          dtype=torch.long))
            frozen = dict(requires_grad=False)
            self.means = nn.Parameter(torch.randn(num_classes, components, dim), **frozen)
            self.diagonal = nn.Parameter(0.5 + torch.rand(num_classes, components, dim),
                                         **frozen)
            self.eye_matrix = nn.Parameter(torch.ones(dim), **frozen)
            self.feat_norm = nn.LayerNorm(dim)
            self.mask_norm = nn.LayerNorm(num_classes)
            self.iteration_counter = nn.Parameter(torch.zeros(1), **frozen)

        def forward(self, features):
            size = features[0].shape[2:]
            levels = [functional.interpolate(conv(x), size=size, mode="bilinear",
                                             align_corners=False)
                      for conv, x in zip(self.convs, features)]
            x = self.projection(self.fusion_conv(torch.cat(levels, 1)))
            batch, _, height, width = x.shape
            embeddings = x.permute(0, 2, 3, 1).reshape(-1, dim)
            embeddings = functional.normalize(self.feat_norm(embeddings), dim=-1)
            means = functional.normalize(self.means, dim=-1)
            z = (embeddings[:, None, None, :] - means[None]) / self.diagonal[None]
            log_prob = (-0.5 * dim * math.log(2 * math.pi) - self.diagonal.log().sum(-1)
                        - 0.5 * z.pow(2).sum(-1))  # MultivariateNormalDiag.log_prob
            class_ll = log_prob.amax(-1)
            logits = self.mask_norm(class_ll).reshape(batch, height, width, num_classes)
            return logits, -class_ll.amax(-1).reshape(batch, height, width)

    return Head().eval()


def _coco_stuff10k_fixture(root, classes):
    """Two test images of COCO-Stuff-10k v1.1's layout, labels COCO ids 0 (void) and 1..classes."""
    from PIL import Image
    from scipy.io import savemat

    rng = np.random.default_rng(5)
    os.makedirs(root / "imageLists")
    os.makedirs(root / "images")
    os.makedirs(root / "annotations")
    names = ["COCO_train2014_000000000077", "COCO_train2014_000000000078"]
    (root / "imageLists" / "test.txt").write_text("\n".join(names) + "\n")
    labels = []
    for name, (height, width) in zip(names, [(40, 48), (36, 60)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
            root / "images" / f"{name}.jpg", quality=100)
        stored = rng.integers(0, classes + 1, (height, width))
        savemat(root / "annotations" / f"{name}.mat", {"S": stored.astype(np.uint16)})
        labels.append(np.where(stored == 0, 255, stored - 1))
    return names, labels


def test_gmmseg_checkpoint_parity(tmp_path, monkeypatch, capsys):
    import hashlib
    import json

    import keras_hub
    from PIL import Image

    import keras_gss
    from keras_gss import cli
    from keras_gss.data import normalize_images
    from keras_gss.inference import predict_sliding_window

    from keras_gss.models import GMMSegImageSegmenter
    from keras_gss.models.backbones import MMSegSegFormerBackbone

    torch = _require("torch")
    _require("transformers")
    sizes, channels, classes, components, dim = MIT_CONFIGS["b0"], 24, 5, 3, 8
    encoder = _mit_reference(torch, sizes)
    head = _gmmseg_head_reference(torch, sizes["hidden_sizes"], channels, classes, components,
                                  dim)
    with torch.no_grad():  # running statistics and affine terms away from their defaults
        for name, tensor in head.state_dict().items():
            if name.endswith(("running_var", "norm.weight", "bn.weight")):
                tensor.copy_(0.5 + torch.rand_like(tensor))
            elif name.endswith(("running_mean", "bias")):
                tensor.normal_(std=0.2)
    encoder.save_pretrained(tmp_path / "hub")
    legacy = dict(zip(*_load_keys(tmp_path / "hub")))
    state = {f"backbone.{k}": torch.from_numpy(v)
             for k, v in _authors_state(legacy, "mmseg").items()}
    state.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    torch.save({"meta": {"CLASSES": list(range(classes))}, "state_dict": state},
               tmp_path / "gmmseg.pth")

    images = np.random.default_rng(2).normal(size=(2, 64, 64, 3)).astype("float32")
    with torch.no_grad():
        states = encoder(torch.from_numpy(images).permute(0, 3, 1, 2),
                         output_hidden_states=True).hidden_states
        logits, score = head(list(states))
        logits = torch.nn.functional.interpolate(logits.permute(0, 3, 1, 2), size=(64, 64),
                                                 mode="bilinear", align_corners=False)
        score = torch.nn.functional.interpolate(score[:, None], size=(64, 64),
                                                mode="bilinear", align_corners=False)
    mit = keras_hub.models.MiTBackbone(image_shape=(64, 64, 3), **convert.mit_architecture(
        *reversed(convert.mit_layout(legacy))))
    model = GMMSegImageSegmenter(MMSegSegFormerBackbone(mit, projection_filters=channels),
                                 num_classes=classes, num_components=components,
                                 embedding_dim=dim, memory_size=16, norm_epsilon=1e-5)
    convert.gmmseg(str(tmp_path / "gmmseg.pth"), model)
    outputs = model.predict_outputs(images, verbose=0)
    logits = logits.permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(outputs["logits"], logits, atol=1e-4)
    np.testing.assert_allclose(outputs["anomaly_score"], score[:, 0].numpy(), atol=1e-3)

    # A renamed key is named (both spellings) and nothing is assigned; the dropped buffers are not.
    renamed = dict(state, **{"decode_head.mean": state["decode_head.means"]})
    del renamed["decode_head.means"]
    torch.save({"state_dict": renamed}, tmp_path / "renamed.pth")
    before = [np.array(v) for v in model.weights]
    with pytest.raises(ValueError, match=r"Missing: \['decode_head\.means'\]; "
                                         r"unexpected: \['decode_head\.mean'\]"):
        convert.gmmseg(str(tmp_path / "renamed.pth"), model)
    assert all(np.array_equal(a, np.array(b)) for a, b in zip(before, model.weights))

    # The command builds the model the checkpoint is shaped as, saves it with the record's test
    # settings, and the preset reproduces the reference.
    monkeypatch.setenv("KERAS_GSS_HOME", str(tmp_path / "home"))
    preset = tmp_path / "authors"
    assert cli.main(["convert", "gmmseg", str(tmp_path / "gmmseg.pth"), "--out", str(preset),
                     "--image-size", "64"]) == 0
    assert f"keras-gss evaluate {preset} --dataset coco_stuff10k" in capsys.readouterr().out
    restored = keras_gss.from_preset(str(preset))
    np.testing.assert_allclose(restored.predict(images, verbose=0), logits, atol=1e-4)
    conversion = json.loads((preset / "conversion.json").read_text())
    assert conversion["sha256"] == hashlib.sha256((tmp_path / "gmmseg.pth").read_bytes()
                                                  ).hexdigest()
    assert conversion["record"] is None and conversion["data"]["class_names"] is None  # 5 classes
    assert conversion["data"]["sliding_window"] == {"crop": 512, "stride": 341,
                                                    "scale": [2048, 512]}
    assert cli.main(["convert", "gmmseg", str(tmp_path / "gmmseg.pth"),
                     "--image-size", "64"]) == 1  # no default folder for another shape
    assert "not shaped as the authors' released model" in capsys.readouterr().err

    # The released shape is MiT-B5, a 768-wide decoder and (171, 5, 64); the tiny one stands in
    # for it below (building B5 would take most of a minute), converted into the default folder.
    import types

    def shaped(dims, depths, width, head):
        encoder = types.SimpleNamespace(hidden_dims=dims, layerwise_depths=depths)
        return types.SimpleNamespace(
            backbone=types.SimpleNamespace(image_encoder=encoder, projection_filters=width),
            gmm_head=types.SimpleNamespace(num_classes=head[0], num_components=head[1],
                                           embedding_dim=head[2]))

    b5 = ([64, 128, 320, 512], [3, 6, 40, 3])
    assert convert.is_gmmseg_release(shaped(*b5, 768, (171, 5, 64)))
    assert not convert.is_gmmseg_release(shaped(*b5, 768, (150, 5, 64)))
    assert not convert.is_gmmseg_release(shaped(*b5, 256, (171, 5, 64)))
    assert not convert.is_gmmseg_release(shaped([32, 64, 160, 256], [2, 2, 2, 2], 768,
                                                (171, 5, 64)))
    reference = f"converted:{convert.GMMSEG_PRESET}"
    with pytest.raises(FileNotFoundError, match="keras-gss convert gmmseg"):
        keras_gss.from_preset(reference)
    assert cli.main(["list"]) == 0
    assert "the authors' trained model: keras-gss convert gmmseg" in capsys.readouterr().out
    monkeypatch.setattr(convert, "is_gmmseg_release", lambda model: True)
    assert cli.main(["convert", "gmmseg", str(tmp_path / "gmmseg.pth"), "--image-size", "64"]) == 0
    assert f"from_preset({reference!r})" in capsys.readouterr().out
    folder = tmp_path / "home" / "converted" / convert.GMMSEG_PRESET
    assert json.loads((folder / "conversion.json").read_text())["record"] == convert.GMMSEG_PRESET
    assert cli.main(["list"]) == 0
    assert f"converted weights here: {reference} ({folder})" in capsys.readouterr().out

    # keras-gss evaluate on COCO-Stuff-10k's layout: the recorded 2048×512 keep-ratio rescale,
    # then windows of the model's input (2/3 of it apart), scored at each image's own size.
    names, labels = _coco_stuff10k_fixture(tmp_path / "coco", classes)
    assert cli.main(["evaluate", reference, "--dataset", "coco_stuff10k", "--data",
                     str(tmp_path / "coco"), "--split", "test", "--out", str(tmp_path / "eval"),
                     "--name", "authors", "--quiet"]) == 0
    assert "| authors | – |" in capsys.readouterr().out  # closed set only
    results = json.loads((tmp_path / "eval" / "authors.json").read_text())
    confusion = np.zeros((classes, classes))
    for name, label in zip(names, labels):
        image = np.asarray(Image.open(tmp_path / "coco" / "images" / f"{name}.jpg"))
        out = predict_sliding_window(restored, normalize_images(image[None]), crop=64,
                                     stride=42, scale=(2048, 512))
        valid = label != 255
        np.add.at(confusion, (label[valid], out["logits"][0].argmax(-1)[valid]), 1)
        if name == names[0]:  # keras-gss predict: the same windows, at the image's own size
            image_path = tmp_path / "coco" / "images" / f"{name}.jpg"
            assert cli.main(["predict", reference, str(image_path), "--out",
                             str(tmp_path / "pred")]) == 0
            ids = np.asarray(Image.open(tmp_path / "pred" / f"{name}_class_ids.png"))
            assert ids.shape == label.shape
            assert (ids == out["logits"][0].argmax(-1)).mean() > 0.999
    iou = np.diag(confusion) / (confusion.sum(0) + confusion.sum(1) - np.diag(confusion))
    assert results["closed_set"]["miou"] == pytest.approx(np.nanmean(iou), abs=1e-6)



@pytest.mark.slow  # full size: MiT-B5, a 768-wide decoder, 171 × 5 × 64 (about a minute)
def test_gmmseg_release_shape_converts_by_default_and_matches(tmp_path, monkeypatch, capsys):
    """A random checkpoint shaped as the released one, in the authors' layout, through
    `keras-gss convert gmmseg` into the default folder, then 512×512 parity."""
    import json

    import keras_gss
    from keras_gss import cli

    torch = _require("torch")
    _require("transformers")
    sizes = dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 6, 40, 3])
    encoder = _mit_reference(torch, sizes)
    head = _gmmseg_head_reference(torch, sizes["hidden_sizes"], 768, 171, 5, 64)
    encoder.save_pretrained(tmp_path / "hub")
    legacy = dict(zip(*_load_keys(tmp_path / "hub")))
    state = {f"backbone.{k}": torch.from_numpy(v)
             for k, v in _authors_state(legacy, "mmseg").items()}
    state.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    torch.save({"meta": {}, "state_dict": state}, tmp_path / "release.pth")
    monkeypatch.setenv("KERAS_GSS_HOME", str(tmp_path / "home"))
    assert cli.main(["convert", "gmmseg", str(tmp_path / "release.pth")]) == 0
    assert "(84,763,418 parameters)" in capsys.readouterr().out
    folder = tmp_path / "home" / "converted" / convert.GMMSEG_PRESET
    conversion = json.loads((folder / "conversion.json").read_text())
    assert conversion["record"] == convert.GMMSEG_PRESET
    assert len(conversion["data"]["class_names"]) == 171
    model = keras_gss.from_preset(f"converted:{convert.GMMSEG_PRESET}")
    images = np.random.default_rng(2).normal(size=(1, 512, 512, 3)).astype("float32")
    with torch.no_grad():
        states = encoder(torch.from_numpy(images).permute(0, 3, 1, 2),
                         output_hidden_states=True).hidden_states
        logits, score = head(list(states))
        logits = torch.nn.functional.interpolate(logits.permute(0, 3, 1, 2), size=(512, 512),
                                                 mode="bilinear", align_corners=False)
        score = torch.nn.functional.interpolate(score[:, None], size=(512, 512),
                                                mode="bilinear", align_corners=False)
    outputs = model.predict_outputs(images, verbose=0)
    np.testing.assert_allclose(outputs["logits"], logits.permute(0, 2, 3, 1).numpy(), atol=1e-4)
    np.testing.assert_allclose(outputs["anomaly_score"], score[:, 0].numpy(), atol=1e-3)

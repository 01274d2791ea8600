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
    buffer = io.BytesIO()
    torch.save(torch.randn(2, dtype=torch.bfloat16), buffer)
    (tmp_path / "bf16.pt").write_bytes(buffer.getvalue())
    value = convert.read_torch_checkpoint(str(tmp_path / "bf16.pt"))
    assert value.dtype.name == "bfloat16" and value.shape == (2,)

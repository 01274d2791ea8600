import keras
import numpy as np
import pytest

from keras_gss.layers import SwinBlocks
from keras_gss.layers.swin_blocks import SwinBlock


def numpy_block(block, x):
    """One unshifted block whose window covers the map: plain multi-head attention + MLP."""
    def layer_norm(v, layer):
        mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + 1e-5) * layer.gamma.numpy() + layer.beta.numpy()

    def dense(v, layer):
        return v @ layer.kernel.numpy() + layer.bias.numpy()

    batch, height, width, channels = x.shape
    heads = block.num_heads
    tokens = layer_norm(x, block.norm1).reshape(batch, height * width, channels)
    qkv = dense(tokens, block.qkv).reshape(batch, -1, 3, heads, channels // heads)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(channels // heads)
    # Relative position bias by explicit offsets (dy, dx) of every query-key pair.
    ys, xs = np.divmod(np.arange(height * width), width)
    offsets = ((ys[:, None] - ys[None] + height - 1) * (2 * width - 1)
               + xs[:, None] - xs[None] + width - 1)
    scores = scores + block.relative_position_bias.numpy()[offsets].transpose(2, 0, 1)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    attended = (weights @ v).transpose(0, 2, 1, 3).reshape(batch, -1, channels)
    out = x + dense(attended, block.proj).reshape(x.shape)
    hidden = keras.ops.convert_to_numpy(keras.activations.gelu(
        dense(layer_norm(out, block.norm2), block.fc1).astype("float32")))
    return out + dense(hidden, block.fc2)


def test_one_window_equals_numpy_attention():
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 8)).astype("float32")
    block = SwinBlock(num_heads=2, window_size=4)
    block(x)
    block.relative_position_bias.assign(
        np.random.default_rng(1).normal(size=block.relative_position_bias.shape))
    np.testing.assert_allclose(np.asarray(block(x)), numpy_block(block, x), atol=1e-4)


@pytest.mark.parametrize("shift", [0, 2])
def test_attention_stays_inside_windows_and_shifted_regions(shift):
    size, window = 8, 4
    block = SwinBlock(num_heads=1, window_size=window, shift=shift)
    x = np.random.default_rng(0).normal(size=(1, size, size, 4)).astype("float32")
    base = np.asarray(block(x))
    changed = x.copy()
    changed[0, 0, 0, 0] += 1.0  # one channel of the top-left token (LayerNorm undoes a shift)
    moved = np.any(np.abs(np.asarray(block(changed)) - base) > 1e-6, axis=-1)[0]
    if shift == 0:  # only its own 4×4 window sees it
        expected = np.zeros((size, size), bool)
        expected[:window, :window] = True
    else:  # rolled by 2, the corner shares a window with [6:8, 6:8], [0:2, 6:8], ... but the
        # mask keeps its attention within its own region: rows/columns 0..5 of the top-left
        expected = np.zeros((size, size), bool)
        expected[:2, :2] = True
    np.testing.assert_array_equal(moved, expected)


def test_padding_shapes_and_round_trip():
    blocks = SwinBlocks(num_heads=2, depth=2, window_size=4)
    x = np.random.default_rng(0).normal(size=(1, 10, 6, 8)).astype("float32")
    y = np.asarray(blocks(x))
    assert y.shape == x.shape and np.all(np.isfinite(y))
    restored = SwinBlocks.from_config(blocks.get_config())
    restored(x)
    restored.set_weights(blocks.get_weights())
    np.testing.assert_allclose(np.asarray(restored(x)), y, atol=1e-6)
    with pytest.raises(ValueError, match="`num_heads` \\(3\\) must divide"):
        SwinBlocks(num_heads=3)(x)

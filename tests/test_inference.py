"""`predict_sliding_window`: large and non-square images through a fixed-size model."""

import keras
import numpy as np
import pytest

import keras_gss
from keras_gss.inference import predict_sliding_window
from keras_gss.inference import window_starts


def _pointwise(crop, classes=4):
    """A per-pixel model: any window gives a pixel the same logits, so averages are exact."""
    inputs = keras.Input((crop, crop, 3))
    return keras.Model(inputs, keras.layers.Conv2D(classes, 1, name="classifier")(inputs))


@pytest.mark.parametrize("size, crop, stride", [
    ((100, 37), 32, 20), ((20, 50), 32, 16), ((64, 64), 32, 32), ((1024, 2048), 512, 341)])
def test_windows_cover_every_pixel_and_average_exactly(size, crop, stride):
    height, width = size
    for side in (height, width):
        starts = window_starts(side, crop, stride)
        assert starts[0] == 0 and starts[-1] == max(side - crop, 0)
        assert all(0 < b - a <= stride for a, b in zip(starts, starts[1:]))
    model = _pointwise(crop)
    images = np.random.default_rng(0).normal(size=(2, height, width, 3)).astype("float32")
    out = predict_sliding_window(model, images, crop=crop, stride=stride)
    kernel, bias = model.get_layer("classifier").get_weights()
    expected = images @ kernel[0, 0] + bias
    assert out["logits"].shape == (2, height, width, 4) and "anomaly_score" not in out
    np.testing.assert_allclose(out["logits"], expected, atol=1e-5)


def test_gmmseg_on_1024x2048_with_a_512_crop():
    backbone = keras_gss.models.segformer_backbone(
        variant=None, image_shape=(512, 512, 3), hidden_dims=[8, 16], projection_filters=16)
    model = keras_gss.models.GMMSegImageSegmenter(
        backbone, num_classes=3, num_components=2, embedding_dim=8, memory_size=8)
    images = np.random.default_rng(1).normal(size=(1, 1024, 2048, 3)).astype("float32")
    out = predict_sliding_window(model, images, crop=512, stride=341)
    assert out["logits"].shape == (1, 1024, 2048, 3)
    assert out["anomaly_score"].shape == (1, 1024, 2048)
    assert np.isfinite(out["logits"]).all() and np.isfinite(out["anomaly_score"]).all()
    # A pixel seen by one window only keeps that window's outputs; one seen by four, their mean.
    corner = images[:, :512, :512]
    # Batched and single predictions round differently on CPU (~1e-4 here).
    np.testing.assert_allclose(out["logits"][:, :341, :341],
                               model.predict(corner, verbose=0)[:, :341, :341], atol=1e-3)
    tops, lefts = [0, 341], [0, 341]
    windows = np.concatenate([images[:, t:t + 512, l:l + 512] for t in tops for l in lefts])
    y, x = 400, 450  # inside windows (0|341) × (0|341) and no other
    assert sum(t <= y < t + 512 for t in window_starts(1024, 512, 341)) == 2
    assert sum(l <= x < l + 512 for l in window_starts(2048, 512, 341)) == 2
    scores = model.predict_anomaly(windows, verbose=0)
    expected = np.mean([scores[k, y - t, x - l] for k, (t, l) in
                        enumerate((t, l) for t in tops for l in lefts)])
    np.testing.assert_allclose(out["anomaly_score"][0, y, x], expected, rtol=1e-4)


def test_sliding_window_errors_name_the_argument():
    model = _pointwise(32)
    images = np.zeros((1, 40, 40, 3), "float32")
    with pytest.raises(ValueError, match="`stride`=40 must not exceed `crop`=32"):
        predict_sliding_window(model, images, crop=32, stride=40)
    with pytest.raises(ValueError, match="`crop`=64 must equal the model's input size"):
        predict_sliding_window(model, images, crop=64, stride=32)
    with pytest.raises(ValueError, match=r"`images` must have shape \(N, H, W, 3\)"):
        predict_sliding_window(model, images[0], crop=32, stride=16)


def test_evaluate_through_windows_equals_direct_evaluation():
    model = _pointwise(32, classes=3)
    rng = np.random.default_rng(2)
    images = rng.normal(size=(2, 48, 80, 3)).astype("float32")
    labels = rng.integers(0, 3, size=(2, 48, 80))
    anomaly = rng.random((2, 48, 80)) < 0.2
    windowed = keras_gss.evaluate(model, images, labels, anomaly_sets={"set": (
        images, labels, anomaly)}, verbose=0, sliding_window={"crop": 32, "stride": 24})
    full = keras.Model(*(lambda i: (i, model.get_layer("classifier")(i)))(
        keras.Input((48, 80, 3))))
    direct = keras_gss.evaluate(full, images, labels, anomaly_sets={"set": (
        images, labels, anomaly)}, verbose=0)
    assert windowed["closed_set"]["miou"] == pytest.approx(direct["closed_set"]["miou"])
    for score in direct["set"]:
        assert windowed["set"][score]["auroc"] == pytest.approx(direct["set"][score]["auroc"],
                                                                abs=1e-6)


def test_rescale_as_mmseg_then_windows_then_back_to_the_image_size():
    """`scale`: keep-ratio resize, windows, logits resized back; the bilinear steps are PyTorch's
    `F.interpolate(align_corners=False)`, as mmseg's test pipeline and `inference` use."""
    torch = pytest.importorskip("torch")
    from keras_gss.inference import rescaled_size

    assert rescaled_size(427, 640, (2048, 512)) == (512, 767)  # short side bound
    assert rescaled_size(300, 2000, (2048, 512)) == (307, 2048)  # long side bound
    model = _pointwise(32)
    images = np.random.default_rng(3).normal(size=(2, 40, 48, 3)).astype("float32")
    out = predict_sliding_window(model, images, crop=32, stride=21, scale=(64, 32))

    def resize(array, size):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
        return torch.nn.functional.interpolate(tensor, size=size, mode="bilinear",
                                               align_corners=False).permute(0, 2, 3, 1).numpy()

    kernel, bias = model.get_layer("classifier").get_weights()
    twice = resize(resize(images, (32, 38)), (40, 48))  # 0.8: min(64 / 48, 32 / 40)
    assert out["logits"].shape == (2, 40, 48, 4)
    np.testing.assert_allclose(out["logits"], twice @ kernel[0, 0] + bias, atol=1e-4)
    with pytest.raises(ValueError, match="`scale`"):
        predict_sliding_window(model, images, crop=32, stride=21, scale=(64,))

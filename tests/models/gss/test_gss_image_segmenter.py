import keras
import numpy as np
import pytest
from keras import ops

from keras_gss.layers import MaskigeCodec
from keras_gss.models import DiscreteVAE
from keras_gss.models import GSSImageSegmenter
from keras_gss.models.gss.gss_image_segmenter import upsample_labels
from tests.test_case import CLASSES
from tests.test_case import SIZE
from tests.test_case import make_scenes
from tests.test_case import run_segmenter_test
from tests.test_case import tiny_segmenter


def _tokenizer(group_count=3):
    return DiscreteVAE(vocab_size=32, hidden_dim=8, blocks_per_group=1, group_count=group_count,
                       init_dim=8)


def _tiny(**kwargs):
    return dict(tokenizer=_tokenizer(), mla_depth=1, mla_heads=2, token_hidden_dim=16, **kwargs)


def _token_confidence(model, images):
    """`1 − max_z p(z|x)` from the training graph's token logits, bilinear to pixels."""
    logits = np.asarray(model._graphs.train(images, training=False)["dense_token_logits"])
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    score = 1.0 - probs.max(-1)
    return np.asarray(ops.image.resize(score[..., None], (SIZE, SIZE),
                                       interpolation="bilinear"))[..., 0]


def test_gss_passes_the_shared_checks(tmp_path):
    model = run_segmenter_test(GSSImageSegmenter, _tiny(), _token_confidence, tmp_path)
    # The frozen tokenizer is part of the saved model and never trains.
    assert not model.tokenizer.trainable and not model.tokenizer.trainable_weights


def test_inference_decodes_argmax_tokens_through_the_frozen_tokenizer():
    model = tiny_segmenter(GSSImageSegmenter, **_tiny())
    images, _ = make_scenes(2)
    dense = model._graphs.train(images, training=False)
    tokens = np.asarray(dense["dense_token_logits"]).argmax(-1).astype("int32")
    maskige = np.asarray(model.tokenizer.decode(tokens))
    np.testing.assert_allclose(model.predict_maskige(images, verbose=0), maskige, atol=1e-5)
    expected = np.asarray(model.codec.decode(maskige))
    np.testing.assert_array_equal(model.predict(images, verbose=0).argmax(-1), expected)


def test_token_targets_pseudo_labels_and_ignored_patches():
    """Eq. 7 as the authors' code reads it (spec §8.2), against a numpy transcription."""
    model = tiny_segmenter(GSSImageSegmenter, **_tiny())
    images, labels = make_scenes(2)
    labels = labels.astype("int32")
    labels[0, :8, :8] = 255  # two whole 4×4 patches... and more: an 8×8 corner
    labels[1, 0, 0] = 255  # one pixel: its patch stays labelled
    outputs = model._graphs.train(images, training=True)
    pixel_logits = np.asarray(outputs["logits"])
    token_logits = np.asarray(outputs["dense_token_logits"])
    loss = float(model.head_loss(ops.convert_to_tensor(labels), outputs, None))

    composed = np.where(labels < CLASSES, labels, pixel_logits.argmax(-1))
    targets = np.asarray(model.tokenizer.encode(model.codec.encode(composed)))
    known = (labels < CLASSES).reshape(2, SIZE // 4, 4, SIZE // 4, 4).any(axis=(2, 4))
    assert not known[0, :2, :2].any() and known[1, 0, 0]
    log_probs = token_logits - token_logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    expected = 0.8 * -(picked * known).sum() / known.sum()
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_the_loss_is_the_weighted_sum_and_only_the_prior_learns():
    model = tiny_segmenter(GSSImageSegmenter, **_tiny(token_loss_weight=0.5,
                                                      pixel_loss_weight=0.25))
    images, labels = make_scenes(2)
    outputs = model._graphs.train(images, training=True)
    total = float(model.compute_loss(images, labels, outputs))
    token = float(model.head_loss(ops.convert_to_tensor(labels.astype("int32")), outputs, None))
    pixel_logits = np.asarray(outputs["logits"])
    log_probs = pixel_logits - pixel_logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    valid = labels < CLASSES
    picked = np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None].astype(int), -1)
    pixel = -(picked[..., 0] * valid).sum() / valid.sum()
    np.testing.assert_allclose(total, token + 0.25 * pixel, rtol=1e-5)
    # Only the prior learns: the tokenizer has nothing to train (the shared checks fit it).
    assert not model.tokenizer.trainable_weights
    frozen = {id(w) for w in model.tokenizer.weights}
    assert frozen and not frozen & {id(w) for w in model.trainable_weights}


def test_fit_trains_the_prior_and_leaves_the_tokenizer_as_it_was():
    model = tiny_segmenter(GSSImageSegmenter, **_tiny())
    images, labels = make_scenes(4)
    tokenizer = [w.numpy().copy() for w in model.tokenizer.weights]
    prior = [w.numpy().copy() for w in model.token_classifier.weights]
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    losses = model.fit(images, labels, batch_size=4, epochs=3, verbose=0).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    for before, after in zip(tokenizer, model.tokenizer.weights):
        np.testing.assert_array_equal(before, after.numpy())
    assert all(np.abs(b - w.numpy()).max() > 0
               for b, w in zip(prior, model.token_classifier.weights))


# The Swin decoder's layer has its own tests (tests/layers); its stage here is the conv one's.
@pytest.mark.parametrize("decoder", ["conv", pytest.param("swin", marks=pytest.mark.slow)])
def test_learned_decoder_trains_on_predicted_maskiges_only(decoder):
    config = {"embedding_dim": 8, "num_heads": 2, "depth": 1} if decoder == "swin" else None
    model = tiny_segmenter(GSSImageSegmenter, **_tiny(maskige_decoder=decoder,
                                                      decoder_config=config))
    images, labels = make_scenes(4)
    others = [w.numpy().copy() for w in model.weights if "learned_decoder" not in w.path]
    # It learns in its own stage only: the prior's `fit` leaves it alone.
    assert not model.learned_decoder.trainable
    learned = [w for w in model.learned_decoder.weights if "moving" not in w.path]
    decoder_before = [w.numpy().copy() for w in learned]
    history = model.fit_maskige_decoder(images, labels, epochs=2, batch_size=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert len(learned) >= 4 and all(np.abs(b - w.numpy()).max() > 0
                                     for b, w in zip(decoder_before, learned))
    for before, after in zip(others, [w for w in model.weights
                                      if "learned_decoder" not in w.path]):
        np.testing.assert_array_equal(before, after.numpy())
    # The stage leaves every flag as it was.
    assert model.backbone.trainable and not model.tokenizer.trainable
    assert not model.learned_decoder.trainable
    logits = model.predict(images, verbose=0)
    maskige = model.predict_maskige(images, verbose=0)
    np.testing.assert_allclose(logits, np.asarray(model.learned_decoder(maskige)), atol=1e-5)


def test_with_maskige_decoder_keeps_the_prior_and_the_tokenizer(tmp_path):
    model = tiny_segmenter(GSSImageSegmenter, **_tiny())
    images, _ = make_scenes(2)
    ftw = model.with_maskige_decoder("conv", {"hidden_dim": 8})
    assert ftw.maskige_decoder == "conv" and ftw.learned_decoder.hidden_dim == 8
    np.testing.assert_array_equal(ftw.predict_maskige(images, verbose=0),
                                  model.predict_maskige(images, verbose=0))
    with pytest.raises(ValueError, match="already has a learned maskige decoder"):
        ftw.with_maskige_decoder("swin")
    # A tokenizer passed as a saved directory is loaded with its weights, frozen.
    model.tokenizer.save_to_preset(str(tmp_path / "tokenizer"))
    again = tiny_segmenter(GSSImageSegmenter,
                           **{**_tiny(), "tokenizer": str(tmp_path / "tokenizer")})
    assert not again.tokenizer.trainable
    for mine, theirs in zip(again.tokenizer.weights, model.tokenizer.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())


def test_an_8x_tokenizer_reads_a_2x_maskige():
    model = tiny_segmenter(GSSImageSegmenter, **{**_tiny(), "tokenizer": _tokenizer(4)})
    images, labels = make_scenes(2)
    assert model.maskige_scale == 2
    assert model.predict_maskige(images, verbose=0).shape == (2, 2 * SIZE, 2 * SIZE, 3)
    outputs = model._graphs.train(images, training=True)
    loss = model.head_loss(ops.convert_to_tensor(labels.astype("int32")), outputs, None)
    assert np.isfinite(float(loss)) and float(loss) > 0
    up = np.asarray(upsample_labels(np.array([[[0, 1], [255, 2]]]), 2, 3))
    np.testing.assert_array_equal(up, np.repeat(np.repeat([[[0, 1], [3, 2]]], 2, 1), 2, 2))


def test_bad_arguments_name_the_fix():
    with pytest.raises(ValueError, match="`tokenizer` must be a keras_gss DiscreteVAE"):
        tiny_segmenter(GSSImageSegmenter, tokenizer=keras.layers.Dense(2))
    with pytest.raises(ValueError, match="must down-sample 4× or 8×"):
        tiny_segmenter(GSSImageSegmenter, tokenizer=_tokenizer(2))
    with pytest.raises(ValueError, match="`maskige_decoder` must be one of"):
        tiny_segmenter(GSSImageSegmenter, **_tiny(maskige_decoder="linear"))
    model = tiny_segmenter(GSSImageSegmenter, **_tiny())
    with pytest.raises(ValueError, match="nothing to train"):
        model.fit_maskige_decoder(*make_scenes(2))
    assert isinstance(model.codec, MaskigeCodec)

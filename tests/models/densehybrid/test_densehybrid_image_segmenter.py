"""DenseHybrid and GMMSeg + dataset posterior: score, loss, routing, the shared checks."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import log_softmax
from scipy.special import logsumexp

from keras_gss.models import DenseHybridImageSegmenter
from keras_gss.models import GMMSegImageSegmenter
from keras_gss.models import NormalizingFlow
from keras_gss.models import SoftmaxImageSegmenter
from keras_gss.models.densehybrid.densehybrid_image_segmenter import jensen_shannon_to_uniform
from tests.models.gmmseg.test_gmmseg_image_segmenter import _gmm_reference_score
from tests.test_case import CLASSES
from tests.test_case import SIZE
from tests.test_case import make_scenes
from tests.test_case import run_segmenter_test
from tests.test_case import tiny_backbone
from tests.test_case import tiny_segmenter

GMM = dict(num_components=2, embedding_dim=8, memory_size=64)


def _dataset_logit(model, images):
    features = model.dense_features(images, training=False)
    g = model.dataset_posterior_head(features, training=False)
    return ops.convert_to_numpy(ops.image.resize(g, (SIZE, SIZE), interpolation="bilinear"))[
        ..., 0].astype(np.float64)


def _hybrid_reference(model, images):
    """Eq. 9 from the logits and the head, in float64: ln(1 − σ(g)) − LSE(s)."""
    logits = model.predict(images, verbose=0).astype(np.float64)
    return -np.logaddexp(0.0, _dataset_logit(model, images)) - logsumexp(logits, axis=-1)


def test_densehybrid_passes_the_shared_checks(tmp_path):
    run_segmenter_test(DenseHybridImageSegmenter, {}, _hybrid_reference, tmp_path)


@pytest.mark.slow  # the same head and score as DenseHybrid's checks; the quick start trains it
def test_gmmseg_with_a_dataset_posterior_passes_the_shared_checks(tmp_path):
    run_segmenter_test(
        GMMSegImageSegmenter, dict(GMM, dataset_posterior=True),
        lambda model, images: (-np.logaddexp(0.0, _dataset_logit(model, images))
                               + _gmm_reference_score(model, images)),
        tmp_path)


@pytest.mark.slow  # trains two families; the quick start fine-tunes from a closed-set model
def test_the_head_leaves_closed_set_logits_bit_identical():
    images, labels = make_scenes(4)
    for closed in (tiny_segmenter(SoftmaxImageSegmenter), tiny_segmenter(GMMSegImageSegmenter,
                                                                          **GMM)):
        closed.fit(images, labels, batch_size=4, epochs=1, verbose=0)
        opened = (DenseHybridImageSegmenter.from_closed_set(closed)
                  if isinstance(closed, SoftmaxImageSegmenter)
                  else closed.with_dataset_posterior())
        before = closed.predict_outputs(images, verbose=0)
        after = opened.predict_outputs(images, verbose=0)
        assert np.array_equal(before["logits"], after["logits"])
        # The generative part is the closed-set model's own likelihood score.
        generative = (-logsumexp(before["logits"].astype(np.float64), axis=-1)
                      if isinstance(closed, SoftmaxImageSegmenter) else before["anomaly_score"])
        np.testing.assert_allclose(after["generative_score"], generative, rtol=1e-5, atol=1e-5)
        channels = opened.dataset_posterior_head.conv.kernel.shape[2]
        assert opened.dataset_posterior_head.count_params() == 4 * channels + channels + 1
        assert len(opened.weights) == len(closed.weights) + 6


def _loss_parts(model, images, labels, betas):
    """Eq. 41 in float64 numpy from the training graph's outputs."""
    outputs = model._graphs.train(images, training=False)
    logits = ops.convert_to_numpy(outputs["logits"]).astype(np.float64)
    g = ops.convert_to_numpy(ops.image.resize(outputs["dense_dataset_logit"], (SIZE, SIZE),
                                              interpolation="bilinear"))[..., 0]
    negative = labels == 254
    labelled = (labels < CLASSES)
    log_p = log_softmax(logits, axis=-1)
    ce = -np.take_along_axis(log_p, np.where(labelled, labels, 0)[..., None], -1)[..., 0]
    expected = betas[0] * ce[labelled].mean() + betas[1] * np.logaddexp(0, -g[~negative]).mean()
    if negative.any():
        expected += (betas[2] * np.logaddexp(0, g[negative])
                     + betas[3] * logsumexp(logits, axis=-1)[negative]).mean()
    return outputs, expected


@pytest.mark.parametrize("negatives", [False, True])
def test_loss_is_eq_41(negatives):
    images, labels = make_scenes(2, seed=3)
    labels = labels.astype("int32")
    labels[0, :4] = 255
    if negatives:
        labels[:, 8:20, 8:20] = 254
    model = tiny_segmenter(DenseHybridImageSegmenter, betas=(1.0, 1.5, 1.5, 0.15))
    outputs, expected = _loss_parts(model, images, labels, (1.0, 1.5, 1.5, 0.15))
    loss = float(ops.convert_to_numpy(model.compute_loss(images, labels, outputs)))
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_without_negatives_and_beta2_zero_the_loss_is_the_closed_set_loss():
    images, labels = make_scenes(2, seed=4)
    closed = tiny_segmenter(SoftmaxImageSegmenter)
    hybrid = DenseHybridImageSegmenter.from_closed_set(closed, betas=(1.0, 0.0, 0.3, 0.03))
    closed_loss = closed.compute_loss(images, labels, closed._graphs.train(images, training=False))
    hybrid_loss = hybrid.compute_loss(images, labels, hybrid._graphs.train(images, training=False))
    assert float(ops.convert_to_numpy(hybrid_loss)) == float(ops.convert_to_numpy(closed_loss))


def test_jensen_shannon_to_uniform_matches_its_definition(rng):
    logits = rng.normal(size=(5, 4)).astype("float32") * 3
    p = np.exp(log_softmax(logits.astype(np.float64), axis=-1))
    u = np.full_like(p, 0.25)
    m = 0.5 * (p + u)
    expected = 0.5 * (p * np.log(p / m)).sum(-1) + 0.5 * (u * np.log(u / m)).sum(-1)
    np.testing.assert_allclose(ops.convert_to_numpy(jensen_shannon_to_uniform(logits)),
                               expected, rtol=1e-5, atol=1e-7)
    uniform = ops.convert_to_numpy(jensen_shannon_to_uniform(np.zeros((1, 4), "float32")))
    assert abs(float(uniform[0])) < 1e-6


def _synthetic_model(**kwargs):
    flow = NormalizingFlow(levels=2, steps=1, hidden=8)
    return DenseHybridImageSegmenter(tiny_backbone(), num_classes=CLASSES, flow=flow,
                                     patch_size=16, jsd_batch=2, **kwargs)


def _flow_gradients(model, images, loss):
    """Gradient sizes `sum |∂loss/∂v|` of `loss(mixed logits, live logits, pasted)` for the
    flow's trainable variables (0 where no path exists), on TensorFlow or JAX."""
    flow_vars = model.flow.trainable_variables

    def value(paste):
        mixed, live, pasted, _ = paste
        return loss(model._graphs.train(mixed, training=True)["logits"],
                    model._graphs.train(live, training=True)["logits"], pasted)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            paste = model._paste_synthetic(tf.constant(images))
            result = value(paste)
        return [0.0 if g is None else float(tf.reduce_sum(tf.abs(g)))
                for g in tape.gradient(result, flow_vars)], paste
    import jax

    def stateless(values):
        with keras.StatelessScope(state_mapping=list(zip(flow_vars, values))):
            return value(model._paste_synthetic(images))

    values = [v.value for v in flow_vars]
    grads = [float(np.abs(np.asarray(g)).sum()) for g in jax.grad(stateless)(values)]
    with keras.StatelessScope(state_mapping=list(zip(flow_vars, values))):
        paste = model._paste_synthetic(images)
    return grads, paste


def test_flow_gradients_come_only_through_the_pasted_pixels_of_the_jsd_copy():
    images, labels = make_scenes(4)
    model = _synthetic_model()
    model.flow.build()
    segmentation, _ = _flow_gradients(model, images, lambda mixed, live, pasted: ops.mean(mixed))
    assert segmentation == [0.0] * len(segmentation)  # the segmentation loss never reaches it

    def jsd(mixed, live, pasted):
        weight = ops.cast(pasted, "float32")
        return ops.sum(jensen_shannon_to_uniform(live) * weight) / ops.sum(weight)

    grads, (mixed, live, pasted, inliers) = _flow_gradients(model, images, jsd)
    assert sum(g > 0 for g in grads) >= len(grads) // 2  # the couplings' zero-initialised
    # last layers pass no gradient to the layers before them at the start
    # The pasted pixels are exactly where the mixed image differs from the inlier one.
    mixed, live, pasted = (ops.convert_to_numpy(t) for t in (mixed, live, pasted))
    assert np.array_equal(mixed, live) and pasted.any()
    assert np.all(mixed[~pasted] == images[~pasted])
    assert tuple(inliers.shape) == (4, 16, 16, 3)


def test_synthetic_negatives_train_the_flow_jointly_and_round_trip(tmp_path):
    images, labels = make_scenes(8)
    model = _synthetic_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.flow.build()
    before = [ops.convert_to_numpy(v).copy() for v in model.flow.trainable_variables]
    history = model.fit(images, labels, batch_size=4, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    moved = [np.abs(ops.convert_to_numpy(v) - b).max() > 0
             for v, b in zip(model.flow.trainable_variables, before)]
    assert np.mean(moved) > 0.8
    path = str(tmp_path / "synthetic.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.flow, NormalizingFlow)
    for name, value in loaded.predict_outputs(images[:2], verbose=0).items():
        np.testing.assert_allclose(value, model.predict_outputs(images[:2], verbose=0)[name],
                                   atol=1e-6, err_msg=name)


def test_bad_flow_arguments_are_named():
    with pytest.raises(ValueError, match="`flow` must be a keras_gss NormalizingFlow"):
        DenseHybridImageSegmenter(tiny_backbone(), num_classes=3, flow="realnvp")
    with pytest.raises(ValueError, match="`patch_size` \\(18\\) must be divisible by"):
        DenseHybridImageSegmenter(tiny_backbone(), num_classes=3, patch_size=18,
                                  flow=NormalizingFlow(levels=2, steps=1, hidden=8))


def test_labels_may_carry_the_negative_index_only_with_a_dataset_posterior():
    images, labels = make_scenes(2)
    labels = labels.astype("int32")
    labels[:, :4, :4] = 254
    tiny_segmenter(DenseHybridImageSegmenter).fit(images, labels, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="outside \\[0, 3\\)"):
        tiny_segmenter(SoftmaxImageSegmenter).fit(images, labels, epochs=1, verbose=0)

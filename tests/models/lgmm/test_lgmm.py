"""L-GMM: the collaborative latent GMM (gradient routing, counts, memory), its classifier and
segmenter, and the open-set recognition protocol."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import logsumexp

import keras_gss
from keras_gss.models import DigitCNNBackbone
from keras_gss.models import LGMMImageClassifier
from keras_gss.models import LGMMImageSegmenter
from keras_gss.models import SoftmaxImageClassifier
from tests.test_case import SIZE
from tests.test_case import run_fresh

CLASSES = 4
TINY = dict(num_components=2, embedding_dim=8, memory_size=16, samples_per_class=4)


def _digits(n, seed=0):
    """Images whose class is written in their mean brightness: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % CLASSES
    images = rng.random((n, 28, 28, 1)).astype("float32") * 0.2 + labels[:, None, None, None] / 4
    return images.astype("float32"), labels.astype("int32")


def _classifier(**kwargs):
    keras.utils.set_random_seed(0)
    model = LGMMImageClassifier(DigitCNNBackbone(filters=(4, 8)), num_classes=CLASSES,
                                **{**TINY, **kwargs})
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    return model


def _log_mixture(model, embeddings):
    """`log Σ_k π_yk N(z; μ_yk, σ_yk)` `(..., C)` in float64 from the head's state."""
    head = model.gmm_head
    means = ops.convert_to_numpy(head.means).astype(np.float64)
    scales = np.sqrt(ops.convert_to_numpy(head.scales).astype(np.float64) ** 2
                     + head.variance_floor)
    counts = ops.convert_to_numpy(head.component_counts).astype(np.float64) + 1
    z = np.asarray(embeddings, np.float64)[..., None, None, :]
    log_n = (-0.5 * np.sum(((z - means) / scales) ** 2, -1) - np.sum(np.log(scales), -1)
             - 0.5 * means.shape[-1] * np.log(2 * np.pi))
    return logsumexp(log_n + np.log(counts / counts.sum(-1, keepdims=True)), -1)


def _gradients(model, images, labels):
    """`sum |∂L/∂v|` per trainable variable for `L_D` (cross-entropy) and `L_G`, TF or JAX."""
    variables = model.trainable_variables
    labels = ops.convert_to_tensor(labels)

    def losses():
        outputs = model(images, training=True)
        discriminative = keras_gss.losses.sparse_categorical_crossentropy(
            labels, outputs["logits"], -1)
        return discriminative, model.generative_loss(outputs["head_embeddings"], labels, None)

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape(persistent=True) as tape:
            discriminative, generative = losses()
        return [[0.0 if g is None else float(tf.reduce_sum(tf.abs(g)))
                 for g in tape.gradient(loss, variables)]
                for loss in (discriminative, generative)]
    import jax

    state = [v for v in model.variables if not v.trainable]
    fixed = [v.value for v in state]

    def part(index):
        def value(values):
            with keras.StatelessScope(state_mapping=list(zip(variables, values))
                                      + list(zip(state, fixed))):
                return losses()[index]
        return [float(np.abs(np.asarray(g)).sum())
                for g in jax.jit(jax.grad(value))([v.value for v in variables])]  # eager: 100 s

    return part(0), part(1)


def test_gradient_routing_is_the_method():
    model = _classifier()
    images, labels = _digits(16)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)  # a filled memory for L_avg
    discriminative, generative = _gradients(model, images, labels)
    head = model.gmm_head
    mixture = {id(head.means), id(head.scales)}
    is_mixture = [id(v) in mixture for v in model.trainable_variables]
    assert sum(is_mixture) == 2
    for flag, d, g in zip(is_mixture, discriminative, generative):
        if flag:  # θ: only L_G
            assert d == 0.0 and g > 0.0
        else:  # φ (the encoder and the head's projection): only L_D
            assert g == 0.0
    encoder = [d for flag, d in zip(is_mixture, discriminative) if not flag]
    assert np.mean([d > 0 for d in encoder]) > 0.8
    # The priors are counts, never trained.
    trainable = {id(v) for v in model.trainable_variables}
    assert id(head.class_counts) not in trainable and id(head.component_counts) not in trainable


def test_training_counts_priors_fills_memory_and_logits_are_eq_7():
    model = _classifier()
    images, labels = _digits(24)
    history = model.fit(images, labels, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    head, memory = model.gmm_head, model.feature_memory
    # π_y: every label seen, 2 epochs × 6 per class.
    np.testing.assert_array_equal(ops.convert_to_numpy(head.class_counts), [12.0] * CLASSES)
    # 2 per class and step (a batch of 8), 6 steps: 12 of the 16 a class keeps.
    np.testing.assert_array_equal(ops.convert_to_numpy(memory.count)[:, 0], [12] * CLASSES)
    counts = ops.convert_to_numpy(head.component_counts)
    assert counts.shape == (CLASSES, 2) and np.all(counts.sum(-1) == 10)  # before the last write
    # Logits are log π_y + log Σ_k π_yk N(z; μ_yk, σ_yk) (Eq. 7); the score is −max_y log p(z|y).
    outputs = model.predict_outputs(images, verbose=0)
    embeddings = model.gmm_head.embed(model.pooling(model.backbone(images, training=False)))
    mixture = _log_mixture(model, ops.convert_to_numpy(embeddings))
    prior = np.log((np.array([12.0] * CLASSES) + 1) / (12 * CLASSES + CLASSES))
    np.testing.assert_allclose(outputs["logits"], mixture + prior, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(outputs["anomaly_score"], -mixture.max(-1), rtol=1e-4, atol=1e-3)


def test_classifier_save_load_and_preset_in_a_fresh_process(tmp_path):
    model = _classifier()
    images, labels = _digits(16)
    model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    expected = model.predict_outputs(images[:4], verbose=0)
    path = str(tmp_path / "lgmm.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is LGMMImageClassifier
    for name, value in loaded.predict_outputs(images[:4], verbose=0).items():
        np.testing.assert_allclose(value, expected[name], atol=1e-6, err_msg=name)
    # The class and component counts travel with the model: they are part of the density.
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded.gmm_head.component_counts),
                                  ops.convert_to_numpy(model.gmm_head.component_counts))
    preset = str(tmp_path / "preset")
    model.save_to_preset(preset)
    np.savez(tmp_path / "expected.npz", images=images[:4], **expected)
    out = run_fresh(FRESH, preset, str(tmp_path / "expected.npz"))
    assert "PRESET_OK LGMMImageClassifier False" in out  # the memory is training state


FRESH = """
import sys
import numpy as np, keras_gss
expected = np.load(sys.argv[2])
model = keras_gss.from_preset(sys.argv[1])
outputs = model.predict_outputs(expected["images"], verbose=0)
for name in ("logits", "anomaly_score"):
    np.testing.assert_allclose(outputs[name], expected[name], atol=1e-6, err_msg=name)
print("PRESET_OK", type(model).__name__, model.feature_memory.allocated)
"""


def _segmenter_reference_score(model, images):
    dense = model.gmm_head(model.dense_features(images, training=False), training=False)
    score = -_log_mixture(model, ops.convert_to_numpy(dense["embeddings"])).max(-1)
    return ops.convert_to_numpy(ops.image.resize(score[..., None].astype("float32"),
                                                 (SIZE, SIZE), interpolation="bilinear"))[..., 0]


def test_lgmm_segmenter_passes_the_shared_checks(tmp_path):
    from tests.test_case import run_segmenter_test

    model = run_segmenter_test(LGMMImageSegmenter, dict(TINY, memory_size=64),
                               _segmenter_reference_score, tmp_path)
    # Labels resampled to the stride-4 grid wrote every class seen to the memory.
    assert ops.convert_to_numpy(model.feature_memory.count).sum() > 0
    assert ops.convert_to_numpy(model.gmm_head.class_counts).sum() > 0


def test_evaluate_osr_matches_scikit_learn():
    from sklearn.metrics import average_precision_score
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve

    keras.utils.set_random_seed(0)
    model = SoftmaxImageClassifier(DigitCNNBackbone(filters=(4, 8)), num_classes=CLASSES)
    known, labels = _digits(40)
    unknown = np.random.default_rng(1).random((30, 28, 28, 1)).astype("float32")
    results = keras_gss.evaluate_osr(model, known, labels, unknown)
    outputs = model.predict_outputs(np.concatenate([known, unknown]), verbose=0)
    is_known = np.r_[np.ones(40, bool), np.zeros(30, bool)]
    assert results["accuracy"] == np.mean(outputs["logits"][:40].argmax(-1) == labels)
    for name, score in (("model", outputs["anomaly_score"]),
                        ("max_logit", -outputs["logits"].max(-1))):
        confidence = -np.asarray(score, np.float64)
        m = results[name]
        np.testing.assert_allclose(m["auroc"], roc_auc_score(is_known, confidence))
        np.testing.assert_allclose(m["aupr_in"], average_precision_score(is_known, confidence))
        np.testing.assert_allclose(m["aupr_out"],
                                   average_precision_score(~is_known, -confidence))
        fpr, tpr, _ = roc_curve(is_known, confidence, drop_intermediate=False)
        at = np.argmax(tpr >= 0.95)
        np.testing.assert_allclose(m["fpr95"], fpr[at])
        np.testing.assert_allclose(m["detection_error"], 0.5 * (1 - tpr[at]) + 0.5 * fpr[at])
        np.testing.assert_allclose(m["detection_error_min"],
                                   np.min(0.5 * (1 - tpr) + 0.5 * fpr))
    np.testing.assert_allclose(results["model"]["auroc"], results["max_softmax"]["auroc"])
    with pytest.raises(ValueError, match="known_labels"):
        keras_gss.evaluate_osr(model, known, labels[:5], unknown)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="normalization"):
        DigitCNNBackbone(normalization="layer")
    grouped = DigitCNNBackbone(filters=(4, 8), normalization="group")
    assert DigitCNNBackbone.from_config(grouped.get_config()).normalization == "group"
    with pytest.raises(ValueError, match="ground_metric"):
        _classifier(ground_metric="euclid")
    model = _classifier()
    with pytest.raises(ValueError, match=r"`images` must be \(28, 28, 1\)"):
        model.predict_outputs(np.zeros((2, 32, 32, 1), "float32"))
    with pytest.raises(ValueError, match=r"`y` must hold class ids in \[0, 4\)"):
        model.fit(*_digits(8)[:1], np.full(8, 7), verbose=0)
    with pytest.raises(ValueError, match="`threshold` is required"):
        model.predict_open_set(_digits(2)[0])
    with pytest.raises(ValueError, match="image classifier.*evaluate_osr"):
        keras_gss.evaluate(model, *_digits(4))
    decided = model.predict_open_set(_digits(8)[0], threshold=-np.inf, verbose=0)
    np.testing.assert_array_equal(decided, [CLASSES] * 8)  # everything is unknown

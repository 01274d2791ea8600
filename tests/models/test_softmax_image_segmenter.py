import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.special import softmax

from keras_gss.models import SoftmaxImageSegmenter
from tests.test_case import make_scenes
from tests.test_case import run_segmenter_test
from tests.test_case import tiny_segmenter

# Each score written from its paper's formula in numpy, higher = more anomalous.
REFERENCES = {
    "max_softmax": lambda z: 1.0 - softmax(z, axis=-1).max(-1),
    "entropy": lambda z: -(softmax(z, axis=-1) * np.log(softmax(z, axis=-1))).sum(-1),
    "max_logit": lambda z: -z.max(-1),
    "energy": lambda z: -logsumexp(z, axis=-1),
}


def test_softmax_segmenter_passes_the_shared_checks(tmp_path):
    run_segmenter_test(
        SoftmaxImageSegmenter, {},
        lambda model, images: REFERENCES["max_softmax"](
            model.predict(images, verbose=0).astype(np.float64)),
        tmp_path)


@pytest.mark.parametrize("score", sorted(REFERENCES))
def test_every_anomaly_score_matches_its_formula(score):
    images, _ = make_scenes(2)
    model = tiny_segmenter(SoftmaxImageSegmenter, anomaly_score=score)
    outputs = model.predict_outputs(images, verbose=0)
    want = REFERENCES[score](outputs["logits"].astype(np.float64))
    np.testing.assert_allclose(outputs["anomaly_score"], want, rtol=1e-5, atol=1e-5)


def test_learns_colour_scenes_and_scores_known_pixels_low():
    """Trained on 3 colour classes, it labels held-out scenes well and is less sure of noise."""
    import keras

    keras.utils.set_random_seed(0)
    images, labels = make_scenes(32, seed=0)
    test_images, test_labels = make_scenes(16, seed=1)
    model = tiny_segmenter(SoftmaxImageSegmenter, dropout=0.0)
    model.fit(images, labels, batch_size=8, epochs=8, verbose=0)
    accuracy = (model.predict(test_images, verbose=0).argmax(-1) == test_labels).mean()
    assert accuracy > 0.8, accuracy
    noise = np.random.default_rng(2).normal(0, 3, test_images.shape).astype("float32")
    known = model.predict_anomaly(test_images, verbose=0).mean()
    assert model.predict_anomaly(noise, verbose=0).mean() > known


def test_bad_arguments():
    with pytest.raises(ValueError, match="`anomaly_score` must be one of"):
        tiny_segmenter(SoftmaxImageSegmenter, anomaly_score="msp")
    model = tiny_segmenter(SoftmaxImageSegmenter)
    with pytest.raises(ValueError, match="`loss` must be None: SoftmaxImageSegmenter"):
        model.compile(loss="mse")
    with pytest.raises(ValueError, match="no callbacks of its own"):
        model.default_callbacks(update_interval=1)

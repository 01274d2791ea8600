"""Plant each bug a test is meant to catch and check that the test then fails.

    python tests/plant_bugs.py            # every case; exits 1 if a planted bug goes unnoticed

Each case runs one test in a fresh pytest process with this file as a plugin, which patches
the package (`PLANT=<case>`) before the tests import it.
"""

import os
import subprocess
import sys

import numpy as np

CASES = {
    # A Sinkhorn outside the log domain: exp(1/epsilon) overflows for sharp plans.
    "sinkhorn_exp_domain": "tests/ops/test_sinkhorn.py::test_log_domain_for_sharp_plans",
    # A reader that leaves mismatched image/label sizes to tf.data (no error naming the files).
    "reader_no_size_check": "tests/data/test_readers.py::"
                            "test_missing_and_malformed_directories_say_what_was_expected",
    # Evaluation that reports the model's own score with the wrong sign.
    "inverted_model_score": "tests/test_training.py::test_train_recipe_resumes_and_records",
    # A reload that loses the GMM means (the resumed schedule would still look right).
    "reload_loses_means": "tests/models/gmmseg/test_gmmseg_image_segmenter.py::"
                          "test_resumed_training_continues_em_schedule",
    # A keras-cv that no longer imports, where CI requires it.
    "keras_cv_broken": "tests/models/test_backbones.py::test_keras_cv_mit_backbone_built_from_config",
    # A model whose in-graph image check is gone (NaN scores for a whole image, silently).
    "no_image_check": "tests/models/test_open_set_image_segmenter.py::"
                      "test_nan_images_raise_at_predict_naming_images",
    # A hybrid score whose dataset posterior is read the wrong way round (ln P(d_in|x)).
    "hybrid_wrong_posterior": "tests/models/densehybrid/test_densehybrid_image_segmenter.py::"
                              "test_densehybrid_passes_the_shared_checks",
    # Pasting that marks the whole crop as negative, not the pasted pixels only.
    "paste_marks_crop": "tests/data/test_negatives.py::"
                        "test_pasting_keeps_alignment_and_marks_exactly_the_pasted_pixels",
    # A flow whose 1×1 convolution leaves its log-determinant out.
    "flow_drops_logdet": "tests/models/densehybrid/test_normalizing_flow.py::"
                         "test_log_determinant_equals_a_numerical_jacobian",
    # L-GMM's generative loss reaching the encoder (no stop-gradient on z): no routing.
    "lgmm_routing_leak": "tests/models/lgmm/test_lgmm.py::test_gradient_routing_is_the_method",
    # L-GMM's mixture with uniform weights, the counted π_yk ignored.
    "lgmm_unweighted_mixture": "tests/models/lgmm/test_lgmm.py::"
                               "test_training_counts_priors_fills_memory_and_logits_are_eq_7",
    # An M-step that refits every class, not only those labelled in the step (authors' rule).
    "m_step_every_class": "tests/models/gmmseg/test_gmmseg_image_segmenter.py::"
                          "test_m_step_refits_only_the_classes_labelled_in_the_step",
}


def _exp_domain_sinkhorn(scores, epsilon=0.05, iterations=3, segment_ids=None,
                         num_segments=None):
    s = np.asarray(scores, np.float32)
    q = np.exp(s / np.abs(s).max() / epsilon)
    n, m = q.shape
    for _ in range(iterations):
        q = q / q.sum(0, keepdims=True) * (n / m)
        q = q / q.sum(1, keepdims=True)
    return q, q.argmax(1)


def pytest_configure(config):
    case = os.environ.get("PLANT")
    if not case:
        return
    import keras_gss

    if case == "sinkhorn_exp_domain":
        keras_gss.ops.sinkhorn_knopp = _exp_domain_sinkhorn
    elif case == "reader_no_size_check":
        keras_gss.data.readers._check_sizes = lambda images, labels: None
    elif case == "inverted_model_score":
        from keras_gss import evaluation

        original = evaluation.predict_logits_and_scores

        def inverted(*args, **kwargs):
            logits, scores, *parts = original(*args, **kwargs)
            return (logits, None if scores is None else -scores, *parts)

        evaluation.predict_logits_and_scores = inverted
    elif case == "reload_loses_means":
        import keras

        head = keras_gss.layers.GaussianMixtureHead
        original = head.load_own_variables

        def forgetful(self, store):
            original(self, store)
            self.means.assign(keras.random.normal(self.means.shape))

        head.load_own_variables = forgetful
    elif case == "keras_cv_broken":
        sys.modules["keras_cv"] = None  # `import keras_cv` raises ImportError
    elif case == "no_image_check":
        from keras_gss.models import open_set_image_segmenter as base

        original = base.OpenSetImageSegmenter.predict_outputs

        def unchecked(self, images, batch_size=None, verbose="auto"):
            outputs = self._graphs.serving.predict(images, batch_size=batch_size,
                                                   verbose=verbose)
            return outputs

        base.OpenSetImageSegmenter.predict_outputs = unchecked
    elif case == "m_step_every_class":
        from keras_gss.callbacks import sinkhorn_em

        original = sinkhorn_em.momentum_m_step
        sinkhorn_em.momentum_m_step = lambda *args, refit=None: original(*args)
    elif case == "hybrid_wrong_posterior":
        from keras import ops

        from keras_gss.layers import hybrid_anomaly_score

        original = hybrid_anomaly_score.HybridAnomalyScore.call

        def flipped(self, dataset_logit, logits=None, log_likelihood=None):
            return original(self, -ops.cast(dataset_logit, "float32"), logits=logits,
                            log_likelihood=log_likelihood)

        hybrid_anomaly_score.HybridAnomalyScore.call = flipped
    elif case == "paste_marks_crop":
        import tensorflow as tf

        from keras_gss.data import negatives

        original = negatives._negative_stream

        def whole(crops, seed):  # every crop's mask all True, then the rectangle ignored
            stream = original(crops, seed)
            return stream.map(lambda image, mask: (image, tf.ones_like(mask)))

        negatives._negative_stream = whole
        negatives.SHAPES = ("rectangle", "mask", "mix")
        original_paste = negatives.paste_negatives
        negatives.paste_negatives = lambda *a, **k: original_paste(*a, **{**k, "shape": "mask"})
        keras_gss.data.paste_negatives = negatives.paste_negatives
    elif case == "flow_drops_logdet":
        from keras_gss.models.densehybrid import normalizing_flow

        original = normalizing_flow.InvertibleConv1x1.call

        def no_logdet(self, x, reverse=False):
            out = original(self, x, reverse)
            return out if reverse else (out[0], 0.0)

        normalizing_flow.InvertibleConv1x1.call = no_logdet
    elif case == "lgmm_routing_leak":
        from keras_gss.layers import gaussian_mixture_head as head
        from keras_gss.ops.gaussian_mixture import diagonal_gaussian_log_likelihood

        head.GaussianMixtureHead.generative_log_likelihood = (
            lambda self, z: diagonal_gaussian_log_likelihood(z, self.means,
                                                             self.mixture_scales()))
    elif case == "lgmm_unweighted_mixture":
        from keras_gss.layers import gaussian_mixture_head as head

        from keras import ops

        head.GaussianMixtureHead.log_mixture_weights = lambda self: ops.full(
            (self.num_classes, self.num_components), -np.log(self.num_components), "float32")
    else:
        raise ValueError(f"Unknown PLANT={case!r}; cases: {sorted(CASES)}.")


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    missed = []
    for case, node in CASES.items():
        env = dict(os.environ, PLANT=case, KERAS_GSS_REQUIRE_KERAS_CV="1",
                   TF_CPP_MIN_LOG_LEVEL="3")
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p",
                               "tests.plant_bugs", node], cwd=root, env=env,
                              capture_output=True, text=True)
        caught = done.returncode == 1 and " failed" in done.stdout
        print(f"{case:22s} {'caught' if caught else 'MISSED'}: {done.stdout.strip().splitlines()[-1]}")
        if not caught:
            missed.append(case)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

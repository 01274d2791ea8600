"""The base of every keras_gss segmenter: closed-set logits and an anomaly score."""

import contextlib

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_gss.layers.dataset_posterior_head import DatasetPosteriorHead
from keras_gss.layers.hybrid_anomaly_score import HybridAnomalyScore
from keras_gss.layers.input_errors import InputErrors
from keras_gss.losses import DENSEHYBRID_BETAS
from keras_gss.losses import dataset_posterior_loss
from keras_gss.losses import sparse_categorical_crossentropy
from keras_gss.models.backbones import dense_features
from keras_gss.models.open_set import Graphs
from keras_gss.models.open_set import OpenSetTask
from keras_gss.models.open_set import open_set_prediction
from keras_gss.preset_files import write_version
from keras_gss.utils import keras_compat
from keras_gss.utils.checks import check_channels
from keras_gss.utils.checks import check_finite
from keras_gss.utils.checks import check_labels
from keras_gss.utils.checks import check_rank
from keras_gss.utils.distribution import reduce_sum
from keras_gss.utils.distribution import replica_context


class _RaiseInputErrors(keras.callbacks.Callback):
    """Raises, after each training batch, the bad inputs its compiled step counted."""

    def on_train_batch_end(self, batch, logs=None):
        self.model.input_errors.raise_for_errors()


class OpenSetImageSegmenter(OpenSetTask, keras_hub.models.ImageSegmenter):
    """Base of the keras_gss segmenters: logits and an anomaly score per pixel.

    A backbone gives dense stride-4 features (`dense_features`), spatial
    dropout regularises them, a family's head turns them into dense logits
    (and, for generative heads, an anomaly score), and both are upsampled
    bilinearly to the input size. The base owns everything the families
    share: input and label checks (on every backend, in-graph for datasets),
    the training, serving and prediction graphs, `compile`/`fit` defaults,
    SyncBN under several replicas, multi-worker workarounds,
    `predict_anomaly`, the one-pass `predict_outputs` and
    `predict_open_set`, `export` and `save_to_preset`. Training minimises
    the cross-entropy of the logits (ignore index 255) plus the family's
    loss terms.

    A family subclass creates its head layers and sets the attributes its
    hooks read, then calls `super().__init__`, and implements:
    - `head_outputs(features)`: a dict of dense tensors with `"logits"`
      `(B, h, w, C)` and, if the head scores anomalies itself,
      `"anomaly_score"` `(B, h, w)`; a head whose logits carry no gradient
      adds `"training_logits"`, which the cross-entropy trains instead (the
      training graph then leaves `"logits"` out); outputs named in the class
      attribute `inference_outputs` (GSS's decoded maskige) stay out of the
      training graph too and are predicted by `self._graphs.inference`;
    - `score_anomaly(head, logits)` (optional): the anomaly score
      `(B, H, W)` from the head's outputs and the upsampled logits;
    - `head_loss(labels, outputs, replicas)` (optional): loss terms added
      to the cross-entropy; `outputs` holds `"logits"` and every head
      output as `"dense_<name>"`;
    - `loss_labels(labels, outputs)` (optional): the labels every loss
      sees, from the given ones and the training graph's outputs;
    - `default_callbacks(**options)` (optional): callbacks `fit` adds
      unless the user passed one of the same type (`options` come from a
      recipe's `"callbacks"`);
    - `training_state_layers()` (optional): layers that only training
      needs (allocated by `build()` when training starts, left out of
      presets unless asked);
    - `log_likelihood(head, logits)` (optional): the unnormalised
      log-likelihood `ln p̂(x)` `(B, H, W)` a dataset posterior fuses with;
      `LSE(logits)` (DenseHybrid Eq. 6) unless the family has its own.

    With `dataset_posterior=True` any family gets DenseHybrid's
    dataset-posterior head (`DatasetPosteriorHead` on the same pre-logit
    features, beside the class head, which it leaves untouched), its
    anomaly score becomes `HybridAnomalyScore` (`ln P(d_out|x) − ln p̂(x)`,
    with both parts as `"discriminative_score"` and `"generative_score"`
    outputs), and training adds Eq. 41's terms on pixels labelled
    `negative_index` (pasted negatives, see
    `keras_gss.data.paste_negatives`), which the cross-entropy ignores.

    Args:
        backbone: a keras-hub backbone (SegFormer/MiT, DeepLabV3+/ResNet)
            or any Keras model mapping images to dense features.
        num_classes: int. Number of known classes `C`.
        dropout: float. Spatial dropout on the features. Defaults to `0.1`.
        ignore_index: int. Label of void pixels. Defaults to `255`.
        anomaly_threshold: float or None. Score above which
            `predict_open_set` marks a pixel as anomalous; `keras-gss train`
            sets it from the evaluation split. Defaults to `None`.
        dataset_posterior: bool. Add the dataset-posterior head and the
            hybrid score. Defaults to `False`.
        betas: `(β1, β2, β3, β4)` of DenseHybrid Eq. 41 (cross-entropy,
            in-distribution and negative dataset-posterior terms, negative
            log-likelihood); used with `dataset_posterior`. Defaults to
            `(1, 0.3, 0.3, 0.03)`, the authors' LDN setting.
        negative_index: int. Label of pasted negative pixels. Defaults to
            `254`.
        preprocessor: must be `None`: images are fed preprocessed.
    """

    backbone_cls = None
    preprocessor_cls = None
    loss_description = "cross-entropy over the labelled pixels"
    cross_entropy_weight = 1.0  # of the logits' cross-entropy beside the head's own terms
    inference_outputs = ()  # head outputs only inference reads (see the class docstring)
    score_name = "anomaly_score"  # what the anomaly score is, for figures and cards

    def __init__(self, backbone, num_classes, dropout=0.1, ignore_index=255,
                 anomaly_threshold=None, dataset_posterior=False, betas=DENSEHYBRID_BETAS,
                 negative_index=254, preprocessor=None, **kwargs):
        name = type(self).__name__
        if preprocessor is not None:
            raise ValueError(f"`preprocessor` must be None: {name} takes images already "
                             "normalised for its backbone.")
        image_shape = tuple(backbone.input.shape[1:])
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError("`backbone` must take RGB images (height, width, 3); its "
                             f"input shape is {image_shape}.")
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = None
        self.dense_features = dense_features(backbone)
        self.feature_dropout = keras.layers.SpatialDropout2D(dropout, name="feature_dropout")
        self.upsample = keras.layers.Resizing(image_shape[0], image_shape[1],
                                              interpolation="bilinear", dtype="float32",
                                              name="upsample")
        self.input_errors = InputErrors(
            num_classes, ignore_index, negative_index=negative_index if dataset_posterior
            else None, name="input_errors")
        self.dataset_posterior_head = None
        if dataset_posterior:
            self.dataset_posterior_head = DatasetPosteriorHead(name="dataset_posterior_head")
            self.hybrid_score = HybridAnomalyScore(name="hybrid_score")

        # === Functional Model ===
        inputs = keras.Input(shape=image_shape, name="images")
        features = self.feature_dropout(self.dense_features(inputs))
        head = self.head_outputs(features)
        inference_only = {k: head.pop(k) for k in self.inference_outputs}
        # A head whose logits carry no gradient (GSS decodes argmax tokens) trains others.
        training_logits = head.pop("training_logits", None)
        logits = self.upsample(head["logits"])
        if dataset_posterior:  # Eq. 8, on the class head's own input
            head["dataset_logit"] = self.dataset_posterior_head(features)
            parts = self.hybrid_score(self.upsample(head["dataset_logit"])[..., 0],
                                      log_likelihood=self.log_likelihood(head, logits))
            anomaly_score = parts["hybrid"]
            extra = {"discriminative_score": parts["discriminative"],
                     "generative_score": parts["generative"]}
        else:
            anomaly_score, extra = self.score_anomaly(head, logits), {}
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        serving = {"logits": logits, "anomaly_score": anomaly_score, **extra}
        # Per image, so predict can name the bad ones: a cheap in-graph check.
        nonfinite = ops.sum(ops.cast(ops.logical_not(ops.isfinite(inputs)), "int32"),
                            axis=(1, 2, 3))
        if training_logits is not None:
            head = {k: v for k, v in head.items() if k != "logits"}
            logits_trained = self.upsample(training_logits)
        else:
            logits_trained = logits
        self._graphs = Graphs(
            train=keras.Model(inputs, {"logits": logits_trained,
                                       **{f"dense_{k}": v for k, v in head.items()}}),
            serving=keras.Model(inputs, serving),
            checked=keras.Model(inputs, {**serving, "nonfinite": nonfinite}),
            inference=keras.Model(inputs, inference_only) if inference_only else None,
        )

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.ignore_index = ignore_index
        self.anomaly_threshold = anomaly_threshold
        self.dataset_posterior = dataset_posterior
        self.betas = [float(b) for b in betas]
        self.negative_index = negative_index

    # === Family hooks ===

    def head_outputs(self, features):
        raise TypeError(f"{type(self).__name__} has no head: OpenSetImageSegmenter is the base "
                        "of the families; use one (e.g. SoftmaxImageSegmenter), or implement "
                        "head_outputs(features) in a subclass.")

    def score_anomaly(self, head, logits):
        return self.upsample(head["anomaly_score"][..., None])[..., 0]

    def head_loss(self, labels, outputs, replicas):
        return 0.0

    def loss_labels(self, labels, outputs):
        return labels  # the label maps `(B, H, W)` the losses see (DenseHybrid marks pastes)

    def default_callbacks(self, **options):
        if options:
            raise ValueError(f"{type(self).__name__} has no callbacks of its own to take "
                             f"options {sorted(options)}; remove the recipe's `callbacks`.")
        return []

    def training_state_layers(self):
        return []

    def log_likelihood(self, head, logits):
        return ops.logsumexp(ops.cast(logits, "float32"), axis=-1)  # Eq. 6: ln Σ_y exp s_y

    def with_dataset_posterior(self, cls=None, **kwargs):
        """This model with DenseHybrid's dataset-posterior head added, to fine-tune with negatives.

        Same weights (class logits bit-identical), a new `DatasetPosteriorHead`;
        `cls` is the class to build (default: this model's) and `kwargs`
        override the config (e.g. `betas`).
        """
        config = {k: v for k, v in self.get_config().items()
                  if k not in ("name", "trainable", "dtype")}
        model = (cls or type(self)).from_config({**config, "dataset_posterior": True, **kwargs})
        copy_weights(self, model)
        return model

    # === Checks ===

    def _check_images(self, images):
        check_rank("images", images, 4, "(batch, height, width, 3)")
        check_channels("images", images, 3, "Convert grayscale with "
                       "np.repeat(images, 3, axis=-1) and drop alpha channels.")
        expected = tuple(self.input.shape[1:3])
        if tuple(images.shape[1:3]) != expected and None not in images.shape[1:3]:
            raise ValueError(
                f"`images` must be {expected[0]}×{expected[1]} for this model; received "
                f"shape {tuple(images.shape)}. Resize or crop them, or build the model "
                "with that image_shape.")

    # === Training ===

    def compile(self, optimizer="auto", loss=None, *, metrics=None, **kwargs):
        """Configure training; the loss is built in.

        Args:
            optimizer: `"auto"` (AdamW, lr 6e-5, weight decay 0.01, the
                SegFormer setting the papers use) or any Keras optimizer.
            loss: must be `None`: `compute_loss` implements the family's loss.
            metrics: optional metrics on the logits.
        """
        if loss not in (None, "auto"):
            raise ValueError(f"`loss` must be None: {type(self).__name__} trains with its "
                             f"own loss ({self.loss_description}).")
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(learning_rate=6e-5, weight_decay=0.01)
        keras.Model.compile(self, optimizer=optimizer, loss=None,
                            metrics=None if metrics == "auto" else metrics, **kwargs)

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        if hasattr(x, "shape"):  # JAX traces `call` directly, past `__call__`'s check
            self._check_images(x)
            check_finite("images", x, "Clean or drop those images (np.isfinite) first.")
        if y is not None and not hasattr(y, "element_spec"):
            checked = y
            if self.dataset_posterior:  # pasted negatives carry their own label
                checked = np.where(np.asarray(y) == self.negative_index, self.ignore_index, y)
            check_labels("y", checked, self.num_classes, self.ignore_index)
        # keras-hub's fit turns arrays into a tf.data stream in order; Keras ignores
        # `shuffle` for streams (and warns), so shuffle a dataset yourself.
        kwargs.setdefault("shuffle", False)
        callbacks = [_RaiseInputErrors(), *(callbacks or [])]
        callbacks += [c for c in self.default_callbacks()
                      if not any(isinstance(given, type(c)) for given in callbacks)]
        strategy = getattr(self, "distribute_strategy", None)
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            # SyncBN, as the papers train: batch statistics over the global batch.
            for layer in keras_compat.flatten_layers(self):
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def make_train_function(self, force=False):
        # Training state is allocated when training starts, never for inference.
        strategy = getattr(self, "distribute_strategy", None)  # TensorFlow only
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            for layer in self.training_state_layers():
                layer.build()
        return super().make_train_function(force=force)

    def train_step(self, *args, **kwargs):
        return keras_compat.multi_worker_logs(self, super().train_step(*args, **kwargs))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        return keras_compat.symbolic_build_from_local_batch(
            self, iterator, data_batch, super()._maybe_symbolic_build)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = ops.cast(y, "int32")
        if len(labels.shape) == 4:
            labels = labels[..., 0]
        replicas = replica_context()
        # Keras sums replicas' gradients: extra losses are split between them.
        extra = ops.sum(ops.stack(self.losses)) if self.losses else 0.0
        if replicas is not None:
            extra = extra / replicas.num_replicas_in_sync
        training_graph = isinstance(y_pred, dict)
        if training_graph:
            labels = self.loss_labels(labels, y_pred)
        logits = y_pred["logits"] if training_graph else y_pred
        loss = self.cross_entropy_weight * sparse_categorical_crossentropy(
            labels, logits, self.ignore_index, sample_weight, reduce_sum(replicas))
        if training_graph:
            self.input_errors.record(x, labels, replicas)
            if self.dataset_posterior:
                loss = self.betas[0] * loss + self.negative_loss(labels, y_pred, replicas)
            loss = loss + self.head_loss(labels, y_pred, replicas)
        return loss + extra

    @staticmethod
    def labels_at(labels, dense):
        """Labels `(B, H, W)` resampled (nearest) to a dense head output's grid, flattened."""
        height, width = dense.shape[1], dense.shape[2]
        coarse = ops.image.resize(ops.cast(labels[..., None], "float32"), (height, width),
                                  interpolation="nearest")
        return ops.reshape(ops.cast(coarse, "int32"), (-1,))

    def negative_loss(self, labels, outputs, replicas):
        """Eq. 41's dataset-posterior and likelihood terms, at the labels' resolution."""
        head = {k[len("dense_"):]: v for k, v in outputs.items() if k.startswith("dense_")}
        dataset_logit = self.upsample(head["dataset_logit"])[..., 0]
        return dataset_posterior_loss(
            labels == self.negative_index, dataset_logit,
            self.log_likelihood(head, outputs["logits"]), self.betas, reduce_sum(replicas))

    # === Inference ===

    def predict_outputs(self, images, batch_size=None, verbose="auto"):
        """Logits and anomaly score in one pass.

        Args:
            images: array `(B, H, W, 3)` or a `tf.data.Dataset` of images.
            batch_size: int. Defaults to Keras' default (32).
            verbose: Keras progress-bar setting. Defaults to `"auto"`.

        Returns:
            dict: `"logits"` `(B, H, W, C)` and `"anomaly_score"` `(B, H, W)`
            (higher = more anomalous), float32 numpy arrays.

        Raises:
            ValueError: an image holds NaN or Inf.
        """
        if hasattr(images, "shape"):  # JAX traces `call` directly, past `__call__`'s check
            self._check_images(images)
        outputs = self._graphs.checked.predict(images, batch_size=batch_size, verbose=verbose)
        bad = np.flatnonzero(outputs.pop("nonfinite"))
        if bad.size:
            raise ValueError(
                f"`images` {bad[:8].tolist()} (by position) hold NaN or Inf; their logits "
                "and scores would be NaN. Clean or drop them (np.isfinite) first.")
        return outputs

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        if steps is not None or callbacks:  # Keras' own loop, unchecked
            return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                                   callbacks=callbacks)
        return self.predict_outputs(x, batch_size=batch_size, verbose=verbose)["logits"]

    def predict_anomaly(self, images, batch_size=None, verbose="auto"):
        """Anomaly score maps `(B, H, W)`, float32, higher = more anomalous.

        Args:
            images: array `(B, H, W, 3)` or a `tf.data.Dataset` of images.
            batch_size: int. Defaults to Keras' default (32).
            verbose: Keras progress-bar setting. Defaults to `"auto"`.
        """
        return self.predict_outputs(images, batch_size=batch_size,
                                    verbose=verbose)["anomaly_score"]

    def predict_open_set(self, images, threshold=None, batch_size=None, verbose="auto"):
        """Class ids `(B, H, W)`, with the anomaly id `C` where the score passes the threshold.

        Args:
            images: array `(B, H, W, 3)` or a `tf.data.Dataset` of images.
            threshold: float. Defaults to the model's calibrated
                `anomaly_threshold` (set by `keras-gss train`).
            batch_size: int. Defaults to Keras' default (32).
            verbose: Keras progress-bar setting. Defaults to `"auto"`.
        """
        threshold = self.anomaly_threshold if threshold is None else threshold
        if threshold is None:
            raise ValueError(
                "`threshold` is required: this model has no calibrated anomaly_threshold. "
                "Pass one (e.g. keras_gss.evaluation.calibrate_threshold of the scores of "
                "known-class pixels), or train with `keras-gss train`, which sets it.")
        outputs = self.predict_outputs(images, batch_size=batch_size, verbose=verbose)
        return np.asarray(open_set_prediction(outputs["logits"], outputs["anomaly_score"],
                                              float(threshold)))

    def export(self, filepath, format="tf_saved_model", verbose=True, **kwargs):
        """Export a SavedModel whose `serve` signature gives both outputs.

        `serve(images)` returns `{"logits": (B, H, W, C), "anomaly_score":
        (B, H, W)}`. Training state is left out. Other formats go to
        Keras' `export`.

        Example:

        ```python
        model.export("saved_model")
        reloaded = tf.saved_model.load("saved_model")
        outputs = reloaded.serve(images)   # {"logits": ..., "anomaly_score": ...}
        ```
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose, **kwargs)
        import tensorflow as tf  # a SavedModel is TensorFlow's format

        serving = self._graphs.serving
        archive = keras.export.ExportArchive()
        archive.track(serving)
        archive.add_endpoint(
            name="serve", fn=lambda images: serving(images, training=False),
            input_signature=[tf.TensorSpec((None,) + tuple(self.input.shape[1:]), tf.float32)])
        archive.write_out(filepath, verbose=verbose)

    # === Presets ===

    def save_to_preset(self, preset_dir, max_shard_size=10, include_training_state=False):
        """keras-hub's preset files plus the keras_gss version that wrote them.

        Args:
            preset_dir: str. Directory to write.
            max_shard_size: float. Largest weight file in GB (keras-hub's).
            include_training_state: bool. Also save what only training needs
                (GMMSeg's feature memory and its step counter, 0.78 GB for
                Cityscapes and 9.8 GB for ADE20K at the paper's size), to
                continue training exactly where it stopped. Defaults to
                `False`: the preset holds what inference and fine-tuning need.
        """
        self._save_training_state = include_training_state
        try:
            super().save_to_preset(preset_dir, max_shard_size=max_shard_size)
        finally:
            self._save_training_state = False
        write_version(preset_dir)

    def save_task_weights(self, filepath):
        """Save the weights outside the backbone; training state only from
        `save_to_preset(..., include_training_state=True)`."""
        skip = keras_compat.flatten_layers(self.backbone)  # as keras-hub's Task does
        if not getattr(self, "_save_training_state", False):
            skip += self.training_state_layers()
        keras.saving.save_weights(self, filepath, objects_to_skip=skip)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "dropout": self.dropout,
                       "ignore_index": self.ignore_index,
                       "anomaly_threshold": self.anomaly_threshold})
        if self.dataset_posterior:  # older configs stay as they were
            config.update({"dataset_posterior": True, "betas": list(self.betas),
                           "negative_index": self.negative_index})
        return config


def copy_weights(source, target):
    """Copy `source`'s weights into `target`, a model of the same architecture plus new heads.

    Weights are matched in order, skipping `target`'s dataset-posterior
    head, flow, pasting seed and learned maskige decoder where `source` has
    none; a shape mismatch is an error naming the weight. Built training
    state (GMMSeg's memory) comes too.
    """
    skip = set()
    for name in ("dataset_posterior_head", "flow", "paste_seed", "learned_decoder"):
        new = getattr(target, name, None)
        if new is not None and getattr(source, name, None) is None:
            skip |= {id(v) for v in getattr(new, "weights", None) or [new.state]}
    for mine, theirs in zip(target.training_state_layers(), source.training_state_layers()):
        if theirs.weights and not mine.weights:
            mine.build()
    targets = [v for v in target.weights if id(v) not in skip]
    if len(targets) != len(source.weights):
        raise ValueError(f"`target` has {len(targets)} weights to fill and `source` "
                         f"{len(source.weights)}; build both from the same configuration.")
    for variable, counterpart in zip(source.weights, targets):
        if tuple(counterpart.shape) != tuple(variable.shape):
            raise ValueError(f"`{variable.path}` {tuple(variable.shape)} of the source model "
                             f"does not fit `{counterpart.path}` {tuple(counterpart.shape)}; "
                             "build both from the same backbone configuration.")
        counterpart.assign(ops.convert_to_numpy(variable))  # a copy: JAX may donate buffers


def predict_logits_and_scores(model, images, batch_size=None, verbose=0, parts=False):
    """`(logits, anomaly_score or None)` of any segmenter, as numpy.

    One pass for a model with `predict_outputs` (every keras_gss segmenter);
    other Keras models (a keras-hub softmax segmenter, say) give logits only.
    With `parts=True` a third item maps the parts of a composite score
    (DenseHybrid's `"discriminative"` and `"generative"`) to their maps.
    """
    if hasattr(model, "predict_outputs"):
        outputs = model.predict_outputs(images, batch_size=batch_size, verbose=verbose)
        result = (np.asarray(outputs["logits"]), np.asarray(outputs["anomaly_score"]))
        extra = {k[:-len("_score")]: np.asarray(v) for k, v in outputs.items()
                 if k.endswith("_score") and k != "anomaly_score"}
    else:
        result = (np.asarray(model.predict(images, batch_size=batch_size, verbose=verbose)),
                  None)
        extra = {}
    return result + (extra,) if parts else result

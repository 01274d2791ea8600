"""Image-level counterpart of the segmenter base: class logits and an anomaly score per image."""

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_gss.losses import sparse_categorical_crossentropy
from keras_gss.models.open_set import Graphs
from keras_gss.models.open_set import OpenSetTask
from keras_gss.models.open_set import SoftmaxBaseline
from keras_gss.utils import keras_compat
from keras_gss.utils.checks import check_rank
from keras_gss.utils.distribution import reduce_sum
from keras_gss.utils.distribution import replica_context


class OpenSetImageClassifier(OpenSetTask, keras_hub.models.ImageClassifier):
    """Base of the keras_gss image classifiers: logits and an anomaly score per image.

    A backbone's feature map is average-pooled (a vector output is used as
    it is), dropout regularises it, and a family's head turns it into class
    logits and, for generative heads, an anomaly score. Training minimises
    the cross-entropy of the logits plus the family's `head_loss`. Families
    implement the same hooks as `OpenSetImageSegmenter`'s (`head_outputs`,
    `score_anomaly`, `head_loss`, `training_state_layers`), on `(B, F)`
    features instead of maps.

    Args:
        backbone: a keras-hub image backbone (ResNet, MiT, ...), a
            `DigitCNNBackbone`, or any Keras model mapping images to a
            feature map or vector.
        num_classes: int. Number of known classes `C`.
        dropout: float. Dropout on the pooled features. Defaults to `0.0`.
        anomaly_threshold: float or None. Score above which an image is
            unknown (`predict_open_set`). Defaults to `None`.
        preprocessor: must be `None`: images are fed preprocessed.
    """

    backbone_cls = None
    preprocessor_cls = None
    loss_description = "cross-entropy over the labels"
    score_name = "anomaly_score"

    def __init__(self, backbone, num_classes, dropout=0.0, anomaly_threshold=None,
                 preprocessor=None, **kwargs):
        name = type(self).__name__
        if preprocessor is not None:
            raise ValueError(f"`preprocessor` must be None: {name} takes images already "
                             "normalised for its backbone.")
        image_shape = tuple(backbone.input.shape[1:])
        if len(image_shape) != 3:
            raise ValueError("`backbone` must take images (height, width, channels); its "
                             f"input shape is {image_shape}.")
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = None
        self.pooling = keras.layers.GlobalAveragePooling2D(name="pooling")
        self.output_dropout = keras.layers.Dropout(dropout, name="output_dropout")

        # === Functional Model ===
        inputs = keras.Input(shape=image_shape, name="images")
        features = backbone(inputs)
        if len(features.shape) == 4:
            features = self.pooling(features)
        head = self.head_outputs(self.output_dropout(features))
        logits = head["logits"]
        anomaly_score = self.score_anomaly(head, logits)
        keras_hub.models.Task.__init__(self, inputs=inputs, outputs=logits, **kwargs)
        self._graphs = Graphs(
            train=keras.Model(inputs, {"logits": logits,
                                       **{f"head_{k}": v for k, v in head.items()}}),
            serving=keras.Model(inputs, {"logits": logits, "anomaly_score": anomaly_score}))

        # === Config ===
        self.num_classes = num_classes
        self.dropout = dropout
        self.anomaly_threshold = anomaly_threshold

    # === Family hooks ===

    def head_outputs(self, features):
        raise TypeError(f"{type(self).__name__} has no head: use a family (e.g. "
                        "SoftmaxImageClassifier), or implement head_outputs(features).")

    def score_anomaly(self, head, logits):
        return head["anomaly_score"]

    def head_loss(self, labels, outputs, replicas):
        return 0.0

    def training_state_layers(self):
        return []

    # === Checks ===

    def _check_images(self, images):
        expected = tuple(self.input.shape[1:])
        check_rank("images", images, 4, f"(batch, {', '.join(map(str, expected))})")
        if tuple(images.shape[1:]) != expected:
            raise ValueError(f"`images` must be {expected} per image for this model; "
                             f"received shape {tuple(images.shape)}. Resize them, or build "
                             "the backbone with that image_shape.")

    # === Training ===

    def compile(self, optimizer="auto", loss=None, *, metrics="auto", **kwargs):
        """Configure training; the loss is built in.

        Args:
            optimizer: `"auto"` (Adam, lr 1e-3) or any Keras optimizer.
            loss: must be `None`: `compute_loss` implements the family's loss.
            metrics: `"auto"` (accuracy) or metrics on the logits.
        """
        if loss not in (None, "auto"):
            raise ValueError(f"`loss` must be None: {type(self).__name__} trains with its "
                             f"own loss ({self.loss_description}).")
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        if metrics == "auto":
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        keras.Model.compile(self, optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        if hasattr(x, "shape"):
            self._check_images(x)
        if y is not None and hasattr(y, "shape") and not hasattr(y, "element_spec"):
            labels = np.asarray(y).reshape(len(y), -1)[:, 0]
            if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"`y` must hold class ids in [0, {self.num_classes}); "
                                 f"received values in [{labels.min()}, {labels.max()}].")
        # keras-hub's fit streams arrays in order and ignores `shuffle` (with a warning), so
        # shuffle the arrays or the dataset yourself.
        kwargs.setdefault("shuffle", False)
        return super().fit(x, y, *args, **kwargs)

    def make_train_function(self, force=False):
        for layer in self.training_state_layers():
            layer.build()  # allocated when training starts, never for inference
        return super().make_train_function(force=force)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        replicas = replica_context()
        training_graph = isinstance(y_pred, dict)
        logits = y_pred["logits"] if training_graph else y_pred
        loss = sparse_categorical_crossentropy(labels, logits, -1, sample_weight,
                                               reduce_sum(replicas))
        if training_graph:
            loss = loss + self.head_loss(labels, y_pred, replicas)
        return loss

    # === Inference ===

    def predict_outputs(self, images, batch_size=None, verbose="auto"):
        """Logits `(B, C)` and anomaly score `(B,)` (higher = more anomalous), as numpy."""
        if hasattr(images, "shape"):
            self._check_images(images)
        outputs = self._graphs.serving.predict(images, batch_size=batch_size, verbose=verbose)
        return {k: np.asarray(v) for k, v in outputs.items()}

    def predict_anomaly(self, images, batch_size=None, verbose="auto"):
        """Anomaly scores `(B,)`, higher = more likely an unknown class."""
        return self.predict_outputs(images, batch_size, verbose)["anomaly_score"]

    def predict_open_set(self, images, threshold=None, batch_size=None, verbose="auto"):
        """Class ids `(B,)`, with `C` (unknown) where the score passes the threshold."""
        threshold = self.anomaly_threshold if threshold is None else threshold
        if threshold is None:
            raise ValueError("`threshold` is required: this model has no calibrated "
                             "anomaly_threshold. Pass one, e.g. a quantile of the scores of "
                             "known-class validation images.")
        outputs = self.predict_outputs(images, batch_size, verbose)
        return np.where(outputs["anomaly_score"] > threshold, self.num_classes,
                        outputs["logits"].argmax(-1))

    def save_task_weights(self, filepath):
        """Save the weights outside the backbone, without training state."""
        skip = keras_compat.flatten_layers(self.backbone) + self.training_state_layers()
        keras.saving.save_weights(self, filepath, objects_to_skip=skip)

    def get_config(self):
        config = keras_hub.models.Task.get_config(self)  # not ImageClassifier's pooling keys
        config.update({"num_classes": self.num_classes, "dropout": self.dropout,
                       "anomaly_threshold": self.anomaly_threshold})
        return config


@keras.saving.register_keras_serializable(package="keras_gss")
class SoftmaxImageClassifier(SoftmaxBaseline, OpenSetImageClassifier):
    """Softmax classifier: the discriminative baseline of the open-set protocol.

    A linear layer on the pooled features, trained by cross-entropy; its
    anomaly score comes from the logits after the fact (`"max_softmax"`,
    `"entropy"`, `"max_logit"` or `"energy"`, as `SoftmaxImageSegmenter`).

    Args:
        backbone: an image backbone (see `OpenSetImageClassifier`).
        num_classes: int. Number of known classes `C`.
        anomaly_score: one of `"max_softmax"`, `"entropy"`, `"max_logit"`,
            `"energy"`. Defaults to `"max_softmax"`.
        **kwargs: `dropout`, `anomaly_threshold`.

    Example:

    >>> import numpy as np
    >>> import keras_gss
    >>> backbone = keras_gss.models.DigitCNNBackbone(filters=(4, 8))
    >>> model = SoftmaxImageClassifier(backbone, num_classes=6)
    >>> outputs = model.predict_outputs(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
    >>> outputs["logits"].shape, outputs["anomaly_score"].shape
    ((2, 6), (2,))
    """

    def __init__(self, backbone, num_classes, anomaly_score="max_softmax", **kwargs):
        classifier = keras.layers.Dense(num_classes, name="classifier")
        super().__init__(classifier, anomaly_score, backbone, num_classes, **kwargs)

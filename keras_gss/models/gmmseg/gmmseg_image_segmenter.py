"""GMMSeg: a segmenter whose classifier is a Gaussian mixture fitted by EM."""

import keras
import keras_hub
from keras import ops

from keras_gss.callbacks.sinkhorn_em import SinkhornEM
from keras_gss.layers.feature_memory import FeatureMemory
from keras_gss.layers.gaussian_mixture_head import GaussianMixtureHead
from keras_gss.layers.sinkhorn import sinkhorn_knopp
from keras_gss.losses import sparse_categorical_crossentropy
from keras_gss.models.backbones import dense_features
from keras_gss.utils.checks import check_channels
from keras_gss.utils.checks import check_labels
from keras_gss.utils.checks import check_rank


def _replica_context():
    """The `tf.distribute` replica context when training on several replicas."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def _multi_worker(strategy):
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


class _Graphs:
    """Holds auxiliary views of the task's graph out of Keras tracking.

    They share every layer with the task; keeping them untracked keeps the
    saved weight paths those of the task alone.
    """

    def __init__(self, **graphs):
        self.__dict__.update(graphs)


@keras.saving.register_keras_serializable(package="keras_gss")
class GMMSegImageSegmenter(keras_hub.models.ImageSegmenter):
    """GMMSeg semantic segmenter with an open-set anomaly score.

    A keras-hub backbone (SegFormer/MiT or DeepLabV3+/ResNet) gives dense
    stride-4 features; a `GaussianMixtureHead` turns them into class logits
    through class-conditional Gaussian mixtures; logits are upsampled
    bilinearly to the input size. Training (`fit`) minimises the
    cross-entropy of the GMM posterior (GMMSeg Eq. 11b, ignore index 255)
    plus `contrast_loss_weight` × the component-level cross-entropy on
    Sinkhorn assignments (authors' code), and writes the step's embeddings
    to a `FeatureMemory`; the `SinkhornEM` callback fits the mixture from
    that memory (one is added to `fit` with default settings if none is
    given). No gradient ever reaches the GMM.

    `model(images)` and `predict` give logits `(B, H, W, C)`;
    `predict_anomaly` gives `-max_c log p(x | c)` `(B, H, W)`, higher is
    more anomalous. Images are taken as they are (normalise them as the
    backbone expects); labels are sparse int maps `(B, H, W)`.

    Args:
        backbone: `keras_hub.models.SegFormerBackbone`,
            `keras_hub.models.DeepLabV3Backbone`, or any Keras model
            mapping images to dense features.
        num_classes: int. Number of known classes `C`.
        num_components: int. Gaussians per class `M`. Defaults to `5`.
        embedding_dim: int. Embedding dimension `D`. Defaults to `64`.
        component_reduction: `"max"` or `"logsumexp"`. Defaults to `"max"`.
        class_norm: bool. LayerNorm over class scores. Defaults to `True`.
        variance_floor: float. Added to fitted variances. Defaults to `0.01`.
        memory_size: int. Entries per (class, component) queue. Defaults
            to `32000` (the paper). The memory is allocated when training
            starts (or when weights that hold one are loaded), so a model
            used only for inference never holds it.
        samples_per_component: int. Most entries written per queue and
            step. Defaults to `20`.
        correct_only: bool. Write only correctly classified pixels.
            Defaults to `True`.
        starved_fallback: bool. With `correct_only`, a class with no
            correctly classified pixel in the step writes its labelled
            pixels instead. Defaults to `False`.
        memory_dtype: storage dtype of the feature memory (`"float32"`,
            `"float16"`, `"bfloat16"`). Defaults to `"float32"`.
        memory_fill: `"empty"`, or `"random"` to start every queue full of
            random unit vectors as the authors' code does. Defaults to
            `"empty"`.
        sinkhorn_epsilon: float. Entropic weight of the E-step. Defaults to
            `0.05`.
        sinkhorn_iterations: int. Sinkhorn iterations. Defaults to `3`.
        contrast_loss_weight: float. Weight of the component-level
            cross-entropy. Defaults to `0.01`.
        dropout: float. Spatial dropout on the features. Defaults to `0.1`.
        ignore_index: int. Label of void pixels. Defaults to `255`.
        preprocessor: must be `None`: images are fed preprocessed.

    Example:

    ```python
    backbone = keras_gss.models.segformer_backbone(
        variant=None, image_shape=(32, 32, 3), hidden_dims=[4, 8],
        projection_filters=8)
    model = keras_gss.models.GMMSegImageSegmenter(
        backbone, num_classes=3, num_components=2, embedding_dim=8,
        memory_size=64)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(images, labels, epochs=1)        # adds SinkhornEM()
    logits = model.predict(images)             # (B, 32, 32, 3)
    scores = model.predict_anomaly(images)     # (B, 32, 32)
    ```

    Reference:
        Liang et al., "GMMSeg: Gaussian Mixture based Generative Semantic
        Segmentation Models", NeurIPS 2022.
    """

    backbone_cls = None
    preprocessor_cls = None

    def __init__(
        self,
        backbone,
        num_classes,
        num_components=5,
        embedding_dim=64,
        component_reduction="max",
        class_norm=True,
        variance_floor=0.01,
        memory_size=32000,
        samples_per_component=20,
        correct_only=True,
        starved_fallback=False,
        memory_dtype="float32",
        memory_fill="empty",
        sinkhorn_epsilon=0.05,
        sinkhorn_iterations=3,
        contrast_loss_weight=0.01,
        dropout=0.1,
        ignore_index=255,
        preprocessor=None,
        **kwargs,
    ):
        if preprocessor is not None:
            raise ValueError(
                "`preprocessor` must be None: GMMSegImageSegmenter takes "
                "images already normalised for its backbone."
            )
        image_shape = tuple(backbone.input.shape[1:])
        if len(image_shape) != 3 or image_shape[-1] != 3:
            raise ValueError(
                "`backbone` must take RGB images (height, width, 3); its "
                f"input shape is {image_shape}."
            )
        # === Layers ===
        self.backbone = backbone
        self.preprocessor = None
        self.dense_features = dense_features(backbone)
        self.feature_dropout = keras.layers.SpatialDropout2D(
            dropout, name="feature_dropout"
        )
        self.gmm_head = GaussianMixtureHead(
            num_classes=num_classes,
            num_components=num_components,
            embedding_dim=embedding_dim,
            component_reduction=component_reduction,
            class_norm=class_norm,
            variance_floor=variance_floor,
            name="gmm_head",
        )
        self.feature_memory = FeatureMemory(
            num_classes=num_classes,
            num_components=num_components,
            embedding_dim=embedding_dim,
            capacity=memory_size,
            samples_per_component=samples_per_component,
            correct_only=correct_only,
            starved_fallback=starved_fallback,
            ignore_index=ignore_index,
            storage_dtype=memory_dtype,
            fill=memory_fill,
            name="feature_memory",
        )
        self.upsample = keras.layers.Resizing(
            image_shape[0], image_shape[1], interpolation="bilinear",
            dtype="float32", name="upsample",
        )

        # === Functional Model ===
        inputs = keras.Input(shape=image_shape, name="images")
        features = self.feature_dropout(self.dense_features(inputs))
        dense = self.gmm_head(features)
        logits = self.upsample(dense["logits"])
        anomaly_score = self.upsample(dense["anomaly_score"][..., None])[..., 0]
        super().__init__(inputs=inputs, outputs=logits, **kwargs)
        self._graphs = _Graphs(
            train=keras.Model(
                inputs,
                {
                    "logits": logits,
                    "dense_logits": dense["logits"],
                    "component_log_likelihood": dense[
                        "component_log_likelihood"
                    ],
                    "embeddings": dense["embeddings"],
                },
            ),
            anomaly=keras.Model(inputs, anomaly_score),
            serving=keras.Model(
                inputs, {"logits": logits, "anomaly_score": anomaly_score}
            ),
        )

        # === Config ===
        self.num_classes = num_classes
        self.num_components = num_components
        self.embedding_dim = embedding_dim
        self.component_reduction = component_reduction
        self.class_norm = class_norm
        self.variance_floor = variance_floor
        self.memory_size = memory_size
        self.samples_per_component = samples_per_component
        self.correct_only = correct_only
        self.starved_fallback = starved_fallback
        self.memory_dtype = memory_dtype
        self.memory_fill = memory_fill
        self.sinkhorn_epsilon = sinkhorn_epsilon
        self.sinkhorn_iterations = sinkhorn_iterations
        self.contrast_loss_weight = contrast_loss_weight
        self.dropout = dropout
        self.ignore_index = ignore_index

    def _check_images(self, images):
        check_rank("images", images, 4, "(batch, height, width, 3)")
        check_channels(
            "images",
            images,
            3,
            "Convert grayscale with np.repeat(images, 3, axis=-1) and drop "
            "alpha channels.",
        )
        expected = tuple(self.input.shape[1:3])
        if tuple(images.shape[1:3]) != expected and None not in images.shape[1:3]:
            raise ValueError(
                f"`images` must be {expected[0]}×{expected[1]} for this "
                f"model; received shape {tuple(images.shape)}. Resize or crop "
                "them, or build the model with that image_shape."
            )

    def __call__(self, inputs, *args, **kwargs):
        if hasattr(inputs, "shape"):
            self._check_images(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if training:
            return self._graphs.train(inputs, training=True)
        # Unset means inference: keras-hub's SegFormer decoder would otherwise
        # update its BatchNorm statistics on a plain `model(images)`.
        return super().call(inputs, training=False, mask=mask)

    def compile(self, optimizer="auto", loss=None, *, metrics=None, **kwargs):
        """Configure training; the GMMSeg loss is built in.

        Args:
            optimizer: `"auto"` (AdamW, lr 6e-5, weight decay 0.01, the
                authors' SegFormer setting) or any Keras optimizer.
            loss: must be `None`; `compute_loss` implements GMMSeg's loss.
            metrics: optional metrics on the logits.
        """
        if loss not in (None, "auto"):
            raise ValueError(
                "`loss` must be None: GMMSegImageSegmenter trains with its "
                "own loss (GMM-posterior cross-entropy + component "
                "cross-entropy); tune `contrast_loss_weight` instead."
            )
        if optimizer == "auto":
            optimizer = keras.optimizers.AdamW(
                learning_rate=6e-5, weight_decay=0.01
            )
        if metrics == "auto":
            metrics = None
        keras.Model.compile(
            self, optimizer=optimizer, loss=None, metrics=metrics, **kwargs
        )

    def compile_from_config(self, config):
        # Recompile on `load_model` so a resumed training keeps its optimizer.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, callbacks=None, **kwargs):
        if hasattr(x, "shape"):  # JAX traces `call` directly, past `__call__`'s check
            self._check_images(x)
        if y is not None and not hasattr(y, "element_spec"):
            check_labels("y", y, self.num_classes, self.ignore_index)
        callbacks = list(callbacks or [])
        if not any(isinstance(c, SinkhornEM) for c in callbacks):
            callbacks.append(SinkhornEM())
        strategy = getattr(self, "distribute_strategy", None)
        if strategy is not None and strategy.num_replicas_in_sync > 1:
            # SyncBN, as the paper trains: batch statistics over the global batch.
            for layer in self._flatten_layers():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = True
        return super().fit(x, y, *args, callbacks=callbacks, **kwargs)

    def make_train_function(self, force=False):
        # The memory is training state: allocated when training starts, never for inference.
        strategy = getattr(self, "distribute_strategy", None)  # TensorFlow only
        if strategy is None:
            self.feature_memory.build()
        else:
            with strategy.scope():  # mirrored, as the rest of the model
                self.feature_memory.build()
        return super().make_train_function(force=force)

    def train_step(self, *args, **kwargs):
        logs = super().train_step(*args, **kwargs)
        strategy = getattr(self, "_distribute_strategy", None)  # TensorFlow only
        if strategy is not None and _multi_worker(strategy):
            # Keras reduces logs over workers along axis 0, which scalars lack.
            logs = {name: ops.reshape(value, (1,)) for name, value in logs.items()}
        return logs

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras builds from a batch reduced over replicas, which multi-worker
        # strategies cannot do eagerly; a local replica's batch builds the same.
        strategy = getattr(self, "_distribute_strategy", None)
        if iterator is None or strategy is None or not _multi_worker(strategy):
            return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)
        import tensorflow as tf

        for _, _, batches in iterator:
            batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0]
                if isinstance(v, tf.distribute.DistributedValues) else v,
                next(batches),
            )
            break
        with strategy.scope():
            self._symbolic_build(data_batch=batch)

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        labels = ops.cast(y, "int32")
        if len(labels.shape) == 4:
            labels = labels[..., 0]
        replicas = _replica_context()
        # Keras sums replicas' gradients: extra losses are split between them.
        extra = ops.sum(ops.stack(self.losses)) if self.losses else 0.0
        if replicas is not None:
            extra = extra / replicas.num_replicas_in_sync
        reduce_sum = None if replicas is None else (
            lambda value: replicas.all_reduce("sum", value))
        if not isinstance(y_pred, dict):
            return (
                sparse_categorical_crossentropy(
                    labels, y_pred, self.ignore_index, sample_weight, reduce_sum
                )
                + extra
            )
        # Eq. 11b: cross-entropy through the GMM posterior, at label size.
        loss = sparse_categorical_crossentropy(
            labels, y_pred["logits"], self.ignore_index, sample_weight, reduce_sum
        )

        component_ll = y_pred["component_log_likelihood"]
        height, width = component_ll.shape[1], component_ll.shape[2]
        coarse = ops.image.resize(
            ops.cast(labels[..., None], "float32"),
            (height, width),
            interpolation="nearest",
        )
        coarse = ops.reshape(ops.cast(coarse, "int32"), (-1,))
        m = self.num_components
        component_ll = ops.reshape(component_ll, (-1, self.num_classes, m))
        known = ops.logical_and(coarse >= 0, coarse < self.num_classes)
        safe = ops.where(known, coarse, 0)
        own = ops.take_along_axis(component_ll, safe[:, None, None], axis=1)
        predictions = ops.reshape(
            ops.argmax(y_pred["dense_logits"], axis=-1), (-1,)
        )
        embeddings = ops.reshape(y_pred["embeddings"], (-1, self.embedding_dim))
        own_ll, all_labels, all_coarse = own[:, 0, :], labels, coarse
        if replicas is not None:
            # Every replica sees the global batch, so E-step and memory agree everywhere.
            def gather(value):
                gathered = replicas.all_gather(ops.stop_gradient(value), axis=0)
                return ops.reshape(gathered, (-1,) + tuple(value.shape[1:]))

            own_ll, all_labels, all_coarse = gather(own_ll), gather(labels), gather(coarse)
            embeddings, predictions = gather(embeddings), gather(predictions)
        # Full resolution: the stride-4 labels the memory sees can miss small bad patches.
        self.feature_memory.record_invalid_labels(all_labels)
        all_known = ops.logical_and(all_coarse >= 0, all_coarse < self.num_classes)
        # Eq. 10: equipartitioned E-step within each class of the batch.
        _, all_components = sinkhorn_knopp(
            own_ll,
            epsilon=self.sinkhorn_epsilon,
            iterations=self.sinkhorn_iterations,
            segment_ids=ops.where(all_known, all_coarse, -1),
            num_segments=self.num_classes,
        )
        components = all_components
        if replicas is not None:  # this replica's rows of the global batch
            local = ops.shape(coarse)[0]
            start = replicas.replica_id_in_sync_group * local
            components = ops.slice(all_components, [start], [local])
        if self.contrast_loss_weight:
            target = ops.where(known, safe * m + components, -1)
            loss = loss + self.contrast_loss_weight * (
                sparse_categorical_crossentropy(
                    target,
                    ops.reshape(component_ll, (-1, self.num_classes * m)),
                    ignore_index=-1,
                    reduce_sum=reduce_sum,
                )
            )
        self.feature_memory.write(
            embeddings, all_coarse, all_components, predictions=predictions
        )
        return loss + extra

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if isinstance(y_pred, dict):
            y_pred = y_pred["logits"]
        return super().compute_metrics(x, y, y_pred, sample_weight)

    def predict(self, x, *args, **kwargs):
        if hasattr(x, "shape"):  # JAX traces `call` directly, past `__call__`'s check
            self._check_images(x)
        return super().predict(x, *args, **kwargs)

    def predict_anomaly(self, images, batch_size=None, verbose="auto"):
        """Anomaly score maps `(B, H, W)`, float32, higher = more anomalous.

        The score is `-max_c log p(x | c)` from the class-conditional
        mixtures (GMMSeg §3.4), upsampled bilinearly to the input size.

        Args:
            images: array `(B, H, W, 3)` or a `tf.data.Dataset` of images.
            batch_size: int. Defaults to Keras' default (32).
            verbose: Keras progress-bar setting. Defaults to `"auto"`.
        """
        if hasattr(images, "shape"):
            self._check_images(images)
        return self._graphs.anomaly.predict(
            images, batch_size=batch_size, verbose=verbose
        )

    def export(self, filepath, format="tf_saved_model", verbose=True, **kwargs):
        """Export a SavedModel whose `serve` signature gives both outputs.

        `serve(images)` returns `{"logits": (B, H, W, C), "anomaly_score":
        (B, H, W)}`. The feature memory is training state and is left out.
        Other formats go to Keras' `export`.

        Example:

        ```python
        model.export("gmmseg_saved_model")
        reloaded = tf.saved_model.load("gmmseg_saved_model")
        outputs = reloaded.serve(images)   # {"logits": ..., "anomaly_score": ...}
        ```
        """
        if format != "tf_saved_model":
            return super().export(filepath, format=format, verbose=verbose, **kwargs)
        import tensorflow as tf

        serving = self._graphs.serving
        archive = keras.export.ExportArchive()
        archive.track(serving)
        archive.add_endpoint(
            name="serve",
            fn=lambda images: serving(images, training=False),
            input_signature=[
                tf.TensorSpec((None,) + tuple(self.input.shape[1:]), tf.float32)
            ],
        )
        archive.write_out(filepath, verbose=verbose)

    def save_to_preset(self, preset_dir, max_shard_size=10, include_memory=False):
        """keras-hub's preset files plus the keras_gss version that wrote them.

        Args:
            preset_dir: str. Directory to write.
            max_shard_size: float. Largest weight file in GB (keras-hub's).
            include_memory: bool. Also save the feature memory and its step
                counter, to continue training exactly where it stopped. It
                holds `C·M·memory_size·D` values (0.78 GB for Cityscapes and
                9.8 GB for ADE20K at the paper's float32 × 32 000). Defaults
                to `False`: the preset holds what inference and fine-tuning
                need (backbone, head, GMM means and scales), and fine-tuning
                refills the memory.
        """
        from keras_gss.presets import write_version

        self._preset_memory = include_memory
        try:
            super().save_to_preset(preset_dir, max_shard_size=max_shard_size)
        finally:
            self._preset_memory = False
        write_version(preset_dir)

    def save_task_weights(self, filepath):
        """Save the weights outside the backbone; the memory only from
        `save_to_preset(..., include_memory=True)`."""
        skip = list(self.backbone._flatten_layers())  # as keras-hub's Task does
        if not getattr(self, "_preset_memory", False):
            skip.append(self.feature_memory)
        keras.saving.save_weights(self, filepath, objects_to_skip=skip)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "num_components": self.num_components,
                "embedding_dim": self.embedding_dim,
                "component_reduction": self.component_reduction,
                "class_norm": self.class_norm,
                "variance_floor": self.variance_floor,
                "memory_size": self.memory_size,
                "samples_per_component": self.samples_per_component,
                "correct_only": self.correct_only,
                "starved_fallback": self.starved_fallback,
                "memory_dtype": self.memory_dtype,
                "memory_fill": self.memory_fill,
                "sinkhorn_epsilon": self.sinkhorn_epsilon,
                "sinkhorn_iterations": self.sinkhorn_iterations,
                "contrast_loss_weight": self.contrast_loss_weight,
                "dropout": self.dropout,
                "ignore_index": self.ignore_index,
            }
        )
        return config

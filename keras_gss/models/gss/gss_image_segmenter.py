"""GSS: semantic segmentation as image-conditioned generation of a mask image."""

import keras
from keras import ops

from keras_gss.layers.conv_maskige_decoder import ConvMaskigeDecoder
from keras_gss.layers.maskige_codec import DECODINGS
from keras_gss.layers.maskige_codec import MaskigeCodec
from keras_gss.layers.swin_blocks import SwinBlocks
from keras_gss.layers.swin_maskige_decoder import SwinMaskigeDecoder
from keras_gss.losses import sparse_categorical_crossentropy
from keras_gss.models.gss.discrete_vae import DiscreteVAE
from keras_gss.models.gss.gss_presets import TOKENIZER_PRESETS
from keras_gss.models.open_set_image_segmenter import OpenSetImageSegmenter
from keras_gss.models.open_set_image_segmenter import copy_weights
from keras_gss.utils import keras_compat
from keras_gss.utils.checks import check_choice
from keras_gss.utils.distribution import reduce_sum

LEARNED_DECODERS = {"conv": ConvMaskigeDecoder, "swin": SwinMaskigeDecoder}
MASKIGE_DECODERS = DECODINGS + tuple(LEARNED_DECODERS)
FEATURE_STRIDE = 4  # the base's dense features, and GSS's final token grid (d = 1/4, Table 3)


def upsample_labels(labels, factor, num_classes):
    """Label maps `(B, H, W)` at `factor`× size: one-hot (unlabelled as one more class),
    bilinear, argmax; unlabelled pixels come back as `num_classes` (the authors' 2× maskige)."""
    labels = ops.cast(labels, "int32")
    known = ops.logical_and(labels >= 0, labels < num_classes)
    one_hot = ops.one_hot(ops.where(known, labels, num_classes), num_classes + 1)
    height, width = labels.shape[1], labels.shape[2]
    resized = ops.image.resize(one_hot, (height * factor, width * factor),
                               interpolation="bilinear")
    return ops.cast(ops.argmax(resized, axis=-1), "int32")


@keras.saving.register_keras_serializable(package="keras_gss")
class GSSImageSegmenter(OpenSetImageSegmenter):
    """GSS: predict the tokens of the mask's colour image, decode them, read the colours.

    Stage I is training-free: a `MaskigeCodec` paints a mask as a colour
    image (a "maskige") and a frozen image tokenizer (`DiscreteVAE`, never
    trained on maskiges) turns it into a token grid. Stage II trains the
    prior `p_ψ(z|x)`: the base's dense stride-4 features (the multi-level
    aggregation of the backbone's pyramid), `mla_depth` Swin blocks,
    LayerNorm, a 1×1 projection + BN + ReLU, dropout and a 1×1 convolution
    to logits over the tokenizer's vocabulary, one token per stride-4 cell
    (d = 1/4). Its loss is `token_loss_weight` × the tokens' cross-entropy
    (against the tokens of the ground-truth maskige) + `pixel_loss_weight`
    × an auxiliary per-pixel cross-entropy (`p_ξ`, a 1×1 convolution on the
    same features); unlabelled pixels are painted with the auxiliary head's
    prediction before tokenising, and a token is ignored only where its
    whole patch is unlabelled (spec §8.2; the authors' 0.8 and 0.2).
    Inference: argmax tokens → the frozen tokenizer's decoder → maskige →
    `X⁻¹`: nearest colour or least squares (training-free, GSS-FF), or a
    learned decoder (`"conv"`: GSS-FT, `"swin"`: GSS-FT-W) trained on
    predicted maskiges by `fit_maskige_decoder` once the prior is trained.

    A tokenizer that down-samples 4× reads a maskige at the image's size; an
    8× one (DALL-E's) reads it at twice the size, labels up-sampled by
    one-hot bilinear interpolation, as the authors do. GSS has no anomaly
    score; ours (`"anomaly_score"`) is `1 − max_z p(z|x)`, the token
    prior's own confidence, up-sampled to pixels.

    Args:
        backbone: a keras-hub SegFormer or DeepLabV3+ backbone, or any Keras
            model mapping images to dense features.
        num_classes: int. Number of classes `K`.
        tokenizer: a `DiscreteVAE` (frozen here) down-sampling 4× or 8×,
            a directory written by its `save_to_preset`, or a name in
            `TOKENIZER_PRESETS` (its architecture, untrained).
        palette: `"maximal_distance"`, `"random"` or an array `(K + 1, 3)`
            (see `MaskigeCodec`). Defaults to `"maximal_distance"`.
        palette_seed: int. Defaults to `0`.
        maskige_decoder: `"nearest"`, `"least_squares"`, `"conv"` or
            `"swin"`. Defaults to `"nearest"` (GSS-FF as the authors' code
            decodes).
        mla_depth: int. Swin blocks on the features (`D`: 2 on Swin
            backbones, 6 on ResNets). Defaults to `2`.
        mla_heads: int. Defaults to `4`.
        window_size: int. Defaults to `7`.
        token_hidden_dim: int. Width before the token classifier (the
            authors' 2048). Defaults to `256`.
        token_loss_weight: float. Defaults to `0.8`.
        pixel_loss_weight: float. Defaults to `0.2`.
        decoder_config: dict. Arguments of the learned decoder. Defaults to
            `None` (its defaults).
        **kwargs: `dropout`, `ignore_index`, `anomaly_threshold` and the
            rest of `OpenSetImageSegmenter`'s.

    Example:

    ```python
    tokenizer = keras_gss.models.DiscreteVAE(vocab_size=512, hidden_dim=32,
                                             blocks_per_group=1, group_count=3)
    tokenizer.fit(natural_image_crops, epochs=10)     # never on maskiges
    model = keras_gss.models.GSSImageSegmenter(backbone, num_classes=9,
                                               tokenizer=tokenizer)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit(images, labels, epochs=20)
    labels = model.predict(images).argmax(-1)
    ```

    Reference:
        Chen et al., "Generative Semantic Segmentation", CVPR 2023.
    """

    inference_outputs = ("maskige",)  # decoding argmax tokens carries no gradient
    loss_description = ("0.8 × token cross-entropy + 0.2 × pixel cross-entropy; set "
                        "token_loss_weight and pixel_loss_weight")

    def __init__(self, backbone, num_classes, tokenizer, palette="maximal_distance",
                 palette_seed=0, maskige_decoder="nearest", mla_depth=2, mla_heads=4,
                 window_size=7, token_hidden_dim=256, token_loss_weight=0.8,
                 pixel_loss_weight=0.2, decoder_config=None, **kwargs):
        if isinstance(tokenizer, dict):
            tokenizer = keras.saving.deserialize_keras_object(tokenizer)
        elif isinstance(tokenizer, str):  # a trained tokenizer's directory, or an architecture
            tokenizer = DiscreteVAE.from_preset(
                tokenizer, load_weights=tokenizer not in TOKENIZER_PRESETS)
        if not isinstance(tokenizer, DiscreteVAE):
            raise ValueError("`tokenizer` must be a keras_gss DiscreteVAE; received "
                             f"{type(tokenizer).__name__}.")
        if tokenizer.downsampling not in (FEATURE_STRIDE, 2 * FEATURE_STRIDE):
            raise ValueError(f"`tokenizer` must down-sample 4× or 8× (tokens on the stride-4 "
                             f"grid); it down-samples {tokenizer.downsampling}×: build it with "
                             "group_count 3 or 4.")
        check_choice("maskige_decoder", maskige_decoder, MASKIGE_DECODERS)
        # === Layers ===
        tokenizer.trainable = False  # Stage I is frozen: only the prior learns
        self.tokenizer = tokenizer
        self.codec = MaskigeCodec(num_classes, palette=palette, seed=palette_seed, name="codec")
        self.mla = (SwinBlocks(mla_heads, depth=mla_depth, window_size=window_size, name="mla")
                    if mla_depth else None)
        self.mla_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="mla_norm")
        self.token_projection = keras.layers.Conv2D(token_hidden_dim, 1, use_bias=False,
                                                    name="token_projection")
        self.token_norm = keras.layers.BatchNormalization(name="token_norm")
        self.token_dropout = keras.layers.Dropout(0.1, name="token_dropout")
        self.token_classifier = keras.layers.Conv2D(
            tokenizer.vocab_size, 1, kernel_initializer=keras.initializers.RandomNormal(
                stddev=0.01), name="token_classifier")
        self.pixel_classifier = keras.layers.Conv2D(num_classes, 1, name="pixel_classifier")
        self.learned_decoder = None
        if maskige_decoder in LEARNED_DECODERS:
            self.learned_decoder = LEARNED_DECODERS[maskige_decoder](
                num_classes, **(decoder_config or {}), name="learned_decoder")
        self.maskige_decoder = maskige_decoder
        self.cross_entropy_weight = pixel_loss_weight

        # === Functional Model ===
        super().__init__(backbone, num_classes, **kwargs)
        if self.learned_decoder is not None:  # built now; it learns in its own stage only
            self.learned_decoder.trainable = False

        # === Config ===
        self.palette = self.codec.palette
        self.palette_seed = palette_seed
        self.mla_depth = mla_depth
        self.mla_heads = mla_heads
        self.window_size = window_size
        self.token_hidden_dim = token_hidden_dim
        self.token_loss_weight = token_loss_weight
        self.pixel_loss_weight = pixel_loss_weight
        self.decoder_config = decoder_config

    @property
    def maskige_scale(self):
        """The maskige's size over the image's: 1 for a 4× tokenizer, 2 for an 8× one."""
        return self.tokenizer.downsampling // FEATURE_STRIDE

    @property
    def score_name(self):
        return "1 - max_z p(z|x) (ours)"

    def head_outputs(self, features):
        x = self.mla(features) if self.mla is not None else features
        x = ops.relu(self.token_norm(self.token_projection(self.mla_norm(x))))
        token_logits = self.token_classifier(self.token_dropout(x))
        token_probs = ops.softmax(ops.cast(token_logits, "float32"), axis=-1)
        tokens = ops.cast(ops.argmax(token_logits, axis=-1), "int32")
        maskige = self.tokenizer.decode(tokens)
        return {"logits": self.maskige_logits(maskige), "maskige": maskige,
                "training_logits": self.pixel_classifier(features),
                "token_logits": token_logits,
                "anomaly_score": 1.0 - ops.max(token_probs, axis=-1)}

    def maskige_logits(self, maskige):
        """Class scores `(B, H', W', K)` of a maskige in the tokenizer's range (`X⁻¹`)."""
        if self.learned_decoder is not None:
            return self.learned_decoder(maskige)
        return self.codec.decode_scores(maskige, self.maskige_decoder)

    def head_loss(self, labels, outputs, replicas):
        """`token_loss_weight` × the tokens' cross-entropy (spec §8.2); the base adds pixels'."""
        num_classes = self.num_classes
        known = ops.logical_and(labels >= 0, labels < num_classes)
        # Unlabelled pixels take the auxiliary head's class, so the maskige has no void colour.
        pseudo = ops.cast(ops.argmax(ops.stop_gradient(outputs["logits"]), axis=-1), "int32")
        composed = ops.where(known, labels, pseudo)
        if self.maskige_scale > 1:  # an 8× tokenizer reads the maskige at 2× (d = 1/4)
            known = upsample_labels(labels, self.maskige_scale, num_classes) < num_classes
            composed = upsample_labels(composed, self.maskige_scale, num_classes)
        targets = ops.stop_gradient(self.tokenizer.encode(self.codec.encode(composed)))
        # A token is ignored only if every pixel of its patch is unlabelled.
        patch = self.tokenizer.downsampling
        labelled = ops.max_pool(ops.cast(known, "float32")[..., None], patch, patch)[..., 0]
        targets = ops.where(labelled > 0, targets, -1)
        token_loss = sparse_categorical_crossentropy(
            targets, outputs["dense_token_logits"], -1, reduce_sum=reduce_sum(replicas))
        return self.token_loss_weight * token_loss

    def predict_maskige(self, images, batch_size=None, verbose="auto"):
        """The decoded maskiges `(B, H', W', 3)` in the tokenizer's range, as numpy."""
        if hasattr(images, "shape"):
            self._check_images(images)
        return self._graphs.inference.predict(images, batch_size=batch_size,
                                              verbose=verbose)["maskige"]

    def with_maskige_decoder(self, maskige_decoder="swin", decoder_config=None):
        """This model (same prior, same frozen tokenizer) with a new learned `X⁻¹` to train.

        GSS-FT-W from a trained GSS-FF: call `fit_maskige_decoder` on the result.

        Args:
            maskige_decoder: `"conv"` or `"swin"`. Defaults to `"swin"`.
            decoder_config: dict. Its arguments. Defaults to `None`.
        """
        check_choice("maskige_decoder", maskige_decoder, tuple(LEARNED_DECODERS))
        if self.learned_decoder is not None:
            raise ValueError("This model already has a learned maskige decoder; build "
                             "with_maskige_decoder from a model that decodes by colour.")
        config = {k: v for k, v in self.get_config().items()
                  if k not in ("name", "trainable", "dtype")}
        model = type(self).from_config({**config, "maskige_decoder": maskige_decoder,
                                        "decoder_config": decoder_config})
        copy_weights(self, model)
        return model

    def fit_maskige_decoder(self, x=None, y=None, epochs=1, batch_size=None,
                            optimizer=None, **kwargs):
        """Train the learned `X⁻¹` on maskiges this model predicts (App. D(iii)).

        Everything else stays frozen and runs in inference mode; the
        decoder learns the cross-entropy of its logits against the labels.
        Train the prior (`fit`) first.

        Args:
            x, y: images and label maps, or a dataset of both (as `fit`).
            epochs, batch_size, **kwargs: as `keras.Model.fit`.
            optimizer: Defaults to AdamW, lr 1.5e-3 (the authors').

        Returns:
            The `History`.
        """
        if self.learned_decoder is None:
            raise ValueError(f"`maskige_decoder` is {self.maskige_decoder!r}, which has nothing "
                             "to train; build the model with maskige_decoder='conv' or 'swin'.")
        layers = keras_compat.flatten_layers(self)  # parents first
        flags = [layer.trainable for layer in layers]
        self.trainable = False
        self.learned_decoder.trainable = True
        try:
            stage = _MaskigeDecoderStage(self)
            stage.compile(optimizer=optimizer or keras.optimizers.AdamW(1.5e-3,
                                                                         weight_decay=0.01))
            kwargs.setdefault("shuffle", hasattr(x, "shape"))  # a stream is shuffled already
            return stage.fit(x, y, epochs=epochs, batch_size=batch_size, **kwargs)
        finally:
            for layer, flag in zip(layers, flags):
                layer.trainable = flag

    def get_config(self):
        config = super().get_config()
        config.update({
            "tokenizer": keras.saving.serialize_keras_object(self.tokenizer),
            "palette": self.palette, "palette_seed": self.palette_seed,
            "maskige_decoder": self.maskige_decoder, "mla_depth": self.mla_depth,
            "mla_heads": self.mla_heads, "window_size": self.window_size,
            "token_hidden_dim": self.token_hidden_dim,
            "token_loss_weight": self.token_loss_weight,
            "pixel_loss_weight": self.pixel_loss_weight,
            "decoder_config": self.decoder_config,
        })
        return config


class _MaskigeDecoderStage(keras.Model):
    """The learned `X⁻¹` on the segmenter's predicted maskiges: the decoder's training view."""

    def __init__(self, segmenter):
        super().__init__(name="maskige_decoder_stage")
        self.segmenter = segmenter
        self.decoder = segmenter.learned_decoder

    def call(self, images, training=False):
        maskige = self.segmenter._graphs.inference(images, training=False)["maskige"]
        maskige = ops.stop_gradient(maskige)
        return self.decoder(maskige, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = ops.cast(y, "int32")
        if len(labels.shape) == 4:
            labels = labels[..., 0]
        if self.segmenter.maskige_scale > 1:  # the decoder reads 2× maskiges
            y_pred = ops.image.resize(y_pred, labels.shape[1:3], interpolation="bilinear")
        return sparse_categorical_crossentropy(labels, y_pred, self.segmenter.ignore_index)

"""Backbone architectures of the zoo and the dense-feature tap the heads use."""

import keras
import keras_hub

from keras_gss.utils.checks import check_choice

# MiT-B0..B5 (Xie et al., SegFormer, Table 6) and their decoder widths.
MIT_VARIANTS = {
    "b0": {"hidden_dims": [32, 64, 160, 256], "depths": [2, 2, 2, 2],
           "decoder": 256},
    "b1": {"hidden_dims": [64, 128, 320, 512], "depths": [2, 2, 2, 2],
           "decoder": 256},
    "b2": {"hidden_dims": [64, 128, 320, 512], "depths": [3, 4, 6, 3],
           "decoder": 768},
    "b3": {"hidden_dims": [64, 128, 320, 512], "depths": [3, 4, 18, 3],
           "decoder": 768},
    "b4": {"hidden_dims": [64, 128, 320, 512], "depths": [3, 8, 27, 3],
           "decoder": 768},
    "b5": {"hidden_dims": [64, 128, 320, 512], "depths": [3, 6, 40, 3],
           "decoder": 768},
}
RESNET_DEPTHS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}


def segformer_backbone(
    variant="b0", image_shape=(512, 512, 3), hidden_dims=None, depths=None,
    projection_filters=None, num_heads=None, drop_path_rate=0.1, decoder="segformer",
):
    """A keras-hub SegFormer backbone on an MiT encoder.

    Args:
        variant: `"b0"` … `"b5"`, or `None` with explicit sizes.
        image_shape: tuple. Input shape (keras-hub's MiT is fixed-size).
        hidden_dims, depths, projection_filters: override the variant
            (tiny test configs use `hidden_dims=[4, 8]`).
        num_heads: attention heads per stage; each must divide its width.
            Defaults to MiT's `[1, 2, 5, 8]`.
        drop_path_rate: stochastic depth of the last block. Defaults to
            `0.1` (SegFormer).
        decoder: `"segformer"` (keras-hub's `SegFormerBackbone`, the
            paper's all-MLP decoder) or `"mmseg"` (`MMSegSegFormerBackbone`,
            the head of the mmseg code the GMMSeg authors trained).
    """
    check_choice("decoder", decoder, SEGFORMER_DECODERS)
    encoder = mit_backbone(variant, image_shape, hidden_dims=hidden_dims, depths=depths,
                           num_heads=num_heads, drop_path_rate=drop_path_rate)
    spec = MIT_VARIANTS[variant] if variant else {}
    return SEGFORMER_DECODERS[decoder](
        image_encoder=encoder,
        projection_filters=projection_filters or spec.get("decoder", 256),
    )


def deeplabv3plus_backbone(
    variant="resnet50", image_shape=(512, 512, 3), stackwise_num_filters=None,
    stackwise_num_blocks=None,
):
    """A keras-hub DeepLabV3+ backbone on a ResNet encoder.

    keras-hub's ResNet has no dilation, so the encoder runs at output
    stride 32 and the ASPP output is upsampled 8× to meet the stride-4
    low-level features (the paper's models use output stride 8).
    """
    encoder = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64],
        input_conv_kernel_sizes=[7],
        stackwise_num_filters=stackwise_num_filters or [64, 128, 256, 512],
        stackwise_num_blocks=stackwise_num_blocks or RESNET_DEPTHS[variant],
        stackwise_num_strides=[1, 2, 2, 2],
        block_type="bottleneck_block",
        use_pre_activation=False,
        image_shape=tuple(image_shape),
    )
    return keras_hub.models.DeepLabV3Backbone(
        image_encoder=encoder,
        spatial_pyramid_pooling_key="P5",
        upsampling_size=8,
        dilation_rates=[6, 12, 18],
        low_level_feature_key="P2",
        image_shape=tuple(image_shape),
    )


def resnet_backbone(variant="resnet50", image_shape=(224, 224, 3)):
    """A keras-hub ResNet-50/101 image encoder (bottleneck blocks, no pre-activation).

    Its output is the stride-32 map; image classifiers pool it.
    """
    return keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7],
        stackwise_num_filters=[64, 128, 256, 512], stackwise_num_blocks=RESNET_DEPTHS[variant],
        stackwise_num_strides=[1, 2, 2, 2], block_type="bottleneck_block",
        use_pre_activation=False, image_shape=tuple(image_shape))


def mit_backbone(variant="b0", image_shape=(224, 224, 3), hidden_dims=None, depths=None,
                 num_heads=None, drop_path_rate=0.1):
    """A keras-hub MiT-B0…B5 image encoder (SegFormer's, without its decoder).

    Arguments as `segformer_backbone`'s.
    """
    spec = dict(MIT_VARIANTS[variant]) if variant else {}
    hidden_dims = hidden_dims or spec["hidden_dims"]
    depths = depths or spec.get("depths") or [1] * len(hidden_dims)
    levels = len(hidden_dims)
    num_heads = list(num_heads or [1, 2, 5, 8][:levels])
    for stage, (width, heads) in enumerate(zip(hidden_dims, num_heads)):
        if width % heads:
            raise ValueError(
                f"`hidden_dims[{stage}]`={width} is not divisible by "
                f"`num_heads[{stage}]`={heads}; pass `num_heads` that divide "
                "the stage widths."
            )
    return keras_hub.models.MiTBackbone(
        layerwise_depths=depths,
        num_layers=levels,
        layerwise_num_heads=num_heads,
        layerwise_sr_ratios=[8, 4, 2, 1][:levels],
        max_drop_path_rate=drop_path_rate,
        layerwise_patch_sizes=[7, 3, 3, 3][:levels],
        layerwise_strides=[4, 2, 2, 2][:levels],
        image_shape=tuple(image_shape),
        hidden_dims=hidden_dims,
    )


@keras.saving.register_keras_serializable(package="keras_gss")
class DigitCNNBackbone(keras_hub.models.Backbone):
    """A small CNN for 28×28 digits: per stage two 3×3 conv + BN + ReLU, then 2× pooling.

    Trained from scratch in minutes on CPU, as L-GMM trains its encoders
    from scratch; its output is the last stage's map (7×7 for 28×28 and 3
    stages). A keras-hub `Backbone`, so its tasks save to presets.

    Args:
        image_shape: tuple. Input shape. Defaults to `(28, 28, 1)`.
        filters: widths of the stages. Defaults to `(32, 64, 128)`.
        normalization: `"batch"` (BatchNorm, momentum 0.9) or `"group"`
            (GroupNorm, 8 groups: no batch statistics, so training and
            inference normalise alike; see `docs/lgmm.md`). Defaults to
            `"batch"`.
    """

    def __init__(self, image_shape=(28, 28, 1), filters=(32, 64, 128), normalization="batch",
                 **kwargs):
        check_choice("normalization", normalization, ("group", "batch"))
        inputs = keras.Input(shape=tuple(image_shape), name="images")
        x = inputs
        for stage, width in enumerate(filters):
            for conv in range(2):
                x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False,
                                        name=f"stage{stage}_conv{conv}")(x)
                if normalization == "group":  # no batch statistics: train and test alike
                    x = keras.layers.GroupNormalization(min(8, width),
                                                        name=f"stage{stage}_gn{conv}")(x)
                else:  # momentum 0.9: moving statistics settle within a short run
                    x = keras.layers.BatchNormalization(momentum=0.9,
                                                        name=f"stage{stage}_bn{conv}")(x)
                x = keras.layers.ReLU(name=f"stage{stage}_relu{conv}")(x)
            if stage < len(filters) - 1:
                x = keras.layers.MaxPooling2D(2, name=f"stage{stage}_pool")(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.image_shape = tuple(image_shape)
        self.filters = list(filters)
        self.normalization = normalization

    def get_config(self):
        config = super().get_config()
        config.update({"image_shape": self.image_shape, "filters": self.filters,
                       "normalization": self.normalization})
        return config


@keras.saving.register_keras_serializable(package="keras_gss")
class MMSegSegFormerBackbone(keras_hub.models.Backbone):
    """An MiT encoder with mmseg's SegFormer head, the decoder GMMSeg's authors trained.

    mmseg's `SegformerHead` differs from SegFormer's (and keras-hub's) all-MLP
    decoder: each level's 1×1 projection has no bias and is followed by
    BatchNorm and ReLU, and the levels are concatenated finest first. Its
    BatchNorm epsilon is PyTorch's, 1e-5. Use it to load the authors'
    checkpoints (`keras_gss.convert`); the output is the fused stride-4 map.

    Args:
        image_encoder: a keras-hub `MiTBackbone`.
        projection_filters: int. Width of the projections and the fused map.
    """

    def __init__(self, image_encoder, projection_filters=768, **kwargs):
        inputs = keras.Input(shape=image_encoder.input.shape[1:], name="images")
        pyramid = keras.Model(image_encoder.inputs, image_encoder.pyramid_outputs)(inputs)
        levels = sorted(pyramid, key=lambda level: pyramid[level].shape[1], reverse=True)
        size = tuple(pyramid[levels[0]].shape[1:3])
        projected = []
        for index, level in enumerate(levels):
            x = keras.layers.Conv2D(projection_filters, 1, use_bias=False,
                                    name=f"level_{index}_conv")(pyramid[level])
            x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9,
                                                name=f"level_{index}_norm")(x)
            x = keras.layers.ReLU(name=f"level_{index}_relu")(x)
            if tuple(x.shape[1:3]) != size:
                x = keras.layers.Resizing(*size, interpolation="bilinear",
                                          name=f"level_{index}_resize")(x)
            projected.append(x)
        x = keras.layers.Concatenate(name="concat")(projected)
        x = keras.layers.Conv2D(projection_filters, 1, use_bias=False, name="fusion_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=1e-5, momentum=0.9, name="fusion_norm")(x)
        x = keras.layers.ReLU(name="fusion_relu")(x)
        super().__init__(inputs=inputs, outputs=x, **kwargs)
        self.image_encoder = image_encoder
        self.projection_filters = projection_filters

    def get_config(self):
        config = super().get_config()
        config.update({"image_encoder": keras.saving.serialize_keras_object(self.image_encoder),
                       "projection_filters": self.projection_filters})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["image_encoder"] = keras.saving.deserialize_keras_object(config["image_encoder"])
        return cls(**config)


SEGFORMER_DECODERS = {"segformer": keras_hub.models.SegFormerBackbone,
                      "mmseg": MMSegSegFormerBackbone}


def digit_cnn_backbone(variant=None, image_shape=(28, 28, 1), filters=(32, 64, 128)):
    """A `DigitCNNBackbone` (`variant` is unused: one size)."""
    del variant
    return DigitCNNBackbone(image_shape=image_shape, filters=filters)


def build_backbone(architecture, variant, image_shape, **options):
    """Build a zoo backbone by name: `"segformer"`, `"deeplabv3plus"` (segmenters),
    `"resnet"`, `"mit"` or `"digit_cnn"` (image classifiers).

    `options` go to the builder (e.g. `hidden_dims` for a custom MiT).
    """
    builders = {
        "segformer": segformer_backbone,
        "deeplabv3plus": deeplabv3plus_backbone,
        "resnet": resnet_backbone,
        "mit": mit_backbone,
        "digit_cnn": digit_cnn_backbone,
    }
    if architecture not in builders:
        raise ValueError(
            f"Unknown backbone architecture {architecture!r}; expected one of "
            f"{sorted(builders)}."
        )
    return builders[architecture](variant=variant, image_shape=image_shape, **options)


def dense_features(backbone):
    """A model giving the backbone's dense decoder features at stride 4.

    SegFormer's decoder already ends at stride 4. keras-hub's DeepLabV3+
    upsamples its decoder to full resolution; heads are cheaper and match
    the paper at stride 4, so the tap is taken before that upsampling.
    Any other backbone's output is used as it is.
    """
    try:
        upsampling = backbone.get_layer("backbone_output_upsampling")
    except ValueError:
        upsampling = None
    if upsampling is None:
        return backbone
    return keras.Model(
        backbone.inputs, upsampling.input, name="dense_features"
    )


def _pyramid(backbone, layer_names):
    """`{level: tensor}` of a backbone's feature pyramid, from whichever API it has."""
    if layer_names:  # any model with named layers, e.g. keras.applications
        return {level: backbone.get_layer(name).output for level, name in layer_names.items()}
    outputs = getattr(backbone, "pyramid_outputs", None)  # keras-hub FeaturePyramidBackbone
    if outputs:
        return dict(outputs)
    inputs = getattr(backbone, "pyramid_level_inputs", None)  # keras-cv backbones
    if inputs:
        return {level: backbone.get_layer(name).output for level, name in inputs.items()}
    raise ValueError(
        f"`backbone` {backbone.name!r} exposes no feature pyramid (no `pyramid_outputs` or "
        "`pyramid_level_inputs`); pass `layer_names={'P2': ..., 'P3': ...}` naming its "
        "stride-4, 8, ... layers."
    )


def pyramid_features(backbone, layer_names=None, channels=256, name="pyramid_features"):
    """Dense stride-4 features from any backbone with a feature pyramid.

    Each level is projected to `channels` by a 1×1 convolution, resized to
    the finest level and the levels are fused by concatenation and a 1×1
    convolution with BatchNorm and ReLU (SegFormer's all-MLP decoder). The
    result is a model the segmenters take as their `backbone`.

    Args:
        backbone: a keras-hub `FeaturePyramidBackbone` (`pyramid_outputs`),
            a keras-cv backbone (`pyramid_level_inputs`), or any functional
            Keras model with `layer_names`.
        layer_names: dict level -> layer name (e.g. `{"P2":
            "conv2_block3_out", ...}` for `keras.applications.ResNet50`), or
            `None` to read the backbone's own pyramid.
        channels: int. Width of the fused features. Defaults to `256`.

    Example:

    >>> import keras
    >>> resnet = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    >>> features = pyramid_features(resnet, {"P2": "conv2_block3_out",
    ...                                      "P3": "conv3_block4_out"}, channels=32)
    >>> tuple(features.output.shape)
    (None, 16, 16, 32)
    """
    pyramid = _pyramid(backbone, layer_names)
    levels = sorted(pyramid, key=lambda level: pyramid[level].shape[1], reverse=True)
    finest = pyramid[levels[0]]
    size = tuple(finest.shape[1:3])
    projected = []
    for level in levels:
        x = keras.layers.Conv2D(channels, 1, name=f"{name}_{level}_projection")(pyramid[level])
        if tuple(x.shape[1:3]) != size:
            x = keras.layers.Resizing(*size, interpolation="bilinear",
                                      name=f"{name}_{level}_resize")(x)
        projected.append(x)
    x = (keras.layers.Concatenate(name=f"{name}_concat")(projected)
         if len(projected) > 1 else projected[0])
    x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_fuse")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_fuse_norm")(x)
    x = keras.layers.ReLU(name=f"{name}_fuse_relu")(x)
    # One input as a tensor, not a one-item list: the segmenters read `input.shape`.
    inputs = backbone.inputs[0] if len(backbone.inputs) == 1 else backbone.inputs
    return keras.Model(inputs, x, name=name)

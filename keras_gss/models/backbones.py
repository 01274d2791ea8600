"""Backbone architectures of the zoo and the dense-feature tap the heads use."""

import keras
import keras_hub

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
    projection_filters=None, num_heads=None, drop_path_rate=0.1,
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
    encoder = keras_hub.models.MiTBackbone(
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
    return keras_hub.models.SegFormerBackbone(
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


def build_backbone(architecture, variant, image_shape, **options):
    """Build a zoo backbone by name (`"segformer"` or `"deeplabv3plus"`).

    `options` go to the builder (e.g. `hidden_dims` for a custom MiT).
    """
    builders = {
        "segformer": segformer_backbone,
        "deeplabv3plus": deeplabv3plus_backbone,
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

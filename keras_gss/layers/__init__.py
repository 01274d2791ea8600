"""Public layers of keras_gss."""

from keras_gss.layers.conv_maskige_decoder import ConvMaskigeDecoder
from keras_gss.layers.dataset_posterior_head import DatasetPosteriorHead
from keras_gss.layers.feature_memory import FeatureMemory
from keras_gss.layers.gaussian_mixture_head import GaussianMixtureHead
from keras_gss.layers.hybrid_anomaly_score import HybridAnomalyScore
from keras_gss.layers.input_errors import InputErrors
from keras_gss.layers.maskige_codec import MaskigeCodec
from keras_gss.layers.swin_blocks import SwinBlocks
from keras_gss.layers.swin_maskige_decoder import SwinMaskigeDecoder

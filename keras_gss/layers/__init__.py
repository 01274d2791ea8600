"""Public layers of keras_gss."""

from keras_gss.layers.feature_memory import FeatureMemory
from keras_gss.layers.gaussian_mixture_head import GaussianMixtureHead
from keras_gss.layers.input_errors import InputErrors

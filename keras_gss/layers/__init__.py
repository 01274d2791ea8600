"""Public layers of keras_gss."""

from keras_gss.layers.dataset_posterior_head import DatasetPosteriorHead
from keras_gss.layers.feature_memory import FeatureMemory
from keras_gss.layers.gaussian_mixture_head import GaussianMixtureHead
from keras_gss.layers.hybrid_anomaly_score import HybridAnomalyScore
from keras_gss.layers.input_errors import InputErrors

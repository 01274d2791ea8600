"""Datasets: generated scenes for tests and the quick start."""

from keras_gss.data.colour_scenes import colour_scenes
from keras_gss.data.digit_scenes import DigitScenes
from keras_gss.data.normalization import normalize_images

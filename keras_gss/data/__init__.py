"""Datasets: generated scenes for tests and the quick start."""

from keras_gss.data.colour_scenes import colour_scenes

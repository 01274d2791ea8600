"""GMMSeg: its task and zoo presets, registered on import."""

from keras_gss.models.gmmseg.gmmseg_image_segmenter import GMMSegImageSegmenter
from keras_gss.models.gmmseg.gmmseg_presets import presets
from keras_gss.presets import register_presets

register_presets(presets, GMMSegImageSegmenter)

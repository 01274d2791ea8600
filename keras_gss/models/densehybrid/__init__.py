"""DenseHybrid (Grcić & Šegvić): dataset posterior, hybrid score, synthetic negatives.

Its task and zoo presets are registered on import.
"""

from keras_gss.models.densehybrid.densehybrid_image_segmenter import DenseHybridImageSegmenter
from keras_gss.models.densehybrid.densehybrid_presets import presets
from keras_gss.models.densehybrid.normalizing_flow import NormalizingFlow
from keras_gss.models.densehybrid.normalizing_flow import pretrain_flow
from keras_gss.presets import register_presets

register_presets(presets, DenseHybridImageSegmenter)

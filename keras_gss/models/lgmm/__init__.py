"""L-GMM: a latent Gaussian mixture trained collaboratively, for images and pixels.

Its tasks and zoo presets are registered on import.
"""

from keras_gss.models.lgmm.collaborative import LatentGMM
from keras_gss.models.lgmm.lgmm_image_classifier import LGMMImageClassifier
from keras_gss.models.lgmm.lgmm_image_segmenter import LGMMImageSegmenter
from keras_gss.models.lgmm.lgmm_presets import classifier_presets
from keras_gss.models.lgmm.lgmm_presets import segmenter_presets
from keras_gss.presets import register_presets

register_presets(classifier_presets, LGMMImageClassifier)
register_presets(segmenter_presets, LGMMImageSegmenter)

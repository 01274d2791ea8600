"""GSS (Chen et al.): masks as colour images, a frozen tokenizer, a token prior.

Its task and zoo presets are registered on import; `TOKENIZER_PRESETS` names the
tokenizers `DiscreteVAE.from_preset` builds.
"""

from keras_gss.models.gss.discrete_vae import DiscreteVAE
from keras_gss.models.gss.gss_image_segmenter import GSSImageSegmenter
from keras_gss.models.gss.gss_presets import TOKENIZER_PRESETS
from keras_gss.models.gss.gss_presets import presets
from keras_gss.presets import register_presets

register_presets(presets, GSSImageSegmenter)

"""GSS (Chen et al.): masks as colour images, a frozen tokenizer, a token prior."""

from keras_gss.models.gss.discrete_vae import DiscreteVAE
from keras_gss.models.gss.gss_image_segmenter import GSSImageSegmenter

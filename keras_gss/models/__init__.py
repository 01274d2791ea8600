"""Task models of keras_gss, one folder per family."""

from keras_gss.models.backbones import build_backbone
from keras_gss.models.backbones import deeplabv3plus_backbone
from keras_gss.models.backbones import dense_features
from keras_gss.models.backbones import pyramid_features
from keras_gss.models.backbones import segformer_backbone
from keras_gss.models.gmmseg import GMMSegImageSegmenter
from keras_gss.models.open_set import open_set_prediction

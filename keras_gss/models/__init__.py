"""Task models of keras_gss: the shared base, the softmax baseline, one folder per family.

Importing this package registers every family's task class and zoo presets.
"""

from keras_gss.models.backbones import DigitCNNBackbone
from keras_gss.models.backbones import build_backbone
from keras_gss.models.backbones import deeplabv3plus_backbone
from keras_gss.models.backbones import dense_features
from keras_gss.models.backbones import pyramid_features
from keras_gss.models.backbones import segformer_backbone
from keras_gss.models.densehybrid import DenseHybridImageSegmenter
from keras_gss.models.densehybrid import NormalizingFlow
from keras_gss.models.densehybrid import pretrain_flow
from keras_gss.models.gmmseg import GMMSegImageSegmenter
from keras_gss.models.gss import DiscreteVAE
from keras_gss.models.gss import GSSImageSegmenter
from keras_gss.models.lgmm import LatentGMM
from keras_gss.models.lgmm import LGMMImageClassifier
from keras_gss.models.lgmm import LGMMImageSegmenter
from keras_gss.models.open_set import open_set_prediction
from keras_gss.models.open_set_image_classifier import OpenSetImageClassifier
from keras_gss.models.open_set_image_classifier import SoftmaxImageClassifier
from keras_gss.models.open_set_image_segmenter import OpenSetImageSegmenter
from keras_gss.models.softmax_image_segmenter import SoftmaxImageSegmenter
from keras_gss.models.softmax_presets import presets as _softmax_presets
from keras_gss.presets import register_presets

register_presets(_softmax_presets, SoftmaxImageSegmenter)

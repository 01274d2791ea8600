"""keras_gss: generative and open-set semantic segmentation for Keras 3.

Importing the package registers every layer, model and callback for
serialization under the package name `keras_gss`.
"""

from keras_gss import baselines
from keras_gss import callbacks
from keras_gss import layers
from keras_gss import metrics
from keras_gss import models
from keras_gss import optimizers
from keras_gss import training
from keras_gss.evaluation import evaluate
from keras_gss.evaluation import format_table
from keras_gss.hub import download_preset
from keras_gss.inference import predict_sliding_window
from keras_gss.hub import publish_preset
from keras_gss.hub import verify_preset
from keras_gss.presets import from_preset
from keras_gss.presets import list_presets
from keras_gss.training import train_recipe
from keras_gss.version import __version__

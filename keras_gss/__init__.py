"""keras_gss: generative and open-set semantic segmentation for Keras 3.

Importing the package registers every layer, model and callback for
serialization under the package name `keras_gss`. TensorFlow's C++
start-up log (absl, oneDNN, CUDA probes) is kept out of stderr.
"""

from keras_gss.utils.quiet import import_quietly

import_quietly(["keras"])  # loads the backend once, before anything else does

from keras_gss import baselines  # noqa: E402
from keras_gss import callbacks  # noqa: E402
from keras_gss import layers  # noqa: E402
from keras_gss import metrics  # noqa: E402
from keras_gss import models  # noqa: E402
from keras_gss import ops  # noqa: E402
from keras_gss import optimizers  # noqa: E402
from keras_gss import training  # noqa: E402
from keras_gss.evaluation import evaluate  # noqa: E402
from keras_gss.evaluation import evaluate_osr  # noqa: E402
from keras_gss.evaluation import format_table  # noqa: E402
from keras_gss.hub import download_preset  # noqa: E402
from keras_gss.inference import predict_sliding_window  # noqa: E402
from keras_gss.presets import from_preset  # noqa: E402
from keras_gss.presets import list_presets  # noqa: E402
from keras_gss.presets import publish_preset  # noqa: E402
from keras_gss.presets import verify_preset  # noqa: E402
from keras_gss.training import train_recipe  # noqa: E402
from keras_gss.version import __version__  # noqa: E402

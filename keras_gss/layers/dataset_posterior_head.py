"""DenseHybrid's dataset-posterior head on the pre-logit features."""

import keras


@keras.saving.register_keras_serializable(package="keras_gss")
class DatasetPosteriorHead(keras.layers.Layer):
    """BN → ReLU → 1×1 conv to one logit `g`, with `P(d_in|x) = σ(g)` (DenseHybrid Eq. 8).

    It reads the pre-logit features `z` beside the class head and changes
    nothing in it. The authors' code outputs two channels under a softmax,
    which is the same as a sigmoid of their difference; one channel is used
    here. BatchNorm momentum 0.99 is the code's PyTorch 0.01.

    Example:

    >>> import numpy as np
    >>> head = DatasetPosteriorHead()
    >>> tuple(head(np.zeros((2, 4, 4, 8), "float32")).shape)
    (2, 4, 4, 1)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.norm = keras.layers.BatchNormalization(momentum=0.99, name="norm")
        self.relu = keras.layers.ReLU(name="relu")
        self.conv = keras.layers.Conv2D(1, 1, use_bias=True, name="conv")

    def build(self, input_shape):
        self.norm.build(input_shape)
        self.conv.build(tuple(input_shape[:-1]) + (input_shape[-1],))
        self.built = True

    def call(self, features, training=None):
        return self.conv(self.relu(self.norm(features, training=training)))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (1,)

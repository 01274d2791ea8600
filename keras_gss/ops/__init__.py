"""Pure functions in `keras.ops`: Gaussian-mixture maths and the Sinkhorn E-step.

Everything runs in float32 and in the log domain, whatever the dtype policy.
"""

from keras_gss.ops.gaussian_mixture import diagonal_gaussian_log_likelihood
from keras_gss.ops.gaussian_mixture import moments_from_sums
from keras_gss.ops.gaussian_mixture import momentum_m_step
from keras_gss.ops.gaussian_mixture import reduce_components
from keras_gss.ops.sinkhorn import sinkhorn_knopp

"""Training callbacks of keras_gss."""

from keras_gss.callbacks.sinkhorn_em import SinkhornEM
from keras_gss.callbacks.sinkhorn_em import momentum_m_step

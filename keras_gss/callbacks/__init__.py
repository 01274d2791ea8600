"""Training callbacks of keras_gss."""

from keras_gss.callbacks.sinkhorn_em import SinkhornEM

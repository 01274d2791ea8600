"""Momentum Sinkhorn EM for Gaussian-mixture heads (GMMSeg §3.3)."""

import warnings

import keras
import numpy as np
from keras import ops

from keras_gss.ops.gaussian_mixture import momentum_m_step
from keras_gss.utils.checks import check_positive


@keras.saving.register_keras_serializable(package="keras_gss")
class SinkhornEM(keras.callbacks.Callback):
    """Fits a model's Gaussian mixture by momentum Sinkhorn EM during `fit`.

    The E-step (Sinkhorn assignments, GMMSeg Eq. 10) and the memory writes
    happen inside each training step; this callback runs the M-step from the
    filled memory entries every `update_interval` steps and blends it in
    with momentum, so the GMM follows the evolving feature space without any
    gradient reaching it. As in the authors' code, an M-step refits only the
    classes labelled in the step that triggers it (`feature_memory.present`).
    It refuses to write non-finite parameters. The schedule follows the
    memory's step counter, which is saved with the model, so a resumed training continues it.

    The model must expose `gmm_head` (a `GaussianMixtureHead`) and
    `feature_memory` (a `FeatureMemory`), as `GMMSegImageSegmenter` does.

    Args:
        update_interval: int. Steps between M-steps (authors' code: 5).
            Defaults to `5`.
        mean_momentum: float. Momentum γ_μ of the means (paper: 0.999).
            Defaults to `0.999`.
        scale_momentum: float. Momentum γ_σ of the scales; the authors'
            code replaces them every M-step. Defaults to `0.0`.
        starvation_steps: int or None. Warn once for each class whose
            queues received no write for this many steps while training
            (with the correct-only memory: none of its pixels was classified
            correctly). Such a class keeps stale, broad Gaussians whose
            log-determinant term loses the posterior to the fitted classes,
            so it stays locked out. `None` disables. Defaults to `500`.
        verbose: int. `1` prints a line per M-step. Defaults to `0`.

    Example:

    ```python
    model.fit(images, labels, epochs=1,
              callbacks=[keras_gss.callbacks.SinkhornEM(update_interval=5)])
    ```

    Reference:
        Liang et al., "GMMSeg", NeurIPS 2022, §3.3 (momentum EM);
        Mena et al., "Sinkhorn EM", 2020.
    """

    def __init__(
        self, update_interval=5, mean_momentum=0.999, scale_momentum=0.0,
        starvation_steps=500, verbose=0,
    ):
        super().__init__()
        check_positive("update_interval", update_interval, integer=True)
        if starvation_steps is not None:
            check_positive("starvation_steps", starvation_steps, integer=True)
        for name, value in (("mean_momentum", mean_momentum),
                            ("scale_momentum", scale_momentum)):
            if not 0.0 <= value < 1.0:
                raise ValueError(
                    f"`{name}` must lie in [0, 1); received {value!r}."
                )
        self.update_interval = update_interval
        self.mean_momentum = mean_momentum
        self.scale_momentum = scale_momentum
        self.starvation_steps = starvation_steps
        self.verbose = verbose
        self.starved_classes = []
        self._updates_done = None
        self._written = None  # (pointer, count, step of the last write) per class

    def get_config(self):
        return {
            "update_interval": self.update_interval,
            "mean_momentum": self.mean_momentum,
            "scale_momentum": self.scale_momentum,
            "starvation_steps": self.starvation_steps,
            "verbose": self.verbose,
        }

    def _parts(self):
        model = self.model
        head = getattr(model, "gmm_head", None)
        memory = getattr(model, "feature_memory", None)
        if head is None or memory is None:
            raise ValueError(
                "`SinkhornEM` needs a model with `gmm_head` and "
                "`feature_memory` attributes (e.g. "
                "keras_gss.models.GMMSegImageSegmenter); received "
                f"{type(model).__name__}."
            )
        return head, memory

    def on_train_begin(self, logs=None):
        _, memory = self._parts()
        memory.resync()  # exact moments for a fresh, loaded or resumed memory
        step = int(ops.convert_to_numpy(memory.step.value))
        self._updates_done = step // self.update_interval
        self._written = None

    def on_epoch_end(self, epoch, logs=None):
        self._parts()[1].resync()  # clears float32 drift of the running sums

    def on_train_batch_end(self, batch, logs=None):
        head, memory = self._parts()
        step = int(ops.convert_to_numpy(memory.step.value))
        if self._updates_done is None:
            self._updates_done = (step - 1) // self.update_interval
        if step // self.update_interval > self._updates_done:
            self._updates_done = step // self.update_interval
            self.update(head, memory)
            self._check_starvation(head, memory, step)

    def _check_starvation(self, head, memory, step):
        """Warn once per class whose queues have not been written for long."""
        if self.starvation_steps is None:
            return
        state = np.concatenate([ops.convert_to_numpy(memory.pointer.value),
                                ops.convert_to_numpy(memory.count.value)], axis=1)
        if self._written is None:
            self._written = (state, np.full(len(state), step))
            return
        previous, last = self._written
        last = np.where(np.any(state != previous, axis=1), step, last)
        self._written = (state, last)
        for c in np.flatnonzero(step - last >= self.starvation_steps):
            if int(c) in self.starved_classes:
                continue
            self.starved_classes.append(int(c))
            scales = ops.convert_to_numpy(head.scales)
            others = np.delete(scales, c, axis=0)
            warnings.warn(
                f"SinkhornEM: class {c} has had no feature-memory write for "
                f"{step - last[c]} steps (none of its pixels was classified "
                "correctly, or none was seen). Its Gaussians stay stale "
                f"(mean σ {scales[c].mean():.3f}, other classes "
                f"{others.mean():.3f}) and cannot win the posterior. Try "
                "`starved_fallback=True`, a larger `variance_floor` or a "
                "pretrained backbone.",
                stacklevel=2,
            )

    def update(self, head, memory):
        """Run one M-step now and write it into `head`."""
        count, mean, mean_square = memory.component_moments()
        means, scales = momentum_m_step(
            count, mean, mean_square, head.means.value, head.scales.value,
            self.mean_momentum, self.scale_momentum, head.variance_floor,
            refit=memory.present.value,
        )
        means_np = ops.convert_to_numpy(means)
        scales_np = ops.convert_to_numpy(scales)
        if not (np.all(np.isfinite(means_np)) and np.all(np.isfinite(scales_np))):
            raise ValueError(
                "SinkhornEM: the M-step produced non-finite GMM parameters; "
                "they were not written. The feature memory holds non-finite "
                "values: lower the learning rate or check the images."
            )
        shift = float(np.max(np.abs(means_np - ops.convert_to_numpy(head.means))))
        head.means.assign(means)
        head.scales.assign(scales)
        if self.verbose:
            filled = float(np.mean(ops.convert_to_numpy(count) > 0))
            print(
                f"SinkhornEM: M-step at memory step "
                f"{int(ops.convert_to_numpy(memory.step.value))}, "
                f"{filled:.0%} of components filled, max mean shift "
                f"{shift:.2e}"
            )

"""Optimizers and schedules of the papers' training recipes (mmsegmentation's).

`PolyWarmup` is mmseg's poly schedule with linear warm-up; `ParamwiseAdamW`
and `ParamwiseSGD` add mmseg's `paramwise_cfg`: per-variable learning-rate
and weight-decay multipliers (the decode head at 10× the backbone's rate,
no decay on normalisation layers). `build_optimizer` makes either from a
recipe's settings for a model.
"""

import re

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_gss")
class PolyWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """Poly decay to `min_lr` over `decay_steps` after a linear warm-up.

    `lr(t) = (base - min_lr) (1 - t / decay_steps)^power + min_lr`; during the
    first `warmup_steps` it is scaled by `1 - (1 - t / warmup_steps)(1 -
    warmup_ratio)`, rising from `warmup_ratio × lr` (mmseg's `PolyLrUpdater`).

    Example:

    >>> schedule = PolyWarmup(6e-5, decay_steps=100, warmup_steps=10)
    >>> round(float(schedule(0)), 12), round(float(schedule(10)), 8), float(schedule(100))
    (6e-11, 5.4e-05, 0.0)
    """

    def __init__(self, initial_learning_rate, decay_steps, power=1.0, min_lr=0.0,
                 warmup_steps=0, warmup_ratio=1e-6):
        if decay_steps <= 0:
            raise ValueError(f"`decay_steps` must be positive; received {decay_steps}.")
        if not 0 <= warmup_steps < decay_steps:
            raise ValueError(
                f"`warmup_steps` must be in [0, decay_steps={decay_steps}); "
                f"received {warmup_steps}."
            )
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.power = float(power)
        self.min_lr = float(min_lr)
        self.warmup_steps = int(warmup_steps)
        self.warmup_ratio = float(warmup_ratio)

    def __call__(self, step):
        step = ops.minimum(ops.cast(step, "float32"), float(self.decay_steps))
        progress = (self.decay_steps - step) / self.decay_steps  # exact near the end
        lr = (self.initial_learning_rate - self.min_lr) * progress ** self.power + self.min_lr
        if not self.warmup_steps:
            return lr
        # 1 - (1 - t/w)(1 - r), written without float32 cancellation at small t.
        done = ops.minimum(step / self.warmup_steps, 1.0)
        return lr * (self.warmup_ratio + (1.0 - self.warmup_ratio) * done)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "power": self.power, "min_lr": self.min_lr,
                "warmup_steps": self.warmup_steps, "warmup_ratio": self.warmup_ratio}


class _Paramwise:
    """Per-variable lr and weight-decay multipliers, keyed by variable path.

    Decay is decoupled and applied in `update_step`, scaled by the variable's
    own learning rate as PyTorch's per-group AdamW does, so it runs inside
    `tf.distribute`'s per-variable update like the rest of the step.
    """

    def __init__(self, *args, lr_multipliers=None, decay_multipliers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lr_multipliers = {str(k): float(v) for k, v in (lr_multipliers or {}).items()}
        self.decay_multipliers = {str(k): float(v)
                                  for k, v in (decay_multipliers or {}).items()}

    def build(self, variables):
        super().build(variables)
        self._multipliers = [
            (self.lr_multipliers.get(v.path, 1.0), self.decay_multipliers.get(v.path, 1.0))
            for v in variables
        ]

    def _apply_weight_decay(self, variables):
        return  # done per variable in update_step

    def update_step(self, gradient, variable, learning_rate):
        lr_mult, decay_mult = self._multipliers[self._get_variable_index(variable)]
        learning_rate = ops.cast(learning_rate, variable.dtype) * lr_mult
        if self.weight_decay and decay_mult:
            decay = ops.cast(self.weight_decay * decay_mult, variable.dtype)
            self.assign_sub(variable, variable * decay * learning_rate)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        return {**super().get_config(), "lr_multipliers": self.lr_multipliers,
                "decay_multipliers": self.decay_multipliers}


@keras.saving.register_keras_serializable(package="keras_gss")
class ParamwiseAdamW(_Paramwise, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with `lr_multipliers` / `decay_multipliers`
    (dicts variable path -> factor; others 1)."""


@keras.saving.register_keras_serializable(package="keras_gss")
class ParamwiseSGD(_Paramwise, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with `lr_multipliers` / `decay_multipliers`
    (dicts variable path -> factor; others 1)."""


OPTIMIZERS = {"adamw": ParamwiseAdamW, "sgd": ParamwiseSGD}


def head_variables(model):
    """Trainable variables outside the backbone's image encoder: mmseg's `head`
    (for SegFormer the all-MLP decoder too, for DeepLabV3+ ASPP and decoder)."""
    backbone = getattr(model, "backbone", model)
    encoder = getattr(backbone, "image_encoder", backbone)
    encoder_ids = {id(v) for v in encoder.trainable_variables}
    return [v for v in model.trainable_variables if id(v) not in encoder_ids]


def build_optimizer(model, name, learning_rate, total_steps, head_lr_multiplier=1.0,
                    no_decay=(), schedule=None, **options):
    """A recipe's optimizer for `model`: multipliers resolved to variable paths.

    Args:
        model: the task model (built).
        name: `"adamw"` or `"sgd"`.
        learning_rate: base learning rate.
        total_steps: length of the poly schedule.
        head_lr_multiplier: learning-rate factor of `head_variables(model)`.
        no_decay: regular expressions; variables whose path matches one get
            no weight decay (mmseg's `decay_mult=0`, e.g. `"norm"`).
        schedule: dict of `PolyWarmup` options (`power`, `min_lr`,
            `warmup_steps`, `warmup_ratio`), or `None` for a constant rate.
        **options: the optimizer's own arguments (`weight_decay`, `beta_1`,
            `momentum`, ...).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}.")
    paths = [v.path for v in model.trainable_variables]
    if len(set(paths)) != len(paths):
        raise ValueError("The model has trainable variables with the same path; "
                         "paramwise multipliers need unique paths.")
    lr_multipliers = ({v.path: head_lr_multiplier for v in head_variables(model)}
                      if head_lr_multiplier != 1 else {})
    patterns = [re.compile(p) for p in no_decay]
    decay_multipliers = {p: 0.0 for p in paths if any(r.search(p) for r in patterns)}
    rate = (PolyWarmup(learning_rate, total_steps, **schedule) if schedule is not None
            else learning_rate)
    return OPTIMIZERS[name](learning_rate=rate, lr_multipliers=lr_multipliers,
                            decay_multipliers=decay_multipliers, **options)

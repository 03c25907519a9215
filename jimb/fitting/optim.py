"""optax optimizers and learning-rate schedules by name, from the config's `optim` block."""

from __future__ import annotations

import optax

from jimb.registry import Registry

SCHEDULES = Registry("learning-rate schedule", {
    "constant": lambda lr, total, warmup: optax.constant_schedule(lr),
    "cosine": lambda lr, total, warmup: optax.cosine_decay_schedule(
        lr, decay_steps=max(total, 1)),
    "warmup_cosine": lambda lr, total, warmup: optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=max(total, warmup + 1)),
})
# The seeds' optimizers; each takes the schedule and the optim block.
OPTIMIZERS = Registry("optimizer", {
    "adam": lambda lr, cfg: optax.adam(lr),
    "adamw": lambda lr, cfg: optax.adamw(lr, weight_decay=cfg.weight_decay),
    "sgd": lambda lr, cfg: optax.sgd(lr, momentum=cfg.momentum or None, nesterov=False),
    "rmsprop": lambda lr, cfg: optax.rmsprop(lr, momentum=cfg.momentum),
})


def learning_rate_schedule(optim_cfg, total_steps: int, steps_per_epoch: int,
                           scale=None) -> optax.Schedule:
  """The configured schedule, times `scale(step)` when given (parameter groups, warm-ups)."""
  base = SCHEDULES.get(optim_cfg.schedule, "optim.schedule")(
      optim_cfg.learning_rate, total_steps, optim_cfg.warmup_epochs * steps_per_epoch)
  if scale is None:
    return base
  return lambda step: base(step) * scale(step)


def build_optimizer(optim_cfg, total_steps: int, steps_per_epoch: int,
                    scale=None) -> optax.GradientTransformation:
  """The named optimizer over the schedule, with decoupled weight decay where it has none of
  its own, optionally clipped by global norm."""
  make = OPTIMIZERS.get(optim_cfg.name, "optim.name")
  tx = make(learning_rate_schedule(optim_cfg, total_steps, steps_per_epoch, scale), optim_cfg)
  if optim_cfg.weight_decay and optim_cfg.name != "adamw":
    tx = optax.chain(optax.add_decayed_weights(optim_cfg.weight_decay), tx)
  if optim_cfg.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), tx)
  return tx

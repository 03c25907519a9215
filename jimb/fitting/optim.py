"""optax optimizers and learning-rate schedules from the config's `optim` block."""

from __future__ import annotations

import optax

_SCHEDULES = ("constant", "cosine", "warmup_cosine")


def learning_rate_schedule(optim_cfg, total_steps: int, steps_per_epoch: int,
                           scale=None) -> optax.Schedule:
  """The configured schedule, times `scale(step)` when given (parameter groups, warm-ups)."""
  base = _base_schedule(optim_cfg, total_steps, steps_per_epoch)
  if scale is None:
    return base
  return lambda step: base(step) * scale(step)


def _base_schedule(optim_cfg, total_steps: int, steps_per_epoch: int) -> optax.Schedule:
  lr = optim_cfg.learning_rate
  warmup = optim_cfg.warmup_epochs * steps_per_epoch
  if optim_cfg.schedule == "constant":
    return optax.constant_schedule(lr)
  if optim_cfg.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
  if optim_cfg.schedule == "warmup_cosine":
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=warmup, decay_steps=max(total_steps, warmup + 1))
  raise ValueError(f"unknown --config.optim.schedule={optim_cfg.schedule!r}; choose one of {_SCHEDULES}")


def build_optimizer(optim_cfg, total_steps: int, steps_per_epoch: int,
                    scale=None) -> optax.GradientTransformation:
  """Adam, AdamW, SGD with momentum or RMSprop (the seeds' optimizers), optionally clipped."""
  lr = learning_rate_schedule(optim_cfg, total_steps, steps_per_epoch, scale)
  name, wd = optim_cfg.name, optim_cfg.weight_decay
  if name == "adam":
    tx = optax.adam(lr)
  elif name == "adamw":
    tx = optax.adamw(lr, weight_decay=wd)
  elif name == "sgd":
    tx = optax.sgd(lr, momentum=optim_cfg.momentum or None, nesterov=False)
  elif name == "rmsprop":
    tx = optax.rmsprop(lr, momentum=optim_cfg.momentum)
  else:
    raise ValueError(f"unknown --config.optim.name={name!r}; choose adam, adamw, sgd or rmsprop")
  if wd and name != "adamw":
    tx = optax.chain(optax.add_decayed_weights(wd), tx)
  if optim_cfg.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(optim_cfg.grad_clip), tx)
  return tx

"""Transfer-learning schedules: frozen parts, a head-only warm-up, per-group learning rates.

Parameters are grouped by regular expressions over their paths ("blocks/0/conv1/kernel",
"head/out/kernel"; see each model's docstring). Frozen parameters get no update at all
(`optax.set_to_zero`), so they stay bit-identical; during the warm-up every group but the head
has learning rate 0; other groups may scale the learning rate. BatchNorm layers whose parameters
are frozen also keep their running statistics (inference mode) when configured: a frozen
backbone should not drift with the new data's statistics.

The warm-up freezes weights, not BatchNorm statistics: BatchNorm layers outside `freeze` keep
updating their statistics in training mode during the warm-up, as PyTorch-style recipes do.
"""

from __future__ import annotations

import re
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import optax

from jimb.fitting import optim

FROZEN, HEAD, BODY = "frozen", "head", "body"


def path_name(path) -> str:
  """'blocks/0/conv1/kernel' from a pytree path over an nnx.State."""
  return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def parse_multipliers(spec: str) -> list[tuple[str, float]]:
  """"regex:factor;regex:factor" -> [(regex, factor)], in order (the first match wins)."""
  groups = []
  for item in filter(None, (s.strip() for s in spec.split(";"))):
    pattern, sep, factor = item.rpartition(":")
    try:
      groups.append((pattern, float(factor)))
    except ValueError:
      sep = ""
    if not sep or not pattern:
      raise ValueError(f"--config.transfer.lr_multipliers: {item!r} is not 'regex:factor' "
                       "(groups are separated by ';')")
  return groups


def _compile(pattern: str, key: str) -> re.Pattern:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ValueError(f"--config.transfer.{key}={pattern!r} is not a regular expression: {e}") from e


def parameter_labels(params: Any, transfer_cfg) -> Any:
  """A label per parameter: 'frozen', a learning-rate group 'g<i>', 'head' or 'body'.

  A pattern that matches no parameter is an error: a typo must not silently train everything.
  """
  names = []
  jax.tree_util.tree_map_with_path(lambda p, _: names.append(path_name(p)), params)
  rules = []
  if transfer_cfg.freeze:
    rules.append(("freeze", _compile(transfer_cfg.freeze, "freeze"), FROZEN))
  for i, (pattern, _) in enumerate(parse_multipliers(transfer_cfg.lr_multipliers)):
    rules.append(("lr_multipliers", _compile(pattern, "lr_multipliers"), f"g{i}"))
  if transfer_cfg.warmup_epochs:
    rules.append(("head", _compile(transfer_cfg.head, "head"), HEAD))
  for key, regex, _ in rules:
    if not any(regex.search(n) for n in names):
      raise ValueError(
          f"--config.transfer.{key} pattern {regex.pattern!r} matches no parameter; parameter "
          f"paths look like {names[:3]} ... {names[-2:]}")

  def label(path, _):
    name = path_name(path)
    return next((lab for _, regex, lab in rules if regex.search(name)), BODY)

  return jax.tree_util.tree_map_with_path(label, params)


def build_optimizer(optim_cfg, transfer_cfg, total_steps: int,
                    steps_per_epoch: int) -> optax.GradientTransformation:
  """The configured optimizer, split into frozen / warm-up-gated / scaled parameter groups."""
  plain = not (transfer_cfg.freeze or transfer_cfg.warmup_epochs or transfer_cfg.lr_multipliers)
  if plain:
    return optim.build_optimizer(optim_cfg, total_steps, steps_per_epoch)
  start = transfer_cfg.warmup_epochs * steps_per_epoch

  def group(multiplier: float, gated: bool) -> optax.GradientTransformation:
    if gated and start:
      scale = lambda step: jnp.where(step >= start, multiplier, 0.0)
    else:
      scale = lambda step: multiplier
    return optim.build_optimizer(optim_cfg, total_steps, steps_per_epoch, scale=scale)

  transforms = {FROZEN: optax.set_to_zero(), HEAD: group(1.0, gated=False),
                BODY: group(1.0, gated=True)}
  for i, (_, factor) in enumerate(parse_multipliers(transfer_cfg.lr_multipliers)):
    transforms[f"g{i}"] = group(factor, gated=True)
  return optax.multi_transform(transforms, lambda params: parameter_labels(params, transfer_cfg))


def freeze_batch_norm(model: nnx.Module, transfer_cfg) -> nnx.Module:
  """Puts BatchNorm layers whose scale parameter is frozen in inference mode (in place)."""
  if not (transfer_cfg.freeze and transfer_cfg.freeze_batch_norm):
    return model
  regex = _compile(transfer_cfg.freeze, "freeze")
  for path, node in nnx.iter_graph(model):
    if isinstance(node, nnx.BatchNorm) and regex.search("/".join(map(str, path)) + "/scale"):
      node.use_running_average = True
  return model

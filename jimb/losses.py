"""Per-example classification losses, chosen by `config.loss.name`.

Every factory takes the fixed keyword arguments `num_classes` and `class_counts` (the training
part's counts, which re-weighting losses need) plus its own options, and returns a jit-able
`fn(logits (B, K), labels (B,)) -> (B,) float32`. Reduction is left to the caller so that
padded examples can be masked out. Computation is in float32 even for bfloat16 logits.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jimb.registry import Registry

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

LOSSES = Registry("loss")


def build_loss(loss_cfg: Any, class_counts: np.ndarray) -> LossFn:
  """The loss named by `loss_cfg.name`, configured by its other keys."""
  options = {key: value for key, value in dict(loss_cfg).items() if key != "name"}
  class_counts = np.asarray(class_counts)
  if class_counts.ndim != 1 or not class_counts.size:
    raise ValueError(f"class_counts must be a non-empty 1-D array, got shape {class_counts.shape}")
  return LOSSES.build(loss_cfg["name"], options, num_classes=len(class_counts),
                      class_counts=class_counts)


def _true_class_log_prob(logits: jax.Array, labels: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


@LOSSES.register("cross_entropy")
def cross_entropy(*, num_classes: int, class_counts: np.ndarray,
                  label_smoothing: float = 0.0) -> LossFn:
  """Softmax cross-entropy; smoothing mixes the one-hot target with the uniform one (optax)."""
  del class_counts
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}; "
                     "set --config.loss.label_smoothing=0.1 (or 0.0 for none)")

  def fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    target = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    return -jnp.sum(target * logp, axis=-1)

  return fn


def _focal_alpha(alpha: float | Sequence[float] | None, num_classes: int) -> np.ndarray:
  """alpha as a (K,) float32 array: None -> 1, a scalar -> the same for all classes."""
  if alpha is None:
    return np.ones(num_classes, np.float32)
  values = np.asarray(alpha, np.float32)
  if values.ndim == 0:
    values = np.full(num_classes, values, np.float32)
  elif values.shape != (num_classes,):
    raise ValueError(
        f"focal alpha must be a number or one weight per class ({num_classes}), got "
        f"{len(values)} values; set e.g. --config.loss.alpha=0.25 or a list of {num_classes}")
  if not np.all(np.isfinite(values)) or np.any(values < 0):
    raise ValueError(f"focal alpha must be finite and >= 0, got {alpha}; "
                     "set --config.loss.alpha=0.25 (or None for no weighting)")
  return values


@LOSSES.register("focal")
def focal(*, num_classes: int, class_counts: np.ndarray, gamma: float = 2.0,
          alpha: float | Sequence[float] | None = 0.25) -> LossFn:
  """Focal loss -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017), per example.

  `alpha` is a scalar (all classes), one weight per class (alpha_t = alpha[y]) or None (1).
  gamma=0 with alpha=None is cross-entropy.
  """
  del class_counts
  if gamma < 0:
    raise ValueError(f"focal gamma must be >= 0, got {gamma}; set --config.loss.gamma=2.0")
  alpha_per_class = jnp.asarray(_focal_alpha(alpha, num_classes))

  def fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp_t = _true_class_log_prob(logits, labels)
    # 1 - p_t from log p_t without cancellation; floored at the smallest normal float so that
    # the derivative of x**gamma (infinite at 0 for gamma < 1) stays finite when p_t -> 1.
    one_minus_p = jnp.maximum(-jnp.expm1(logp_t), jnp.finfo(jnp.float32).tiny)
    return -alpha_per_class[labels] * one_minus_p ** gamma * logp_t

  return fn

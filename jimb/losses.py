"""Per-example classification losses, chosen by `config.loss.name`, with class re-weighting.

Every factory takes the fixed keyword arguments `num_classes` and `class_counts` (the training
part's counts, which imbalance-aware losses need) plus its own options, and returns an
unweighted `Loss` whose jit-able `fn(logits (B, K), labels (B,)) -> (B,) float32`. Reduction is
left to the caller so that padded examples can be masked out; the caller weights by class as

    mean(w[y] * fn(logits, y)),  w = loss.epoch_weights(epoch)

(a plain mean over the batch, not divided by the sum of the weights), so deferred re-weighting
only swaps an input array and never recompiles. A loss with a `complement` objective (COT) gets a
second update on each batch that minimises it. Computation is in float32 even for bfloat16
logits.

Generic keys of the loss block, valid for every loss and removed before the factory is called:
`class_weights` (""/None, "balanced", "effective_number", or one non-negative number per class
as a list or a comma-separated string, since the command line cannot pass a list),
`beta` (effective-number beta) and `drw_epoch` (the epoch from which the weights apply), and
`instance_weights` ("none" or "icost", with its options in the `icost` sub-block): per-example
weights of the training rows (jimb.resampling.complexity), which the training step multiplies in
as mean(w_i * w[y_i] * fn(logits, y)_i) when a batch carries them.
A class absent from the training part (n_k = 0) gets weight 0 and counts as one example wherever
a loss takes log n_k or n_k ** -1/4, so no value becomes infinite.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jimb.registry import Registry

LossFn = Callable[[jax.Array, jax.Array], jax.Array]

LOSSES = Registry("loss")

CLASS_WEIGHTS = ("balanced", "effective_number")
INSTANCE_WEIGHTS = ("none", "icost")
_GENERIC_DEFAULTS = {"class_weights": "", "beta": 0.9999, "drw_epoch": 0,
                     "instance_weights": "none", "icost": None}


@dataclasses.dataclass(frozen=True, eq=False)
class Loss:
  """A per-example loss plus the class weights and schedule the train step applies to it.

  `fn` is unweighted; the weights are the caller's (see the module docstring) so that they can
  change at `weights_from_epoch` (deferred re-weighting, Cao et al. 2019) without a new program.
  `num_classes` is only needed to give ones when there are no class weights; `build_loss` sets it.
  """

  fn: LossFn
  class_weights: np.ndarray | None = None
  weights_from_epoch: int = 0
  complement: LossFn | None = None
  num_classes: int | None = None

  def __post_init__(self):
    if self.class_weights is None:
      return
    weights = np.array(self.class_weights, np.float32)
    if weights.ndim != 1 or (self.num_classes is not None and len(weights) != self.num_classes):
      raise ValueError(f"class_weights must have shape ({self.num_classes or 'K'},), got "
                       f"{weights.shape}")
    weights.flags.writeable = False
    object.__setattr__(self, "class_weights", weights)
    object.__setattr__(self, "num_classes", len(weights))

  def epoch_weights(self, epoch: int) -> np.ndarray:
    """(K,) float32 class weights for `epoch` (0-based): ones before they switch on."""
    if self.class_weights is not None and epoch >= self.weights_from_epoch:
      return self.class_weights.copy()
    if self.num_classes is None:
      raise ValueError("a Loss without class_weights needs num_classes to give epoch weights")
    return np.ones(self.num_classes, np.float32)

  def __call__(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
    return self.fn(logits, labels)


# Losses whose per-example function ignores the training part's class counts (their class
# weights are a step argument), so folds with other counts share their compiled train step.
# Every other loss is keyed on the counts (tests/test_losses.py checks this list).
COUNT_FREE = ("cross_entropy", "focal", "cot")


def counts_key(name: str, class_counts: np.ndarray) -> tuple[float, ...] | None:
  """The class counts the jitted function of loss `name` depends on: None when COUNT_FREE."""
  return None if name in COUNT_FREE else tuple(np.asarray(class_counts, float).tolist())


def build_loss(loss_cfg: Any, class_counts: np.ndarray) -> Loss:
  """The loss named by `loss_cfg.name`, configured by its other keys."""
  options = {key: value for key, value in dict(loss_cfg).items() if key != "name"}
  generic = {key: options.pop(key, default) for key, default in _GENERIC_DEFAULTS.items()}
  class_counts = _checked_counts(class_counts)
  loss = LOSSES.build(loss_cfg["name"], options, num_classes=len(class_counts),
                      class_counts=class_counts)
  weights = _class_weights(generic["class_weights"], class_counts, _checked_beta(generic["beta"]))
  drw_epoch = _checked_drw_epoch(generic["drw_epoch"], weights)
  if generic["instance_weights"] not in INSTANCE_WEIGHTS:
    raise ValueError(f"unknown --config.loss.instance_weights={generic['instance_weights']!r}; "
                     f"choose one of {INSTANCE_WEIGHTS}")
  return dataclasses.replace(loss, class_weights=weights, weights_from_epoch=drw_epoch,
                             num_classes=len(class_counts))


def adjust_logits(logits: jax.Array, class_counts: np.ndarray, tau: float) -> jax.Array:
  """Post-hoc logit adjustment z - tau * log(prior) (Menon et al. 2021), for evaluation.

  Removes the training prior from a model trained with plain cross-entropy, which moves
  predictions toward rare classes; tau = 0 is the identity.
  """
  class_counts = _checked_counts(class_counts)
  if logits.shape[-1] != len(class_counts):
    raise ValueError(f"logits have {logits.shape[-1]} classes but class_counts has "
                     f"{len(class_counts)}")
  if not np.isfinite(tau):
    raise ValueError(f"logit adjustment tau must be a finite number, got {tau}")
  return jnp.asarray(logits, jnp.float32) - tau * jnp.asarray(_log_prior(class_counts))


def _checked_counts(class_counts: np.ndarray) -> np.ndarray:
  counts = np.asarray(class_counts)
  if counts.ndim != 1 or not counts.size:
    raise ValueError(f"class_counts must be a non-empty 1-D array, got shape {counts.shape}")
  if not np.all(np.isfinite(counts)) or np.any(counts < 0) or not np.any(counts > 0):
    raise ValueError(f"class_counts must be finite, >= 0 and not all 0, got {counts}")
  return counts.astype(np.float64)


def _checked_beta(beta: Any) -> float:
  if isinstance(beta, bool) or not isinstance(beta, (int, float, np.number)) or not (
      0.0 <= beta < 1.0):
    raise ValueError(f"loss beta must be a number in [0, 1), got {beta!r}; "
                     "set --config.loss.beta=0.9999")
  return float(beta)


def _checked_drw_epoch(drw_epoch: Any, weights: np.ndarray | None) -> int:
  if isinstance(drw_epoch, bool) or not isinstance(drw_epoch, (int, np.integer)) or drw_epoch < 0:
    raise ValueError(f"loss drw_epoch must be an integer >= 0, got {drw_epoch!r}; "
                     "set --config.loss.drw_epoch=160 (or 0 to weight from the start)")
  if drw_epoch and weights is None:
    raise ValueError(f"loss drw_epoch={drw_epoch} defers class weights but class_weights is "
                     "None; set --config.loss.class_weights=effective_number or "
                     "--config.loss.drw_epoch=0")
  return int(drw_epoch)


def _class_weights(spec: Any, class_counts: np.ndarray, beta: float) -> np.ndarray | None:
  """(K,) float32 weights from `spec`; the named schemes give absent classes weight 0."""
  if isinstance(spec, str) and spec.strip().lower() in ("", "none"):
    return None
  if spec is None:
    return None
  if isinstance(spec, str) and spec not in CLASS_WEIGHTS:
    try:
      spec = [float(v) for v in spec.split(",")]
    except ValueError:
      pass  # an unknown name: rejected below
  present = class_counts > 0
  safe_counts = np.where(present, class_counts, 1.0)
  if isinstance(spec, str):
    if spec == "balanced":  # n / (K * n_k), as scikit-learn's compute_class_weight.
      raw = class_counts.sum() / (present.sum() * safe_counts)
    elif spec == "effective_number":  # (1 - beta) / (1 - beta^n_k), Cui et al. (2019).
      raw = (1.0 - beta) / (1.0 - np.power(beta, safe_counts))
      raw = raw * present.sum() / raw[present].sum()
    else:
      raise ValueError(f"unknown class_weights {spec!r}; set --config.loss.class_weights to "
                       f"one of {CLASS_WEIGHTS}, a list of {len(class_counts)} weights or None")
    return np.where(present, raw, 0.0).astype(np.float32)
  weights = np.asarray(spec, np.float64)
  if weights.shape != class_counts.shape:
    raise ValueError(f"class_weights needs one weight per class ({len(class_counts)}), got "
                     f"{spec!r}; set --config.loss.class_weights to a list of "
                     f"{len(class_counts)} numbers or one of {CLASS_WEIGHTS}")
  if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not np.any(weights > 0):
    raise ValueError(f"class_weights must be finite, >= 0 and not all 0, got {spec!r}; "
                     "fix --config.loss.class_weights")
  return weights.astype(np.float32)


def _log_prior(class_counts: np.ndarray) -> np.ndarray:
  """log(n_k / n) as float32, an absent class counted as one example so it stays finite."""
  counts = np.maximum(class_counts, 1.0)
  return np.log(counts / counts.sum()).astype(np.float32)


def _checked_smoothing(label_smoothing: float) -> float:
  if not 0.0 <= label_smoothing < 1.0:
    raise ValueError(f"label_smoothing must lie in [0, 1), got {label_smoothing}; "
                     "set --config.loss.label_smoothing=0.1 (or 0.0 for none)")
  return label_smoothing


def _cross_entropy_on(num_classes: int, label_smoothing: float,
                      transform: Callable[[jax.Array, jax.Array], jax.Array] | None = None
                      ) -> LossFn:
  """Cross-entropy of `transform(logits, labels)`, the shared core of the CE-family losses.

  Smoothing mixes the one-hot target with the uniform one (as optax.smooth_labels).
  """
  _checked_smoothing(label_smoothing)

  def fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    z = logits.astype(jnp.float32)
    if transform is not None:
      z = transform(z, labels)
    logp = jax.nn.log_softmax(z, axis=-1)
    target = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    target = target * (1.0 - label_smoothing) + label_smoothing / num_classes
    return -jnp.sum(target * logp, axis=-1)

  return fn


def _class_shift(shift: np.ndarray) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Adds a fixed per-class offset to every row of logits."""
  offset = jnp.asarray(shift, jnp.float32)
  return lambda z, labels: z + offset


@LOSSES.register("cross_entropy")
def cross_entropy(*, num_classes: int, class_counts: np.ndarray,
                  label_smoothing: float = 0.0) -> Loss:
  """Softmax cross-entropy, optionally label-smoothed."""
  del class_counts
  return Loss(_cross_entropy_on(num_classes, label_smoothing))


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
          alpha: float | Sequence[float] | None = 0.25) -> Loss:
  """Focal loss -alpha_t (1 - p_t)^gamma log p_t (Lin et al. 2017), per example.

  `alpha` is a scalar (all classes), one weight per class (alpha_t = alpha[y]) or None (1).
  gamma=0 with alpha=None is cross-entropy.
  """
  del class_counts
  if gamma < 0:
    raise ValueError(f"focal gamma must be >= 0, got {gamma}; set --config.loss.gamma=2.0")
  alpha_per_class = jnp.asarray(_focal_alpha(alpha, num_classes))

  def fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logp_t = jnp.take_along_axis(logp, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    # 1 - p_t from log p_t without cancellation; floored at the smallest normal float so that
    # the derivative of x**gamma (infinite at 0 for gamma < 1) stays finite when p_t -> 1.
    one_minus_p = jnp.maximum(-jnp.expm1(logp_t), jnp.finfo(jnp.float32).tiny)
    return -alpha_per_class[labels] * one_minus_p ** gamma * logp_t

  return Loss(fn)


def _complement_entropy(num_classes: int) -> LossFn:
  """(1/K) sum_{j != y} q_j log q_j, q_j = p_j / (1 - p_y): the negated complement entropy.

  q is the softmax over the classes other than y, so log q_j = z_j - logsumexp_{i != y} z_i
  stays finite even where p_y rounds to 1. The true class is masked twice (before and after the
  logarithm) so that neither its value nor its gradient sees 0 * log 0.
  """

  def fn(logits: jax.Array, labels: jax.Array) -> jax.Array:
    is_true = jax.nn.one_hot(labels, num_classes, dtype=jnp.bool_)
    log_q = jax.nn.log_softmax(jnp.where(is_true, -jnp.inf, logits.astype(jnp.float32)), axis=-1)
    log_q = jnp.where(is_true, 0.0, log_q)
    return jnp.sum(jnp.exp(log_q) * log_q, axis=-1) / num_classes

  return fn


@LOSSES.register("cot")
def cot(*, num_classes: int, class_counts: np.ndarray) -> Loss:
  """Complement objective training (Chen et al. 2019): cross-entropy, then complement entropy.

  The complement update flattens the predicted distribution over the wrong classes, as in the
  authors' code (which averages it over the batch and the K classes).
  """
  del class_counts
  if num_classes < 2:
    raise ValueError(f"cot needs at least 2 classes, got {num_classes}")
  return Loss(_cross_entropy_on(num_classes, 0.0), complement=_complement_entropy(num_classes))


@LOSSES.register("ldam")
def ldam(*, num_classes: int, class_counts: np.ndarray, max_margin: float = 0.5,
         scale: float = 30.0, label_smoothing: float = 0.0) -> Loss:
  """LDAM (Cao et al. 2019): CE(scale * (z - m_y onehot(y))), m_k proportional to n_k^-1/4.

  Rare classes must win by a larger margin; the largest margin is `max_margin`.
  """
  if not 0.0 < max_margin < np.inf:
    raise ValueError(f"ldam max_margin must be a positive number, got {max_margin}; "
                     "set --config.loss.max_margin=0.5")
  if not 0.0 < scale < np.inf:
    raise ValueError(f"ldam scale must be a positive number, got {scale}; "
                     "set --config.loss.scale=30.0")
  raw = np.maximum(class_counts, 1.0) ** -0.25
  margins = jnp.asarray(raw * (max_margin / raw.max()), jnp.float32)

  def transform(z: jax.Array, labels: jax.Array) -> jax.Array:
    return scale * (z - margins[labels][:, None] * jax.nn.one_hot(labels, num_classes))

  return Loss(_cross_entropy_on(num_classes, label_smoothing, transform))


@LOSSES.register("logit_adjusted")
def logit_adjusted(*, num_classes: int, class_counts: np.ndarray, tau: float = 1.0,
                   label_smoothing: float = 0.0) -> Loss:
  """Logit-adjusted loss (Menon et al. 2021): CE(z + tau * log pi), pi the training prior."""
  if not 0.0 <= tau < np.inf:
    raise ValueError(f"logit_adjusted tau must be a number >= 0, got {tau}; "
                     "set --config.loss.tau=1.0")
  return Loss(_cross_entropy_on(num_classes, label_smoothing,
                                _class_shift(tau * _log_prior(class_counts))))


@LOSSES.register("balanced_softmax")
def balanced_softmax(*, num_classes: int, class_counts: np.ndarray,
                     label_smoothing: float = 0.0) -> Loss:
  """Balanced softmax (Ren et al. 2020): CE(z + log n_k), the logit-adjusted loss at tau = 1."""
  log_counts = np.log(np.maximum(class_counts, 1.0)).astype(np.float32)
  return Loss(_cross_entropy_on(num_classes, label_smoothing, _class_shift(log_counts)))

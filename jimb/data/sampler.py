"""Which training examples each batch holds: a deterministic, class-aware index map per epoch.

grain has no weighted sampler, so an epoch is drawn here as a (steps, batch) array of positions
into the training part. The map depends on (seed, epoch) only and is cut into per-process
columns, so one host and N hosts train on the same global batches. The sampler holds no
position: a resumed run recomputes `epoch_indices(epoch)` and skips the steps it has done.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jimb.registry import Registry

# Each mode's share of draws per present class, from the class counts and q. "active" draws
# equal shares until its quotas (TLC) take over through `quota_batches`.
MODES = Registry("sampler", {
    "instance": lambda counts, q: counts.astype(np.float64),
    "class_balanced": lambda counts, q: np.ones(len(counts)),
    "power": lambda counts, q: counts.astype(np.float64) ** q,
    "active": lambda counts, q: np.ones(len(counts)),
})


@dataclasses.dataclass(frozen=True, eq=False)
class ClassAwareSampler:
  """Draws each epoch's batches with the class shares of `mode` (or of explicit weights).

  instance: classes in proportion to their counts (a plain shuffle); class_balanced: every
  present class equally often; power: class c in proportion to n_c ** q (q=1 instance, q=0
  class-balanced, q=0.5 square-root); active: batches of exact per-class quotas that the
  trainer updates from F1 scores (`quota_batches`, jimb.data.active), equal before the first
  update. Within a class, examples are equally likely.
  """

  labels: np.ndarray = dataclasses.field(repr=False)
  num_classes: int
  _: dataclasses.KW_ONLY
  mode: str
  q: float
  global_batch_size: int
  seed: int
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    labels = np.asarray(self.labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
      raise ValueError(f"sampler labels must be a 1-D integer array, got {labels.dtype} "
                       f"of shape {labels.shape}")
    n, k = len(labels), self.num_classes
    if n and (labels.min() < 0 or labels.max() >= k):
      raise ValueError(f"sampler labels must lie in [0, {k}); found range "
                       f"[{labels.min()}, {labels.max()}]")
    MODES.get(self.mode, "sampler.name")
    if not np.isfinite(self.q):
      raise ValueError(f"sampler q must be a finite number, got {self.q}; "
                       f"set --config.sampler.q=0.5")
    if self.process_count < 1 or not 0 <= self.process_index < self.process_count:
      raise ValueError(
          f"process_index {self.process_index} is not in [0, {self.process_count})")
    b = self.global_batch_size
    if b < 1 or b % self.process_count:
      raise ValueError(
          f"the global batch size {b} must be a positive multiple of the "
          f"{self.process_count} processes; set --config.train.batch_size to a multiple of "
          f"{self.process_count}")
    if n < b:
      raise ValueError(
          f"the training part has {n} examples, fewer than one global batch of {b}; "
          f"set --config.train.batch_size to at most {n}")
    if self.seed < 0:
      raise ValueError(f"seed must be non-negative, got {self.seed}; set --config.seed=0")
    object.__setattr__(self, "labels", labels.astype(np.int64))

  @property
  def steps_per_epoch(self) -> int:
    """Set by the real number of examples, so every sampler sees as many batches per epoch."""
    return len(self.labels) // self.global_batch_size

  @property
  def local_batch_size(self) -> int:
    return self.global_batch_size // self.process_count

  def class_counts(self) -> np.ndarray:
    return np.bincount(self.labels, minlength=self.num_classes)

  def class_probabilities(self, class_weights: np.ndarray | None = None) -> np.ndarray:
    """Probability of drawing each class; absent classes get 0.

    `class_weights` (one non-negative number per class) replaces the mode's shares, so a
    caller can steer sampling between epochs, e.g. towards classes with a low F1.
    """
    counts = self.class_counts()
    present = counts > 0
    shares = np.zeros(self.num_classes)
    if class_weights is not None:
      shares[present] = self._checked_weights(class_weights, present)[present]
    else:
      shares[present] = MODES.get(self.mode)(counts[present], self.q)
    return shares / shares.sum()

  def counts_per_epoch(self, class_weights: np.ndarray | None = None) -> np.ndarray:
    """Expected draws per class in one epoch over all processes (counts after balancing)."""
    return self.steps_per_epoch * self.global_batch_size * self.class_probabilities(class_weights)

  def epoch_indices(self, epoch: int, class_weights: np.ndarray | None = None) -> np.ndarray:
    """This process's (steps_per_epoch, local batch) int64 positions into `labels` for `epoch`.

    The global map comes from (seed, epoch) alone; process p takes columns
    [p * local, (p + 1) * local) of every global batch, so shards are disjoint and their union
    does not depend on the process count.
    """
    if epoch < 0:
      raise ValueError(f"epoch must be non-negative, got {epoch}")
    rng = np.random.default_rng([self.seed, epoch])
    n = len(self.labels)
    size = self.steps_per_epoch * self.global_batch_size
    if self.mode == "instance" and class_weights is None:
      drawn = rng.permutation(n)[:size]
    else:
      counts = self.class_counts()
      p = self.class_probabilities(class_weights)[self.labels] / counts[self.labels]
      drawn = rng.choice(n, size=size, replace=True, p=p)
    local = self.local_batch_size
    start = self.process_index * local
    return drawn.reshape(self.steps_per_epoch, self.global_batch_size)[
        :, start:start + local].astype(np.int64)

  def quota_batches(self, epoch: int, first_step: int, num_steps: int,
                    quotas: np.ndarray) -> np.ndarray:
    """This process's (num_steps, local batch) positions; each global batch holds exactly
    `quotas[k]` examples of class k, drawn with replacement (a quota may exceed a class's size).

    Batch `step` of `epoch` depends on (seed, epoch, step, quotas) alone, so quotas may change
    between any two steps and a resumed run redraws the same batches.
    """
    quotas = np.asarray(quotas, np.int64)
    counts = self.class_counts()
    if quotas.shape != (self.num_classes,) or quotas.sum() != self.global_batch_size:
      raise ValueError(f"quotas must give one count per class summing to the batch size "
                       f"{self.global_batch_size}; got {quotas.tolist()}")
    if np.any(quotas < 0) or np.any((quotas > 0) & (counts == 0)):
      raise ValueError(f"quotas {quotas.tolist()} ask for classes absent from the training "
                       f"part (counts {counts.tolist()}) or are negative")
    members = [np.flatnonzero(self.labels == c) for c in range(self.num_classes)]
    local = self.local_batch_size
    start = self.process_index * local
    out = np.empty((num_steps, local), np.int64)
    for row, step in enumerate(range(first_step, first_step + num_steps)):
      rng = np.random.default_rng([self.seed, epoch, step])
      batch = np.concatenate([m[rng.integers(0, len(m), q)] for m, q in zip(members, quotas) if q])
      out[row] = rng.permutation(batch)[start:start + local]
    return out

  def _checked_weights(self, class_weights: np.ndarray, present: np.ndarray) -> np.ndarray:
    weights = np.asarray(class_weights, dtype=np.float64)
    if weights.shape != (self.num_classes,):
      raise ValueError(f"class_weights must hold one number per class, shape "
                       f"({self.num_classes},); got shape {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
      raise ValueError(f"class_weights must be finite and non-negative, got {weights}")
    if weights[present].sum() <= 0:
      raise ValueError(
          f"class_weights {weights} are zero on every class present in training "
          f"(classes {np.flatnonzero(present).tolist()}); give at least one of them a "
          f"positive weight")
    return weights


def from_config(labels: np.ndarray, num_classes: int, sampler_cfg, global_batch_size: int,
                seed: int, process_index: int = 0, process_count: int = 1) -> ClassAwareSampler:
  """The sampler described by the `sampler` config block (name, q)."""
  return ClassAwareSampler(
      labels, num_classes, mode=sampler_cfg.name, q=sampler_cfg.q,
      global_batch_size=global_batch_size, seed=seed, process_index=process_index,
      process_count=process_count)

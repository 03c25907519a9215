"""Stage 2 on frozen features: classifier re-training (cRT), tau-normalisation, head fine-tuning.

Kang et al. 2020 ("Decoupling Representation and Classifier for Long-Tailed Recognition") find
that instance-sampled training learns good features but a classifier biased towards frequent
classes, and that re-balancing only the classifier afterwards recovers the rare classes. The
backbone is fixed, so its features are computed once (`step.make_features`) and every step runs
the head alone: an epoch costs a few small matrix products instead of backbone passes. The same
routine fine-tunes the head on resampled features (e.g. SMOTE in feature space).

The classifier is the head's final `out` Linear: "head/out" in models with a `layers.Head`,
"out" in small_cnn and mlp. By default only it is re-initialised and trained and a hidden FC in
the head stays frozen as part of the representation, since Kang et al. re-train the linear
classifier only; `layers="head"` also fine-tunes the head's hidden FC, as seed 001 re-trains its
FC + softmax layers on resampled features. Every other parameter comes back bit-identical.
"""

from __future__ import annotations

import functools
from typing import Any

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jimb.data.sampler import ClassAwareSampler
from jimb.fitting.transfer import path_name

CLASSIFIER_PATHS = ("head/out", "out")
LAYERS = ("classifier", "head")


def _named_leaves(params: Any) -> dict[str, jax.Array]:
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  return {path_name(path): leaf for path, leaf in flat}


def classifier_path(params: Any) -> str:
  """Where the final Linear lives ("head/out" or "out"); stage 2 needs one."""
  names = _named_leaves(params)
  for prefix in CLASSIFIER_PATHS:
    if f"{prefix}/kernel" in names:
      return prefix
  raise ValueError(
      f"stage 2 needs a final Linear at one of {CLASSIFIER_PATHS}; this model's parameters are "
      f"{sorted(names)[:4]} ...; set --config.stage2.method=none")


def _hidden_path(prefix: str) -> str:
  """Where a `layers.Head`'s hidden FC lives, beside its classifier."""
  return prefix[:-len("out")] + "hidden"


def _layer_leaves(params: Any, layers: tuple[str, ...]) -> dict[str, jax.Array]:
  """The arrays of the named Linear layers, by full name ("head/out/kernel", ...)."""
  return {name: leaf for name, leaf in _named_leaves(params).items()
          if name.rpartition("/")[0] in layers}


def _with_leaves(params: Any, leaves: dict[str, jax.Array]) -> Any:
  """`params` with the named arrays replaced; every other leaf is the same object."""
  return jax.tree_util.tree_map_with_path(lambda path, leaf: leaves.get(path_name(path), leaf),
                                          params)


def tau_normalize(params: Any, tau: float) -> Any:
  """w_k <- w_k / ||w_k||^tau for every class k (kernel columns), with the bias set to zero.

  Class weight norms grow with class frequency; equalising them balances the decision boundaries
  without training (tau=1: unit norms, tau=0: norms kept). The bias is dropped as in the authors'
  evaluation (facebookresearch/classifier-balancing, tau_norm.py, scores features against the
  normalised weights only), since a bias learned on imbalanced data favours frequent classes too.
  """
  if not np.isfinite(tau):
    raise ValueError(f"tau must be a finite number, got {tau}; set --config.stage2.tau=1.0")
  prefix = classifier_path(params)
  leaves = _layer_leaves(params, (prefix,))
  kernel = leaves[f"{prefix}/kernel"]
  norms = jnp.linalg.norm(kernel.astype(jnp.float32), axis=0)
  scale = jnp.where(norms > 0, norms ** tau, 1.0)  # an all-zero class column stays zero
  new = {f"{prefix}/kernel": (kernel / scale).astype(kernel.dtype)}
  if f"{prefix}/bias" in leaves:
    new[f"{prefix}/bias"] = jnp.zeros_like(leaves[f"{prefix}/bias"])
  return _with_leaves(params, new)


def _head_width(params: Any, prefix: str) -> int:
  """The feature width the head takes: its hidden FC's input if it has one, else the out FC's."""
  names = _named_leaves(params)
  hidden = names.get(_hidden_path(prefix) + "/kernel")
  return (hidden if hidden is not None else names[f"{prefix}/kernel"]).shape[0]


def _check_inputs(params: Any, prefix: str, features: np.ndarray, labels: np.ndarray,
                  num_classes: int, epochs: int, batch_size: int, learning_rate: float,
                  weight_decay: float) -> None:
  if epochs < 1:
    raise ValueError(f"stage 2 needs at least one epoch, got {epochs}; "
                     "set --config.stage2.epochs=10")
  if not learning_rate > 0:
    raise ValueError(f"stage 2 needs a positive learning rate, got {learning_rate}; "
                     "set --config.stage2.learning_rate=1e-3")
  if weight_decay < 0:
    raise ValueError(f"weight_decay must be >= 0, got {weight_decay}; pass weight_decay=0.0")
  if features.ndim != 2 or labels.ndim != 1 or len(features) != len(labels):
    raise ValueError(
        f"stage 2 needs features (N, D) and labels (N,) with one row per example; got shapes "
        f"{features.shape} and {labels.shape}: pass the training part's features and labels")
  width = _head_width(params, prefix)
  if features.shape[1] != width:
    raise ValueError(
        f"features have width {features.shape[1]} but the head takes {width}: compute them "
        "with step.make_features from the same model")
  classes = _named_leaves(params)[f"{prefix}/kernel"].shape[1]
  if num_classes != classes:
    raise ValueError(f"num_classes={num_classes} but the head has {classes} outputs: pass the "
                     "number of classes the model was built for")
  if not 1 <= batch_size <= len(labels):
    raise ValueError(f"the stage-2 batch size {batch_size} must lie in [1, {len(labels)}] (the "
                     f"number of examples); set --config.stage2.batch_size={min(128, len(labels))}")


def _fresh(key: jax.Array, leaves: dict[str, jax.Array], prefix: str) -> dict[str, jax.Array]:
  """`leaves` with the classifier newly initialised (nnx.Linear's default initialisers)."""
  kernel = leaves[f"{prefix}/kernel"]
  new = {**leaves, f"{prefix}/kernel": nnx.initializers.lecun_normal()(key, kernel.shape,
                                                                       kernel.dtype)}
  if f"{prefix}/bias" in leaves:
    new[f"{prefix}/bias"] = jnp.zeros_like(leaves[f"{prefix}/bias"])
  return new


def _optimizer(learning_rate: jax.Array, weight_decay: jax.Array,
               total_steps: int) -> optax.GradientTransformation:
  """Adam with a cosine decay to zero (Kang et al. decay stage 2 cosinely) and an L2 term.

  The L2 term is added to the gradient, as `--config.optim.name=adam` does in stage 1.
  """
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.adam(optax.cosine_decay_schedule(learning_rate, total_steps)))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _fit(graphdef: nnx.GraphDef, start: dict[str, jax.Array], params: Any,
         rest: Any, features: jax.Array, labels: jax.Array, positions: jax.Array,
         key: jax.Array, learning_rate: jax.Array, weight_decay: jax.Array) -> dict[str, jax.Array]:
  """Trains the `start` leaves over all (step, batch) `positions` in one scan.

  Hyperparameters are traced, so every fold of a run (same model and shapes) reuses one program.
  """
  tx = _optimizer(learning_rate, weight_decay, len(positions))

  def loss(leaves, x, y, k):
    model = nnx.merge(graphdef, _with_leaves(params, leaves), rest, copy=True)
    logits = model.head(x, train=True, key=k).astype(jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  def step(carry, inputs):
    leaves, opt_state = carry
    i, idx = inputs
    grads = jax.grad(loss)(leaves, features[idx], labels[idx], jax.random.fold_in(key, i))
    updates, opt_state = tx.update(grads, opt_state, leaves)
    return (optax.apply_updates(leaves, updates), opt_state), None

  steps = jnp.arange(len(positions))
  (leaves, _), _ = jax.lax.scan(step, (start, tx.init(start)), (steps, positions))
  return leaves


def retrain_head(graphdef: nnx.GraphDef, params: Any, rest: Any, features: np.ndarray,
                 labels: np.ndarray, *, num_classes: int, epochs: int, batch_size: int,
                 learning_rate: float, sampler: str = "class_balanced", q: float = 0.5,
                 reinit: bool = True, weight_decay: float = 0.0, seed: int = 0,
                 layers: str = "classifier") -> Any:
  """Trains the classifier on precomputed `features`; returns params with only it changed
  (with `layers="head"`, the head's hidden FC too, when it has one; reinit re-draws only the
  classifier).

  cRT: the training part's features, sampler "class_balanced", reinit=True. Head fine-tuning on
  resampled features: sampler "instance" (the resampling already balanced them) and reinit=False
  to continue from the stage-1 classifier. Batches come from `ClassAwareSampler` (`q` for
  "power"); the head runs in training mode, so its dropout is on, with keys from `seed`.

  The loss is the mean per-example cross-entropy, minimised by Adam (see `_optimizer`).
  """
  if layers not in LAYERS:
    raise ValueError(f"unknown --config.stage2.layers={layers!r}; choose one of {LAYERS}")
  features, labels = np.asarray(features), np.asarray(labels)
  prefix = classifier_path(params)
  _check_inputs(params, prefix, features, labels, num_classes, epochs, batch_size,
                learning_rate, weight_decay)
  draws = ClassAwareSampler(labels, num_classes, mode=sampler, q=q,
                            global_batch_size=batch_size, seed=seed)
  positions = np.concatenate([draws.epoch_indices(epoch) for epoch in range(epochs)])
  k_init, k_drop = jax.random.split(jax.random.key(seed))
  start = _layer_leaves(params, (prefix, _hidden_path(prefix)) if layers == "head" else (prefix,))
  if reinit:
    start = _fresh(k_init, start, prefix)
  trained = _fit(graphdef, start, params, rest, jnp.asarray(features, jnp.float32),
                 jnp.asarray(labels, jnp.int32), jnp.asarray(positions, jnp.int32), k_drop,
                 jnp.float32(learning_rate), jnp.float32(weight_decay))
  return _with_leaves(params, trained)

"""Pure train and eval steps over explicit state, jitted over the data-parallel mesh.

The model is split once into a static graph definition and array state (parameters and
everything else, e.g. BatchNorm statistics); jitting plain functions over those pytrees is the
fastest NNX form on CPU (DESIGN.md) and makes the state a checkpointable pytree. Per-step keys
are `fold_in(key, step)`, so a resumed run draws the same augmentations and dropout masks.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import optax

from jimb.data.preprocess import normalize
from jimb.models import Classifier
from jimb.training import mesh as mesh_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  rest: Any          # non-parameter model state (BatchNorm statistics)
  opt_state: Any


def create_state(build: Callable[[jax.Array], Classifier], tx: optax.GradientTransformation,
                 key: jax.Array, mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef, TrainState]:
  """Builds the model and optimizer state inside one jit, replicated on the mesh.

  Eager initialisation dispatches every small op separately and took tens of seconds on CPU
  even for the small CNN; compiled it is one program.
  """
  graphdef = None

  def init(key):
    nonlocal graphdef
    graphdef, params, rest = nnx.split(build(key), nnx.Param, ...)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                      opt_state=tx.init(params))

  state = jax.jit(init, out_shardings=mesh_lib.replicated(mesh))(key)
  return graphdef, state


def make_train_step(graphdef: nnx.GraphDef, tx: optax.GradientTransformation,
                    loss_fn: Callable[[jax.Array, jax.Array], jax.Array],
                    augment: Callable[[jax.Array, jax.Array], jax.Array] | None,
                    mesh: jax.sharding.Mesh):
  """Returns jitted `step(state, batch, key, mean, std) -> (state, metrics)`.

  `batch` holds the global batch ("x" raw inputs in [0, 1] or host-preprocessed features, "y"
  labels); augmentation and normalisation run inside the step, on the devices.
  """

  def step(state: TrainState, batch, key, mean, std):
    k_aug, k_drop = jax.random.split(jax.random.fold_in(key, state.step))
    x = batch["x"]
    if augment is not None:
      x = augment(k_aug, x)
    x = normalize(x, mean, std)

    def objective(params, rest):
      model = nnx.merge(graphdef, params, rest, copy=True)
      logits = model(x, train=True, key=k_drop)
      loss = loss_fn(logits, batch["y"]).mean()
      return loss, nnx.state(model, nnx.Not(nnx.Param))

    (loss, rest), grads = jax.value_and_grad(objective, has_aux=True)(state.params, state.rest)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads)}
    return TrainState(step=state.step + 1, params=params, rest=rest, opt_state=opt_state), metrics

  rep = mesh_lib.replicated(mesh)
  return jax.jit(step, out_shardings=(rep, rep), donate_argnums=0)


def make_predict(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh):
  """Returns jitted `predict(params, rest, x, mean, std) -> softmax probabilities (float32)`."""

  def predict(params, rest, x, mean, std):
    model = nnx.merge(graphdef, params, rest, copy=True)
    logits = model(normalize(x, mean, std), train=False)
    return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)

  return jax.jit(predict, out_shardings=mesh_lib.replicated(mesh))


def make_features(graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh):
  """Returns jitted `features(params, rest, x, mean, std)`: penultimate embeddings (stage 2)."""

  def features(params, rest, x, mean, std):
    model = nnx.merge(graphdef, params, rest, copy=True)
    return model.embed(normalize(x, mean, std), train=False)

  return jax.jit(features, out_shardings=mesh_lib.replicated(mesh))

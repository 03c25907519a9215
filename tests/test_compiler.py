"""Compiler options change speed, not the model: states initialised unoptimised are the optimised
ones up to the last bit of a few entries (LLVM contracts and vectorises float code differently)."""

from __future__ import annotations

from flax import nnx
import jax
import ml_collections
import numpy as np
import optax
import pytest

from jimb import compiler
from jimb import mesh as mesh_lib
from jimb.fitting import step as step_lib
from jimb.models import build_model

MODELS = [
    ("small_cnn", (8, 8, 1), dict(widths=(32, 64, 128), dense=128)),
    ("mlp", (7,), dict(hidden=(16, 8))),
    ("resnet18", (16, 16, 3), dict(width=8)),
    ("mobilenet_v2", (32, 32, 3), dict(alpha=0.35)),
    ("efficientnet_b0", (32, 32, 3), dict(width_multiplier=0.05)),
    ("densenet121", (32, 32, 3), dict(growth_rate=4)),
    ("vgg16_bn", (32, 32, 3), dict(width=4, fc_units=16)),
]


def _leaves(tree) -> list[np.ndarray]:
  return [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]


def _assert_same_up_to_an_ulp(a: list[np.ndarray], b: list[np.ndarray]) -> None:
  for x, y in zip(a, b, strict=True):
    if np.issubdtype(x.dtype, np.floating):
      np.testing.assert_array_max_ulp(x, y, maxulp=1)
    else:
      np.testing.assert_array_equal(x, y)


def _init(name, shape, options, compiler_options):
  """A TrainState built as create_state does, compiled with `compiler_options`."""
  cfg = ml_collections.ConfigDict(dict(name=name, **options))
  tx = optax.adam(1e-3)

  def init(key):
    _, params, rest = nnx.split(build_model(cfg, 3, shape, key), nnx.Param, ...)
    return params, rest, tx.init(params)

  return jax.jit(init, compiler_options=compiler_options)(jax.random.key(7))


@pytest.mark.parametrize("name, shape, options", MODELS, ids=[m[0] for m in MODELS])
def test_model_states_unoptimised_differ_at_most_in_the_last_bit(name, shape, options):
  fast = _init(name, shape, options, compiler.init_options())
  full = _init(name, shape, options, None)
  _assert_same_up_to_an_ulp(_leaves(fast), _leaves(full))


def test_create_state_uses_the_init_options():
  """The runner's create_state builds with them: its state is the unoptimised program's."""
  cfg = ml_collections.ConfigDict(dict(name="small_cnn", widths=(4, 8, 8), dense=16))
  tx = optax.adam(1e-3)
  mesh = mesh_lib.make_mesh()
  _, state = step_lib.create_state(lambda k: build_model(cfg, 3, (8, 8, 1), k), tx,
                                   jax.random.key(7), mesh)
  params, rest, opt = _init("small_cnn", (8, 8, 1), dict(widths=(4, 8, 8), dense=16),
                            compiler.init_options())
  for a, b in zip(_leaves((state.params, state.rest, state.opt_state)), _leaves((params, rest, opt)),
                  strict=True):
    np.testing.assert_array_equal(a, b)

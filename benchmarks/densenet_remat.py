"""Peak memory and step time of DenseNet training, plain vs rematerialised (`remat=True`).

  python benchmarks/densenet_remat.py           # memory at 224x224 batch 64; time at 64x64 batch 8
  python benchmarks/densenet_remat.py --full    # accelerator: memory and time at 224x224 batch 64

The step is jimb's own training step (forward, backward, Adam update, BatchNorm statistics),
compiled for one device. Memory comes from XLA's analysis of the compiled step, without running
it: peak = arguments + outputs - aliased (donated state reused for the new state) + temporaries.
Also printed: the bytes of residuals the backward pass asks the forward pass to keep (the value
`jax.vjp` closes over), a backend-independent view of what rematerialisation changes; for the plain
model it overstates, since XLA fuses some of them away. Times are medians over interleaved runs
(plain, remat, remat, plain, ...) so load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout

from flax import nnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jimb.models import build_model  # noqa: E402
from jimb import mesh as mesh_lib  # noqa: E402
from jimb.fitting import step as step_lib  # noqa: E402

MIB = 2.0 ** 20
NUM_CLASSES = 1000


def _loss(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def setup(depth: int, remat: bool, size: int, batch: int):
  """The jitted train step, its abstract state and abstract batch, and the loss's graph pieces."""
  cfg = ml_collections.ConfigDict(dict(name=f"densenet{depth}", remat=remat))
  tx = optax.adam(1e-3)
  graphdef = None

  def init(key):
    nonlocal graphdef
    graphdef, params, rest = nnx.split(
        build_model(cfg, NUM_CLASSES, (size, size, 3), key), nnx.Param, ...)
    return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                               opt_state=tx.init(params))

  state = jax.eval_shape(init, jax.random.key(0))
  step = step_lib.make_train_step(graphdef, tx, _loss, None, mesh_lib.make_mesh(jax.devices()[:1]))
  batch_spec = {"x": jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
                "y": jax.ShapeDtypeStruct((batch,), jnp.int32)}
  return step, graphdef, state, batch_spec


def step_args(state, batch_spec):
  stats = jax.ShapeDtypeStruct((3,), jnp.float32)
  return state, batch_spec, jax.eval_shape(lambda: jax.random.key(0)), stats, stats


def memory(step, state, batch_spec) -> tuple[dict[str, float], float]:
  """XLA's compiled memory analysis of the step (MiB) and the compile time (s)."""
  start = time.perf_counter()
  analysis = step.lower(*step_args(state, batch_spec)).compile().memory_analysis()
  seconds = time.perf_counter() - start
  pieces = {name: getattr(analysis, f"{name}_size_in_bytes") / MIB
            for name in ("argument", "output", "alias", "temp")}
  pieces["peak"] = pieces["argument"] + pieces["output"] - pieces["alias"] + pieces["temp"]
  return pieces, seconds


def residual_mib(graphdef, state, batch_spec) -> float:
  """MiB the forward pass keeps for the backward pass, as JAX traces it (before XLA)."""
  x, y = batch_spec["x"], batch_spec["y"]

  def residuals(params, rest, x, y):
    def loss(params):
      model = nnx.merge(graphdef, params, rest, copy=True)
      return _loss(model(x, train=True), y).mean()
    return jax.vjp(loss, params)[1]

  leaves = jax.tree.leaves(jax.eval_shape(residuals, state.params, state.rest, x, y))
  return sum(leaf.size * leaf.dtype.itemsize for leaf in leaves) / MIB


def concrete_state(state, seed: int = 0):
  """Arbitrary finite weights of `state`'s shapes (timing does not depend on their values)."""
  rng = np.random.default_rng(seed)
  params = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.05, s.shape).astype(s.dtype)),
                        state.params)
  rest = jax.tree.map(lambda s: jnp.asarray(np.ones(s.shape, s.dtype)), state.rest)
  opt_state = jax.jit(optax.adam(1e-3).init)(params)
  return step_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params, rest=rest,
                             opt_state=opt_state)


def time_steps(depth: int, size: int, batch: int, repeats: int) -> dict[bool, float]:
  """Median seconds per step of plain and remat, measured in alternating order."""
  rng = np.random.default_rng(0)
  data = {"x": jnp.asarray(rng.uniform(size=(batch, size, size, 3)).astype(np.float32)),
          "y": jnp.asarray(rng.integers(0, NUM_CLASSES, batch).astype(np.int32))}
  mean, std = jnp.zeros(3), jnp.ones(3)
  runs = {}
  for remat in (False, True):
    step, _, state, _ = setup(depth, remat, size, batch)
    runs[remat] = [step, concrete_state(state)]

  def run(remat):
    step, state = runs[remat]
    start = time.perf_counter()
    state, metrics = step(state, data, jax.random.key(0), mean, std)
    jax.block_until_ready((state, metrics))
    runs[remat][1] = state
    return time.perf_counter() - start

  for remat in (False, True):   # compile and warm up
    run(remat)
    run(remat)
  times = {False: [], True: []}
  for i in range(repeats):
    for remat in ((False, True) if i % 2 == 0 else (True, False)):
      times[remat].append(run(remat))
  return {remat: statistics.median(t) for remat, t in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--full", action="store_true",
                      help="time every depth at 224x224 batch 64 (for a GPU) instead of a "
                           "CPU-sized DenseNet-121 step")
  parser.add_argument("--depths", default="121,169,201,264")
  parser.add_argument("--repeats", type=int, default=7)
  args = parser.parse_args(argv)
  depths = [int(d) for d in args.depths.split(",")]
  print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}")

  print("\nMemory of one compiled training step at 224x224x3, batch 64 (MiB);"
        " peak = argument + output - alias + temp")
  rows = []
  for depth in depths:
    row = {"depth": depth}
    for remat in (False, True):
      step, graphdef, state, batch_spec = setup(depth, remat, 224, 64)
      pieces, seconds = memory(step, state, batch_spec)
      residual = residual_mib(graphdef, state, batch_spec)
      print(f"  densenet{depth} remat={remat!s:5}: " +
            " ".join(f"{k}={v:.0f}" for k, v in pieces.items()) +
            f" residuals={residual:.0f} (compiled in {seconds:.0f} s)", flush=True)
      row[remat] = (pieces["peak"], residual)
    rows.append(row)
  print("\n| depth | plain peak MiB | remat peak MiB | peak ratio | plain residuals MiB "
        "| remat residuals MiB | residual ratio |")
  print("|---|---|---|---|---|---|---|")
  for row in rows:
    (p_peak, p_res), (r_peak, r_res) = row[False], row[True]
    print(f"| {row['depth']} | {p_peak:.0f} | {r_peak:.0f} | {p_peak / r_peak:.2f}x "
          f"| {p_res:.0f} | {r_res:.0f} | {p_res / r_res:.2f}x |")

  size, batch, timed = (224, 64, depths) if args.full else (64, 8, depths[:1])
  print(f"\nStep time at {size}x{size}x3, batch {batch} (median of {args.repeats}, interleaved)")
  print("\n| depth | plain s | remat s | remat / plain |")
  print("|---|---|---|---|")
  for depth in timed:
    t = time_steps(depth, size, batch, args.repeats)
    print(f"| {depth} | {t[False]:.3f} | {t[True]:.3f} | {t[True] / t[False]:.2f} |", flush=True)


if __name__ == "__main__":
  main()

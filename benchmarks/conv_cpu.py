"""Per-layer time of jimb.conv's rewrites against XLA's convolution, at the zoo's layer shapes.

  python benchmarks/conv_cpu.py            # every shape below; about 2 minutes on 2 cores

Each shape runs jitted forward and forward + backward (input and weight gradients; for a first
layer on raw images the weight gradient only, as in training), best of 5 repeats of 10 calls,
XLA's `lax.conv_general_dilated` against `jimb.conv.conv_general_dilated` (which picks the
rewrite `jimb.conv` documents, or XLA's convolution where none applies: those rows show which
shapes keep it and why). The largest relative difference of the gradients is printed beside.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
NHWC = ("NHWC", "HWIO", "NHWC")
# (where, batch, height, width, C_in, C_out, kernel, stride, depthwise)
SHAPES = [
    ("small CNN conv1 at 28x28", 128, 28, 28, 1, 32, 3, 1, False),
    ("small CNN conv2", 128, 14, 14, 32, 64, 3, 1, False),
    ("small CNN conv3", 128, 7, 7, 64, 128, 3, 1, False),
    ("ResNet-18 stem at 32x32", 64, 32, 32, 3, 64, 7, 2, False),
    ("ResNet-18 stage 1", 64, 8, 8, 64, 64, 3, 1, False),
    ("ResNet-18 stage 2 down", 64, 8, 8, 64, 128, 3, 2, False),
    ("ResNet-18 stage 2", 64, 4, 4, 128, 128, 3, 1, False),
    ("ResNet-18 stage 2 projection", 64, 8, 8, 64, 128, 1, 2, False),
    ("ResNet-18 stage 3", 64, 2, 2, 256, 256, 3, 1, False),
    ("ResNet-18 stage 4", 64, 1, 1, 512, 512, 3, 1, False),
    ("MobileNetV2 stem at 64x64", 32, 64, 64, 3, 32, 3, 2, False),
    ("MobileNetV2 expand 1x1", 32, 16, 16, 24, 144, 1, 1, False),
    ("MobileNetV2 depthwise", 32, 32, 32, 32, 32, 3, 1, True),
    ("MobileNetV2 depthwise down", 32, 32, 32, 96, 96, 3, 2, True),
    ("MobileNetV2 depthwise", 32, 8, 8, 192, 192, 3, 1, True),
    ("EfficientNet-B0 depthwise 5x5", 32, 8, 8, 240, 240, 5, 1, True),
    ("DCGAN critic conv2", 64, 14, 14, 32, 64, 4, 2, False),
]


def _time(fn, *args, calls: int = 10, repeats: int = 5) -> float:
  import jax  # pylint: disable=g-import-not-at-top
  out = fn(*args)
  jax.block_until_ready(out)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(calls):
      out = fn(*args)
    jax.block_until_ready(out)
    best = min(best, (time.perf_counter() - start) / calls)
  return best * 1e3


def main() -> None:
  argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
  sys.path.insert(0, str(ROOT))
  import jax  # pylint: disable=g-import-not-at-top
  from jax import lax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jimb import conv  # pylint: disable=g-import-not-at-top

  with open("/proc/loadavg") as f:
    print(f"device: {jax.devices()[0].device_kind}; load average before: {f.read().split()[:3]}")
  print("| layer | input -> output, kernel / stride | form | forward XLA ms | forward jimb ms "
        "| speed-up | fwd + bwd XLA ms | fwd + bwd jimb ms | speed-up | gradient rel. diff |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  rng = np.random.default_rng(0)
  for where, n, h, w, c_in, c_out, k, s, depthwise in SHAPES:
    groups = c_in if depthwise else 1
    x = jnp.asarray(rng.standard_normal((n, h, w, c_in)), jnp.float32)
    kernel = jnp.asarray(rng.standard_normal((k, k, c_in // groups, c_out)) / k, jnp.float32)
    kw = dict(dimension_numbers=NHWC, feature_group_count=groups)
    ops = {"XLA": lambda x, kern: lax.conv_general_dilated(x, kern, (s, s), "SAME", **kw),
           "jimb": lambda x, kern: conv.conv_general_dilated(x, kern, (s, s), "SAME", **kw)}
    found = []   # the form picked inside a traced program
    jax.eval_shape(lambda x, kern: found.append(conv._form(  # pylint: disable=protected-access
        x, kern, (s, s), "SAME", None, None, NHWC, groups, {})) or x, x, kernel)
    form = found[0]
    cotangent = jnp.asarray(rng.standard_normal(ops["XLA"](x, kernel).shape), jnp.float32)
    first = c_in <= 3
    row, grads = {}, {}
    for name, op in ops.items():
      if first:
        both = jax.jit(lambda x, kern, g, op=op: jax.vjp(lambda kern: op(x, kern), kern)[1](g))
      else:
        both = jax.jit(lambda x, kern, g, op=op: jax.vjp(op, x, kern)[1](g))
      row[name] = (_time(jax.jit(op), x, kernel), _time(both, x, kernel, cotangent))
      grads[name] = both(x, kernel, cotangent)
    diff = max(float(jnp.abs(a - b).max() / jnp.abs(a).max())
               for a, b in zip(grads["XLA"], grads["jimb"]))
    label = "XLA" if form is None else form.__name__.lstrip("_")
    (fx, bx), (fj, bj) = row["XLA"], row["jimb"]
    print(f"| {where} | {n}x{h}x{w}x{c_in} -> {c_out}, {k}x{k}/{s} | {label} | {fx:.2f} | "
          f"{fj:.2f} | {fx / fj:.1f}x | {bx:.2f} | {bj:.2f} | {bx / bj:.1f}x | {diff:.0e} |",
          flush=True)


if __name__ == "__main__":
  main()

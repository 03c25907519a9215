"""K GANs trained stacked (one vmapped, jitted step) against one after another (K=1 each).

  python benchmarks/gan_stacked.py                  # K = 2, 4, 7 DCGANs, 28x28x1, 50 steps
  python benchmarks/gan_stacked.py --steps 20 --ks 2,7 --widths 16,8
  python benchmarks/gan_stacked.py --model lsgan    # fully connected (seed 004's LSGAN)
  python benchmarks/gan_stacked.py --model cyclegan --batch 8   # K CycleGANs from one source

Every member has its own data (uniform noise images) of the same size, so the K=1 program is
the same for every member and every K: the sequential time counts its compile once. "warm"
times repeat a run whose programs are compiled; "+compile" adds compiling (the stacked run's
first call; for the sequential runs the K=1 first run minus a warm one, once). Each time
includes initialisation, batch drawing and the training steps, as `gan.train` runs them.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from jimb.generative import cyclegan, gan  # pylint: disable=g-import-not-at-top,wrong-import-position


def make_trainer(args, data: list[np.ndarray]):
  """(description, train(members) -> seconds) for the chosen model."""
  shape = data[0].shape[1:]
  quiet = dict(log=lambda _: None, log_every=10**9)
  if args.model == "cyclegan":
    # The source domain is shared; an epoch is one pass over it, so steps = epochs * rows / batch.
    spec = cyclegan.CycleSpec(shape, ngf=args.ngf, ndf=args.ngf, n_blocks=args.blocks,
                              n_layers_D=2, batch_size=args.batch, n_epochs=1, n_epochs_decay=0)
    source = data[0][:args.steps * args.batch]
    run = lambda members: cyclegan.train(spec, source, [data[i + 1] for i in members],
                                         jax.random.key(0), **quiet)
    about = (f"CycleGAN {shape}, ngf {args.ngf}, {args.blocks} blocks, batch {args.batch}, "
             f"{args.steps} steps")
  else:
    spec = gan.GANSpec(args.model, shape, arch="mlp" if args.model == "lsgan" else "conv",
                       latent_dim=args.latent, widths=tuple(int(w) for w in args.widths.split(",")),
                       steps=args.steps, batch_size=args.batch)
    keys = jax.random.split(jax.random.key(0), len(data))
    run = lambda members: gan.train(spec, [data[i] for i in members], keys[np.asarray(members)],
                                    **quiet)
    about = (f"{args.model} ({spec.arch}) {shape}, widths {spec.widths}, hidden {spec.hidden}, "
             f"latent {args.latent}, batch {args.batch}, {args.steps} steps")

  def timed(members: list[int]) -> float:
    start = time.perf_counter()
    jax.block_until_ready(run(members).state)
    return time.perf_counter() - start

  return about, timed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--ks", default="2,4,7", help="numbers of stacked GANs")
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--size", type=int, default=28, help="image height and width")
  parser.add_argument("--widths", default="32,16")
  parser.add_argument("--latent", type=int, default=64)
  parser.add_argument("--batch", type=int, default=64)
  parser.add_argument("--rows", type=int, default=300, help="training images per member")
  parser.add_argument("--model", default="dcgan", choices=["dcgan", "lsgan", "cyclegan"])
  parser.add_argument("--ngf", type=int, default=16, help="cyclegan: ngf = ndf")
  parser.add_argument("--blocks", type=int, default=3, help="cyclegan: residual blocks")
  args = parser.parse_args()
  ks = [int(k) for k in args.ks.split(",")]
  rng = np.random.default_rng(0)
  rows = max(args.rows, args.steps * args.batch if args.model == "cyclegan" else 0)
  data = [rng.uniform(0, 1, (rows, args.size, args.size, 1)).astype(np.float32)
          for _ in range(max(ks) + 1)]
  about, timed = make_trainer(args, data)

  first = timed([0])
  one = timed([0])
  compile_one = max(first - one, 0.0)
  print(f"device {jax.devices()[0].device_kind}, jax {jax.__version__}; {about}; "
        f"K=1 compile {compile_one:.2f} s")
  print(f"{'K':>3} {'stacked+compile':>16} {'stacked warm':>13} {'seq+compile':>12} "
        f"{'seq warm':>9} {'seq/stacked +compile':>21} {'seq/stacked warm':>17}")
  for k in ks:
    stacked_cold = timed(list(range(k)))
    stacked = timed(list(range(k)))
    sequential = sum(timed([i]) for i in range(k))
    print(f"{k:>3} {stacked_cold:>15.2f}s {stacked:>12.2f}s {sequential + compile_one:>11.2f}s "
          f"{sequential:>8.2f}s {(sequential + compile_one) / stacked_cold:>21.2f} "
          f"{sequential / stacked:>17.2f}")


if __name__ == "__main__":
  main()

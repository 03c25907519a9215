"""SMOTE time: jimb's JaxSMOTE against imblearn.over_sampling.SMOTE on the same data and machine.

  python benchmarks/smote.py                       # N = 5000, 20000, 80000; 1024 features
  python benchmarks/smote.py --sizes 2000 --features 64

Data: 8 long-tailed classes (exponential counts, imbalance ratio 100) of float32 Gaussian
features, sampling_strategy="auto", k_neighbors=5. Each sampler runs in fresh processes, so
first calls pay what a user's first call pays (imports excluded): imblearn "first" and "steady"
(its first call and the faster of its first two); jimb "cold", its first call with an empty
persistent compilation cache (so it includes tracing and compiling); jimb "warm", its first call
in a new process whose cache that cold run filled; and jimb "steady", the fastest of the later
calls in the cold process. First calls are compared with imblearn's first call, steady with
steady. Both samplers must give the same class counts.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def make_data(n: int, features: int, classes: int, imbalance: float, seed: int):
  """(n, features) float32 and labels with counts n_c proportional to imbalance ** (-c / (C-1))."""
  shares = float(imbalance) ** (-np.arange(classes) / (classes - 1))
  counts = np.maximum(np.round(n * shares / shares.sum()).astype(int), 6)
  rng = np.random.default_rng(seed)
  y = rng.permutation(np.repeat(np.arange(classes), counts))
  X = rng.standard_normal((len(y), features), dtype=np.float32) + y[:, None].astype(np.float32)
  return X, y


def worker(args) -> dict:
  """Times fit_resample calls in this process; the first call is the process's first."""
  X, y = make_data(args.n, args.features, args.classes, args.imbalance, args.seed)
  if args.worker == "imblearn":
    from imblearn.over_sampling import SMOTE  # pylint: disable=g-import-not-at-top
    sampler = SMOTE(k_neighbors=5, random_state=0)
    info = {}
  else:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_compilation_cache_dir", args.cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    sys.path.insert(0, str(ROOT))
    from jimb.resampling.smote_jax import JaxSMOTE  # pylint: disable=g-import-not-at-top
    sampler = JaxSMOTE(k_neighbors=5, random_state=0)
    info = {"device": jax.devices()[0].device_kind, "jax": jax.__version__}
  seconds = []
  for _ in range(args.calls):
    start = time.perf_counter()
    _, y_res = sampler.fit_resample(X, y)
    seconds.append(time.perf_counter() - start)
  return {"seconds": seconds, "counts": np.bincount(y_res).tolist(), **info}


def run_worker(kind: str, n: int, calls: int, args, cache: str = "") -> dict:
  command = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--calls", str(calls),
             "--cache", cache, "--features", str(args.features), "--classes", str(args.classes),
             "--imbalance", str(args.imbalance), "--seed", str(args.seed)]
  out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def measure(n: int, args) -> dict:
  imblearn = run_worker("imblearn", n, 2, args)
  with tempfile.TemporaryDirectory() as cache:
    cold = run_worker("jimb", n, 1 + args.steady_calls, args, cache)
    warm = run_worker("jimb", n, 1, args, cache)
  if not imblearn["counts"] == cold["counts"] == warm["counts"]:
    raise RuntimeError(f"class counts differ at N={n}: imblearn {imblearn['counts']}, "
                       f"jimb {cold['counts']}")
  return {"n": n, "imblearn_first": imblearn["seconds"][0], "imblearn": min(imblearn["seconds"]),
          "cold": cold["seconds"][0],
          "warm": warm["seconds"][0], "steady": min(cold["seconds"][1:]),
          "device": cold["device"], "jax": cold["jax"]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes", default="5000,20000,80000", help="comma-separated N")
  parser.add_argument("--features", type=int, default=1024)
  parser.add_argument("--classes", type=int, default=8)
  parser.add_argument("--imbalance", type=float, default=100.0, help="largest / smallest class")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--steady-calls", type=int, default=2,
                      help="jimb calls after the first in the cold process; the fastest is steady")
  parser.add_argument("--worker", choices=["imblearn", "jimb"], help=argparse.SUPPRESS)
  parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--calls", type=int, default=1, help=argparse.SUPPRESS)
  parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    print(json.dumps(worker(args)))
    return

  print(f"load average before: {os.getloadavg()}, CPUs: {os.cpu_count()}", flush=True)
  rows = []
  for n in (int(s) for s in args.sizes.split(",")):
    rows.append(measure(n, args))
    print(f"measured N={n}", file=sys.stderr, flush=True)
  print(f"device: {rows[0]['device']}, jax {rows[0]['jax']}; load average after: "
        f"{os.getloadavg()}")
  _, y = make_data(rows[0]["n"], 1, args.classes, args.imbalance, args.seed)
  print(f"{args.features} float32 features, {args.classes} classes, counts at N={rows[0]['n']}: "
        f"{np.bincount(y).tolist()}\n")
  print("| N | imblearn first s | imblearn steady s | jimb cold s | jimb warm s | jimb steady s "
        "| speed-up cold | speed-up warm | speed-up steady |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['n']} | {r['imblearn_first']:.2f} | {r['imblearn']:.2f} | {r['cold']:.2f} | "
          f"{r['warm']:.2f} | {r['steady']:.2f} | {r['imblearn_first'] / r['cold']:.2f}x | "
          f"{r['imblearn_first'] / r['warm']:.2f}x | {r['imblearn'] / r['steady']:.2f}x |")


if __name__ == "__main__":
  main()

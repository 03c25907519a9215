"""Training speed: jimb's train step against the same architecture's step in PyTorch.

  python benchmarks/vs_pytorch.py                            # every workload, 2 cores, 5 rounds
  python benchmarks/vs_pytorch.py --workloads small_cnn,resnet18 --rounds 3
  python benchmarks/vs_pytorch.py --device gpu               # the same table on an accelerator

PyTorch is an optional extra that only this script imports: `pip install -e '.[bench]'`. From
PyPI that is the CUDA build (it also runs on CPU); PyTorch's own CPU-only wheels
(`--extra-index-url https://download.pytorch.org/whl/cpu`) work too where that index is
reachable, with a torchvision from the same index.

jimb: `build_model` + `create_state` + `make_train_step` with Adam (lr 1e-3) and cross-entropy, as
training uses them (normalisation inside the step, no augmentation); the DCGAN step is
`jimb.generative.gan`'s compiled step for one model (one discriminator then one generator
update). PyTorch: torchvision's resnet18 / mobilenet_v2 / efficientnet_b0 (jimb's ResNet-18 has
conv biases and Keras's BatchNorm epsilon, its MobileNetV2 and EfficientNet-B0 follow
`keras.applications`; the layers and their shapes are the same), and hand-written twins of the
small CNN and the DCGAN nets (NCHW, PyTorch's default layout); `optimizer.zero_grad`, forward,
`backward`, `optimizer.step`. Both train on one fixed random batch, 10 classes.

Each side runs in its own process pinned (os.sched_setaffinity) to the same `--cores`, so XLA's
thread pool and PyTorch's threads (torch.set_num_threads) use the same cores. The two processes
of a workload stay alive and take turns: round after round, one measures while the other waits,
the order alternating per round, so load from other jobs hits both. Before each turn the script
waits (up to --max-wait s) until the other jobs' CPU use, measured over one second while both
sides wait, is below --max-busy cores. A turn times as many steps as fill --seconds; the table
gives the best and median images (or GAN steps) per second of wall time, the median per CPU
second of the process (time.process_time: all its threads; the more robust figure under load),
the first step's time (jimb: tracing and compiling with no persistent cache; PyTorch: its first
step), and /proc/loadavg before and after each workload.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLASSES = 10
# name -> (input shape HWC, batch); "dcgan" counts GAN steps (one D and one G update) of batch 64.
WORKLOADS = {
    "small_cnn": ((28, 28, 1), 128),
    "resnet18": ((32, 32, 3), 64),
    "mobilenet_v2": ((64, 64, 3), 32),
    "efficientnet_b0": ((32, 32, 3), 32),
    "dcgan": ((28, 28, 1), 64),
}
LATENT, GAN_WIDTHS = 100, (64, 32)


# --- jimb side -------------------------------------------------------------------------------

def jimb_step(name: str, shape, batch: int, device: str):
  """step() -> None running one jimb training step on fixed data, blocking until done."""
  import jax  # pylint: disable=g-import-not-at-top
  if device == "gpu" and jax.default_backend() != "gpu":
    raise SystemExit(f"--device gpu: JAX sees no GPU (backend {jax.default_backend()!r}); install "
                     "jax[cuda12] (`pip install -e '.[cuda]'`) on a machine with one")
  sys.path.insert(0, str(ROOT))
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(batch, *shape)).astype(np.float32)
  if name == "dcgan":
    from jimb.generative import gan  # pylint: disable=g-import-not-at-top
    spec = gan.GANSpec("dcgan", shape, arch="conv", latent_dim=LATENT, widths=GAN_WIDTHS,
                       steps=1, batch_size=batch)
    graphs, state = gan.init_state(spec, jax.random.split(jax.random.key(0), 1))
    run = gan.compiled_step(spec, graphs)
    rows = jax.device_put(x * 2 - 1)
    idx = jax.device_put(np.arange(batch, dtype=np.int32).reshape(1, 1, batch))
    keys = jax.random.split(jax.random.key(1), 1)
    args = (rows, None, idx, keys)
  else:
    import ml_collections  # pylint: disable=g-import-not-at-top
    from jimb import losses, mesh as mesh_lib  # pylint: disable=g-import-not-at-top
    from jimb.fitting import optim, step as step_lib  # pylint: disable=g-import-not-at-top
    from jimb.models import build_model  # pylint: disable=g-import-not-at-top
    model_cfg = ml_collections.ConfigDict(dict(name=name, dtype="float32", pretrained=""))
    optim_cfg = ml_collections.ConfigDict(dict(
        name="adam", learning_rate=1e-3, schedule="constant", warmup_epochs=0, momentum=0.9,
        weight_decay=0.0, grad_clip=0.0))
    mesh = mesh_lib.make_mesh()
    tx = optim.build_optimizer(optim_cfg, 1000, 100)
    loss = losses.cross_entropy(num_classes=CLASSES, class_counts=np.ones(CLASSES))
    graphdef, state = step_lib.create_state(
        lambda k: build_model(model_cfg, CLASSES, shape, k), tx, jax.random.key(0), mesh)
    train_step = step_lib.make_train_step(graphdef, tx, loss.fn, None, mesh)
    data = mesh_lib.full_batch_to_global(
        {"x": x, "y": rng.integers(0, CLASSES, batch).astype(np.int32)}, mesh)
    mean, std = mesh_lib.replicate((np.full(shape[-1], 0.5, np.float32),
                                    np.full(shape[-1], 0.25, np.float32)), mesh)
    key = mesh_lib.replicate(jax.random.key(1), mesh)
    run = lambda s, *a: train_step(s, data, key, mean, std)
    args = ()
  holder = [state]

  def step():
    holder[0], metrics = run(holder[0], *args)
    jax.block_until_ready(metrics)

  return step


# --- PyTorch side ----------------------------------------------------------------------------

def torch_nets(name: str, shape):
  """The PyTorch twin(s) of a workload: a classifier, or (generator, discriminator)."""
  from torch import nn  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  h, w, c = shape
  if name == "small_cnn":
    layers, cin = [], c
    for width in (32, 64, 128):   # conv3x3 (no bias) + BN + ReLU + 2x2 max-pool (SAME: ceil)
      layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                 nn.ReLU(), nn.MaxPool2d(2, 2, ceil_mode=True)]
      cin, h, w = width, -(-h // 2), -(-w // 2)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(h * w * cin, 128), nn.ReLU(),
                         nn.Dropout(0.25), nn.Linear(128, CLASSES))
  if name == "dcgan":
    s = h // 2 ** len(GAN_WIDTHS)
    g = nn.Sequential(
        nn.Linear(LATENT, s * s * 64, bias=False), nn.Unflatten(1, (64, s, s)),
        nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 32, 4, 2, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.ConvTranspose2d(32, c, 4, 2, padding=1), nn.Tanh())
    d = nn.Sequential(
        nn.Conv2d(c, 32, 4, 2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(32, 64, 4, 2, padding=1, bias=False), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(s * s * 64, 1))
    return g, d
  return getattr(torchvision.models, name)(num_classes=CLASSES)


def torch_step(name: str, shape, batch: int, device: str):
  """step() -> None running one PyTorch training step on fixed data, blocking until done."""
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  if device == "gpu" and not torch.cuda.is_available():
    raise SystemExit("--device gpu: PyTorch sees no CUDA device; install a CUDA build of torch "
                     "on a machine with a GPU")
  dev = torch.device("cuda" if device == "gpu" else "cpu")
  sync = torch.cuda.synchronize if device == "gpu" else (lambda: None)
  torch.manual_seed(0)
  rng = np.random.default_rng(0)
  x = torch.tensor(rng.uniform(size=(batch, *shape)).astype(np.float32)).permute(0, 3, 1, 2)
  x = x.contiguous().to(dev)
  if name == "dcgan":
    g, d = (net.to(dev).train() for net in torch_nets(name, shape))
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    real = x * 2 - 1
    ones = torch.ones(batch, 1, device=dev)
    zeros = torch.zeros(batch, 1, device=dev)

    def step():
      with torch.no_grad():
        fake = g(torch.randn(batch, LATENT, device=dev))
      d_loss = (F.binary_cross_entropy_with_logits(d(real), ones)
                + F.binary_cross_entropy_with_logits(d(fake), zeros))
      opt_d.zero_grad(set_to_none=True)
      d_loss.backward()
      opt_d.step()
      d.requires_grad_(False)   # as jimb: the G update differentiates G's parameters only
      g_loss = F.binary_cross_entropy_with_logits(d(g(torch.randn(batch, LATENT, device=dev))),
                                                  ones)
      opt_g.zero_grad(set_to_none=True)
      g_loss.backward()
      opt_g.step()
      d.requires_grad_(True)
      sync()

    return step
  model = torch_nets(name, shape).to(dev).train()
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  y = torch.tensor(rng.integers(0, CLASSES, batch)).to(dev)
  mean, std = 0.5, 0.25

  def step():
    loss = F.cross_entropy(model((x - mean) / std), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sync()

  return step


# --- worker process --------------------------------------------------------------------------

def worker(args) -> None:
  """Builds one side's step, reports its first step, then times `n` steps per line on stdin."""
  cores = [int(c) for c in args.cores.split(",")]
  os.sched_setaffinity(0, cores)   # before importing JAX: XLA sizes its pool by the affinity
  shape, batch = WORKLOADS[args.workload]
  start = time.perf_counter()
  if args.worker == "torch":
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(len(cores))
    step = torch_step(args.workload, shape, batch, args.device)
    version = f"torch {torch.__version__}"
  else:
    step = jimb_step(args.workload, shape, batch, args.device)
    import jax  # pylint: disable=g-import-not-at-top
    version = f"jax {jax.__version__}, {jax.devices()[0].device_kind}"
  setup = time.perf_counter() - start
  start = time.perf_counter()
  step()
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(args.warmup):
    step()
  per_step = (time.perf_counter() - start) / args.warmup
  print(json.dumps({"setup": setup, "first": first, "per_step": per_step, "version": version}),
        flush=True)
  for line in sys.stdin:
    n = int(line)
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
      step()
    print(json.dumps({"steps": n, "wall": time.perf_counter() - wall,
                      "cpu": time.process_time() - cpu}), flush=True)


class Side:
  """One worker process, alive for a workload's rounds."""

  def __init__(self, kind: str, workload: str, args):
    env = dict(os.environ)
    if args.device == "cpu":
      env["JAX_PLATFORMS"] = "cpu"
    command = [sys.executable, __file__, "--worker", kind, "--workload", workload,
               "--cores", args.cores, "--device", args.device, "--warmup", str(args.warmup)]
    self.kind = kind
    self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True, env=env)
    self.info = self._read()

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      raise SystemExit(f"error: the {self.kind} worker exited with status {self.proc.returncode} "
                       "(its message is above)")
    return json.loads(line)

  def measure(self, steps: int) -> dict:
    self.proc.stdin.write(f"{steps}\n")
    self.proc.stdin.flush()
    return self._read()

  def close(self) -> None:
    self.proc.stdin.close()
    self.proc.wait()


def busy_cores(seconds: float = 1.0) -> float:
  """Cores kept busy by every process on the machine over `seconds` (/proc/stat)."""
  def read():
    fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
    return sum(fields), fields[3] + fields[4]   # total, idle + iowait
  total0, idle0 = read()
  time.sleep(seconds)
  total1, idle1 = read()
  return (os.cpu_count() or 1) * (1 - (idle1 - idle0) / max(total1 - total0, 1))


def wait_quiet(args) -> float:
  """Waits until other jobs use fewer than --max-busy cores (at most --max-wait s); their use."""
  deadline = time.time() + args.max_wait
  while True:
    busy = busy_cores()
    if busy < args.max_busy or time.time() > deadline:
      return busy


def loadavg() -> str:
  return " ".join(open("/proc/loadavg").read().split()[:3])


def run_workload(workload: str, args) -> dict:
  _, batch = WORKLOADS[workload]
  before = loadavg()
  sides = {kind: Side(kind, workload, args) for kind in ("jimb", "torch")}
  times = {kind: [] for kind in sides}
  others = []
  try:
    for r in range(args.rounds):
      for kind in (("jimb", "torch") if r % 2 == 0 else ("torch", "jimb")):
        others.append(wait_quiet(args))
        steps = max(1, round(args.seconds / sides[kind].info["per_step"]))
        times[kind].append(sides[kind].measure(steps))
  finally:
    for side in sides.values():
      side.close()
  units = 1 if workload == "dcgan" else batch
  row = {"workload": workload, "load_before": before, "load_after": loadavg(),
         "others_busy": max(others)}
  for kind, runs in times.items():
    rates = [units * t["steps"] / t["wall"] for t in runs]
    row[kind] = {"best": max(rates), "median": statistics.median(rates),
                 "per_cpu_s": statistics.median(units * t["steps"] / t["cpu"] for t in runs),
                 "first_s": sides[kind].info["first"], "version": sides[kind].info["version"]}
  return row


def describe(workload: str) -> str:
  shape, batch = WORKLOADS[workload]
  size = "x".join(str(s) for s in shape)
  if workload == "dcgan":
    return f"DCGAN {size}, batch {batch}, latent {LATENT} (widths {', '.join(map(str, GAN_WIDTHS))})"
  return f"{workload} {size}, batch {batch}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workloads", default=",".join(WORKLOADS),
                      help=f"comma-separated, from {', '.join(WORKLOADS)}")
  parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
  parser.add_argument("--cores", default="",
                      help="comma-separated core ids both sides are pinned to (default: the "
                           "first 2 this process may use)")
  parser.add_argument("--rounds", type=int, default=5, help="measured turns per side")
  parser.add_argument("--seconds", type=float, default=3.0, help="length of one turn")
  parser.add_argument("--warmup", type=int, default=3, help="steps after the first, untimed")
  parser.add_argument("--max-busy", type=float, default=0.3,
                      help="wait before a turn while other jobs use more cores than this")
  parser.add_argument("--max-wait", type=float, default=60.0,
                      help="seconds to wait for a quiet machine before measuring anyway")
  parser.add_argument("--json", default="", help="also write the rows to this file")
  parser.add_argument("--worker", choices=["jimb", "torch"], help=argparse.SUPPRESS)
  parser.add_argument("--workload", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if not args.cores:
    args.cores = ",".join(str(c) for c in sorted(os.sched_getaffinity(0))[:2])
  if args.worker:
    worker(args)
    return
  workloads = args.workloads.split(",")
  unknown = sorted(set(workloads) - set(WORKLOADS))
  if unknown:
    parser.error(f"unknown workloads {unknown}; choose from {', '.join(WORKLOADS)}")

  rows = []
  for workload in workloads:
    rows.append(run_workload(workload, args))
    print(f"measured {workload}", file=sys.stderr, flush=True)
  print(f"{args.device}, cores {args.cores}; {rows[0]['jimb']['version']}; "
        f"{rows[0]['torch']['version']}; {args.rounds} rounds of {args.seconds:g} s per side\n")
  print("| workload | jimb best | jimb median | PyTorch best | PyTorch median | jimb / PyTorch "
        "(median) | jimb per CPU s | PyTorch per CPU s | ratio per CPU s | jimb first step s | "
        "PyTorch first step s | loadavg before / after | others' busy cores (max) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    j, t = r["jimb"], r["torch"]
    print(f"| {describe(r['workload'])} | {j['best']:.1f} | {j['median']:.1f} | {t['best']:.1f} | "
          f"{t['median']:.1f} | {j['median'] / t['median']:.2f} | {j['per_cpu_s']:.1f} | "
          f"{t['per_cpu_s']:.1f} | {j['per_cpu_s'] / t['per_cpu_s']:.2f} | {j['first_s']:.1f} | "
          f"{t['first_s']:.2f} | {r['load_before']} / {r['load_after']} | "
          f"{r['others_busy']:.2f} |")
  print("\nRates: images per second (DCGAN: GAN steps per second, one D and one G update each).")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
  main()

"""A class-conditional denoising diffusion model that synthesises images of every class at once.

Training (Ho et al. 2020, "Denoising Diffusion Probabilistic Models", Algorithm 1): a step t is
drawn uniformly from {0 .. T-1}, x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, and the U-Net
(jimb.generative.unet) learns eps from (x_t, t, y) under MSE. The noise schedule is the cosine
one of Nichol & Dhariwal 2021 ("Improved DDPM", openai/improved-diffusion): abar(t) =
f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2), s = 0.008, with each beta clipped at
0.999. Sampling is DDIM (Song et al. 2021) over `sample_steps` evenly spaced steps, and x_0's
prediction is clipped to the data range at each step, as improved-diffusion's `clip_denoised`.
eta 1 (the default) adds the DDPM's noise at each step; eta 0 makes sampling deterministic given
the initial noise, but it carries a model's errors to the end: after the CPU-sized 2000 steps on
PneumoniaMNIST (before unet.group_count), 23 % of eta-0 samples were noise and none of the
eta-1 samples from the same model (docs/reproductions.md). Samples come from the exponential moving average of the weights,
as in both papers.

Published settings kept: T = 1000, Adam at 2e-4 with gradients clipped to norm 1, dropout 0.1,
a linear warm-up (Ho et al.'s CIFAR-10 run). Sized down by default for 28x28 images on a CPU
(see synth.ddpm in jimb/config.py): widths 32,64 with one residual block per level, where Ho et
al. use 128 x (1, 2, 2, 2) with two and attention at 16x16; EMA decay 0.999 (theirs 0.9999
averages over ~10^4 steps, longer than a CPU run) and 100 warm-up steps (theirs 5000).

One model learns every class (no per-class stack). The training rows stay on the device and a
step's batch is row indices drawn from (the run's seed, step), so a resumed run
(jimb.generative.loop) draws the batches it would have drawn; with a mesh the batch axis is split
over 'data' and the model is replicated. Images arrive in [0, 1] and are scaled to [-1, 1].
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax

from jimb import checkpointing, compiler, tracking
from jimb import mesh as mesh_lib
from jimb.generative import loop, unet

_PREFIX = "--config.synth.ddpm."
_SAMPLE_CHUNK = 256  # rows per sampling call: one compiled program for any n
_ROW_BUCKET = 256    # training rows are padded to a multiple of this, so folds share a program
COSINE_S = 0.008     # Nichol & Dhariwal's offset, which keeps beta_0 from vanishing
MAX_BETA = 0.999


@dataclasses.dataclass(frozen=True)
class DDPMSpec:
  """A DDPM's options; the defaults are synth.ddpm's (CPU-sized, see the module docstring)."""
  image_shape: tuple
  num_classes: int
  widths: tuple = (32, 64)    # U-Net channels per level, full resolution first
  res_blocks: int = 1         # residual blocks per level on the way down
  embed_dim: int = 128        # time and class embedding size (Ho et al.: 4 x widths[0])
  dropout: float = 0.1
  timesteps: int = 1000       # T
  sample_steps: int = 50      # DDIM steps
  eta: float = 1.0            # DDIM's sigma scale: 0 deterministic, 1 the DDPM's variance
  steps: int = 2000           # optimiser updates
  batch_size: int = 64
  learning_rate: float = 2e-4
  warmup_steps: int = 100
  grad_clip: float = 1.0
  ema_decay: float = 0.999

  def __post_init__(self):
    shape = tuple(int(d) for d in self.image_shape)
    widths = tuple(int(w) for w in self.widths)
    unet.check_image_shape(shape, widths, _PREFIX)
    if self.num_classes < 1:
      raise ValueError(f"a class-conditional DDPM needs at least one class, got {self.num_classes}")
    for name in ("res_blocks", "embed_dim", "timesteps", "sample_steps", "steps", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"{_PREFIX}{name} must be at least 1, got {getattr(self, name)}")
    if self.sample_steps > self.timesteps:
      raise ValueError(f"{_PREFIX}sample_steps={self.sample_steps} exceeds timesteps="
                       f"{self.timesteps}; DDIM visits a subset of the T steps")
    if not 0 <= self.dropout < 1 or not 0 <= self.eta <= 1 or not 0 <= self.ema_decay <= 1:
      raise ValueError(f"{_PREFIX}dropout must lie in [0, 1), eta and ema_decay in [0, 1]; got "
                       f"{self.dropout}, {self.eta}, {self.ema_decay}")
    if min(widths) < 1:
      raise ValueError(f"{_PREFIX}widths must be positive, got {widths}")
    object.__setattr__(self, "image_shape", shape)
    object.__setattr__(self, "widths", widths)


OPTIONS = tuple(f.name for f in dataclasses.fields(DDPMSpec) if f.name not in
                ("image_shape", "num_classes"))
SAMPLING_OPTIONS = ("sample_steps", "eta")  # options training never reads


def spec_from_config(block, image_shape: Sequence[int], num_classes: int) -> DDPMSpec:
  """The DDPMSpec of the config block synth.ddpm; `widths` is comma-separated ints, and an
  option the block does not take is an error naming it."""
  options = dict(block)
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise ValueError(f"--config.synth.ddpm has no option(s) {unknown}; it takes {list(OPTIONS)}")
  if isinstance(options.get("widths"), str):
    try:
      options["widths"] = tuple(int(v) for v in options["widths"].split(","))
    except ValueError:
      raise ValueError(f"{_PREFIX}widths={options['widths']!r} must be comma-separated "
                       "integers, e.g. 32,64") from None
  return DDPMSpec(image_shape=tuple(image_shape), num_classes=num_classes, **options)


def cosine_alpha_bar(timesteps: int) -> np.ndarray:
  """abar_t for t = 0 .. T-1 (t = 0 is the first noising step): the product of 1 - beta, where
  beta_t = min(1 - abar((t + 1) / T) / abar(t / T), 0.999) and abar is the cosine formula."""
  f = lambda u: np.cos((u + COSINE_S) / (1 + COSINE_S) * math.pi / 2) ** 2
  u = np.arange(timesteps + 1, dtype=np.float64) / timesteps
  betas = np.minimum(1.0 - f(u[1:]) / f(u[:-1]), MAX_BETA)
  return np.cumprod(1.0 - betas)


def q_sample(alpha_bar: jax.Array, x0: jax.Array, t: jax.Array, noise: jax.Array) -> jax.Array:
  """x_t ~ q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), from the given noise."""
  a = alpha_bar[t].reshape(-1, *([1] * (x0.ndim - 1)))
  return jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * noise


def ddim_timesteps(spec: DDPMSpec) -> np.ndarray:
  """The `sample_steps` steps DDIM visits, descending: 0, T // S, 2 T // S, ... as
  improved-diffusion's "ddimS" spacing. It never starts at T - 1, where the clipped cosine
  schedule leaves abar ~ 1e-9 and x_0's prediction divides the noise error by sqrt(abar)."""
  stride = spec.timesteps // spec.sample_steps
  return np.arange(0, stride * spec.sample_steps, stride, dtype=np.int32)[::-1].copy()


@flax.struct.dataclass
class DDPMState:
  step: jax.Array
  params: Any
  ema: Any
  opt: Any


@dataclasses.dataclass
class TrainedDDPM:
  spec: DDPMSpec
  graphdef: nnx.GraphDef
  state: DDPMState
  history: dict


def build(spec: DDPMSpec, key: jax.Array) -> unet.UNet:
  return unet.UNet(spec.image_shape, widths=spec.widths, res_blocks=spec.res_blocks,
                   embed_dim=spec.embed_dim, num_classes=spec.num_classes, dropout=spec.dropout,
                   rngs=nnx.Rngs(key))


def _optimizer(spec: DDPMSpec) -> optax.GradientTransformation:
  warmup = optax.linear_schedule(0.0, spec.learning_rate, spec.warmup_steps)
  schedule = warmup if spec.warmup_steps else spec.learning_rate
  return optax.chain(optax.clip_by_global_norm(spec.grad_clip), optax.adam(schedule))


@functools.lru_cache(maxsize=None)
def _compiled_init(spec: DDPMSpec, mesh):
  """Jitted `init(key) -> DDPMState`, and a holder the graph definition lands in."""
  graphs = []
  tx = _optimizer(spec)

  def init(key):
    graph, params = nnx.split(build(spec, key))
    graphs[:] = [graph]
    return DDPMState(step=jnp.zeros((), jnp.int32), params=params, ema=params,
                     opt=tx.init(params))

  return (mesh_lib.jit_replicated(init, mesh, compiler_options=compiler.init_options()),
          graphs)


def _training_part(spec: DDPMSpec) -> DDPMSpec:
  """`spec` with the run's length and the SAMPLING_OPTIONS, which training never reads, at fixed
  values: runs of any length and sampler then share one compiled init and step."""
  return dataclasses.replace(spec, steps=1, sample_steps=1, eta=0.0)


def init_state(spec: DDPMSpec, key: jax.Array, mesh=None) -> tuple[nnx.GraphDef, DDPMState]:
  init, graphs = _compiled_init(_training_part(spec), mesh)
  state = init(key if mesh is None else mesh_lib.replicate(key, mesh))
  return graphs[0], state


def loss_fn(spec: DDPMSpec, graph: nnx.GraphDef, params, x0: jax.Array, y: jax.Array,
            key: jax.Array) -> jax.Array:
  """The simple loss: mean over the batch of ||eps - eps_theta(x_t, t, y)||^2 / pixels."""
  alpha_bar = jnp.asarray(cosine_alpha_bar(spec.timesteps), jnp.float32)
  k_t, k_eps, k_drop = jax.random.split(key, 3)
  t = jax.random.randint(k_t, (len(x0),), 0, spec.timesteps)
  noise = jax.random.normal(k_eps, x0.shape)
  model = nnx.merge(graph, params)
  return jnp.mean((noise - model(q_sample(alpha_bar, x0, t, noise), t, y, k_drop)) ** 2)


def train_step(spec: DDPMSpec, graph: nnx.GraphDef, state: DDPMState, rows: jax.Array,
               labels: jax.Array, idx: jax.Array, key: jax.Array):
  """One optimiser update on the rows `idx` picks, then the EMA update; `key` is the step's own
  (the loop folds the step into the run's key)."""
  tx = _optimizer(spec)
  loss, grads = jax.value_and_grad(
      lambda p: loss_fn(spec, graph, p, rows[idx], labels[idx], key))(state.params)
  updates, opt = tx.update(grads, state.opt, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = ema_decay(spec, state.step)
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema, params)
  return DDPMState(step=state.step + 1, params=params, ema=ema, opt=opt), {"loss": loss}


def ema_decay(spec: DDPMSpec, step: jax.Array) -> jax.Array:
  """The EMA's decay at update `step` (0-based): min(ema_decay, (1 + step) / (10 + step)).

  With a fixed 0.999 the average of a 400-step run is still two thirds the random initial
  weights (0.999 ** 400 = 0.67), and it samples noise; the warm-up (tf.train.
  ExponentialMovingAverage's num_updates rule) lets it follow the weights early on and reach
  ema_decay after about 10 / (1 - ema_decay) steps."""
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(spec.ema_decay, (1.0 + step) / (10.0 + step))


@functools.lru_cache(maxsize=None)
def compiled_step(spec: DDPMSpec, graph: nnx.GraphDef, mesh=None):
  return mesh_lib.jit_replicated(functools.partial(train_step, spec, graph), mesh,
                                 donate_argnums=0)


def _check_data(spec: DDPMSpec, x: np.ndarray, y: np.ndarray) -> None:
  if x.ndim != 4 or x.shape[1:] != spec.image_shape or not len(x):
    raise ValueError(f"DDPM images have shape {x.shape}; expected [N >= 1, *{spec.image_shape}]")
  if not np.all(np.isfinite(x)) or x.min() < 0 or x.max() > 1:
    raise ValueError("DDPM images must be finite floats scaled to [0, 1]")
  if y.shape != (len(x),) or y.min() < 0 or y.max() >= spec.num_classes:
    raise ValueError(f"DDPM labels must be {len(x)} integers in [0, {spec.num_classes})")


def train(spec: DDPMSpec, x: np.ndarray, y: np.ndarray, key: jax.Array, *,
          mesh: jax.sharding.Mesh | None = None,
          ckpt: checkpointing.FoldCheckpoints | None = None, checkpoint_every: int = 0,
          log_every: int = 100, log: loop.Log = print,
          track: tracking.Tracking = tracking.OFF) -> TrainedDDPM:
  """Trains one DDPM on images `x` in [0, 1] with labels `y`; resumes from `ckpt`'s latest
  checkpoint when it has one. With `mesh` the batch is split over its 'data' axis."""
  x, y = np.asarray(x, np.float32), np.asarray(y, np.int32)
  _check_data(spec, x, y)
  if mesh is not None:
    mesh_lib.check_batch_size(spec.batch_size, mesh, f"{_PREFIX}batch_size")
  init_key, step_key, data_key = jax.random.split(key, 3)
  seed = np.asarray(jax.random.key_data(data_key)).tolist()
  pad = (-len(x)) % _ROW_BUCKET
  rows = np.concatenate([x * 2.0 - 1.0, np.zeros((pad, *x.shape[1:]), np.float32)])
  labels = np.concatenate([y, np.zeros(pad, np.int32)])
  if mesh is None:
    rows, labels = jax.device_put((rows, labels))
  else:
    rows, labels = mesh_lib.replicate((rows, labels), mesh)
    idx_sharding = NamedSharding(mesh, P("data"))

  def batch_fn(step: int) -> jax.Array:
    rng = np.random.default_rng([*seed, step])
    idx = rng.choice(len(x), spec.batch_size, replace=len(x) < spec.batch_size).astype(np.int32)
    return jax.device_put(idx) if mesh is None else mesh_lib.put(idx, idx_sharding)

  graph, state = init_state(spec, init_key, mesh)
  step = compiled_step(_training_part(spec), graph, mesh)
  log(f"  ddpm: one model of {spec.num_classes} classes on {len(x)} images, {spec.steps} steps, "
      f"batch {spec.batch_size}")
  state, history = loop.run(lambda s, idx, k: step(s, rows, labels, idx, k), state, batch_fn,
                            key=step_key, num_steps=spec.steps, members=["all classes"],
                            ckpt=ckpt, checkpoint_every=checkpoint_every, log_every=log_every,
                            what="ddpm", lr_key=f"{_PREFIX}learning_rate", log=log, track=track)
  return TrainedDDPM(spec=spec, graphdef=graph, state=state, history=history)


def ddim_sample(spec: DDPMSpec, eps_fn: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
                y: jax.Array, key: jax.Array) -> jax.Array:
  """Images of labels `y` in [-1, 1] by DDIM from x_T ~ N(0, I) drawn from `key`, with
  `eps_fn(x_t, t [B], y)` the noise prediction.

  x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z, with
  sigma = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev) and abar = 1
  after the last step.
  """
  alpha_bar = jnp.asarray(cosine_alpha_bar(spec.timesteps), jnp.float32)
  ts = jnp.asarray(ddim_timesteps(spec))
  prev = jnp.concatenate([alpha_bar[ts[1:]], jnp.ones(1)])
  k_init, k_steps = jax.random.split(key)
  x = jax.random.normal(k_init, (len(y), *spec.image_shape))

  def body(x, inputs):
    t, a_prev, k = inputs
    a = alpha_bar[t]
    eps = eps_fn(x, jnp.full((len(y),), t), y)
    x0 = jnp.clip((x - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a), -1.0, 1.0)
    eps = (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)   # consistent with the clipped x0
    sigma = spec.eta * jnp.sqrt((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev))
    x = (jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1.0 - a_prev - sigma**2, 0.0)) * eps
         + sigma * jax.random.normal(k, x.shape))
    return x, None

  x, _ = jax.lax.scan(body, x, (ts, prev, jax.random.split(k_steps, len(ts))))
  return x


@functools.lru_cache(maxsize=None)
def _compiled_sample(spec: DDPMSpec, graph: nnx.GraphDef):
  def generate(params, y, key):
    return ddim_sample(spec, nnx.merge(graph, params), y, key)

  return jax.jit(generate)


def sample(trained: TrainedDDPM, label: int, n: int, key: jax.Array) -> np.ndarray:
  """n images of class `label` in [0, 1], from the EMA weights."""
  spec = trained.spec
  if not 0 <= label < spec.num_classes:
    raise ValueError(f"DDPM label {label} is outside [0, {spec.num_classes})")
  generate = _compiled_sample(spec, trained.graphdef)
  y = jnp.full((_SAMPLE_CHUNK,), label, jnp.int32)
  params = jax.device_get(trained.state.ema)
  chunks = [np.asarray(generate(params, y, jax.random.fold_in(key, i)))
            for i in range(-(-n // _SAMPLE_CHUNK))]
  x = np.concatenate(chunks)[:n] if chunks else np.zeros((0, *spec.image_shape), np.float32)
  return np.clip((x + 1.0) / 2.0, 0.0, 1.0)

"""GANs that synthesise minority samples inside a fold, K models trained at once in one program.

Unconditional kinds train one GAN per minority class. Their K state pytrees are stacked on a
leading axis and one jitted step runs `jax.vmap` of the single-model step, so K small GANs cost
one program and one dispatch per step instead of K. cgan is one conditional model (a stack of
one) trained on every training row of the fold with its label. Each member has its own key and
draws its own batches from (its seed, step), so a member trains the same alone or stacked, and a
resumed run draws the batches it would have drawn. Data arrive in the caller's representation:
images in [0, 1] are scaled to the generator's tanh range [-1, 1], tables are standardised with
the member's own mean and std; samples come back in that representation. A step's real
batches are row indices [K, critic updates, B] into the device-resident data; with a mesh their
batch axis (2) is split over 'data' and the models are replicated.

On XLA:CPU vmapped convolutions become grouped convolutions, and stacked conv GANs ran ~1.3-1.5x
slower than the same GANs one after another (stacked MLP GANs ran faster); see
benchmarks/gan_stacked.py. Stacking pays where small per-model kernels leave an accelerator idle.

Kinds (seed 004; WGAN-GP of seed 002 is Gulrajani et al., 2017):
  dcgan    conv nets, BCE, non-saturating G loss; Adam 2e-4, betas (0.5, 0.999)
  lsgan    least squares to targets 1 / 0; fully connected nets by default, as in seed 004
  cgan     conditional nets, BCE; fakes carry the labels of the real batch they are set against
  wgan_gp  critic E[D(fake)] - E[D(real)] + gp_weight * E[(||grad D(x_hat)|| - 1)^2] with
           n_critic critic updates, each on a fresh real batch, per G update; Adam 1e-4, betas
           (0.0, 0.9) as in the paper's Algorithm 1; the conv critic uses LayerNorm
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import flax
from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax

from jimb import checkpointing, compiler, tracking
from jimb.generative import loop, nets
from jimb import mesh as mesh_lib

KINDS = ("dcgan", "lsgan", "cgan", "wgan_gp")
_ADAM = {"wgan_gp": (1e-4, 0.0, 0.9)}  # (learning rate, beta1, beta2); the others use DCGAN's
_DCGAN_ADAM = (2e-4, 0.5, 0.999)
_SAMPLE_CHUNK = 256  # rows per generator call in `sample`: one compiled program for any n
_ROW_BUCKET = 256    # training rows are padded to a multiple of this (see `_pad_rows`)


@dataclasses.dataclass(frozen=True)
class GANSpec:
  """One GAN kind and its hyperparameters; `None` optimiser settings take the kind's defaults."""
  kind: str                 # dcgan | lsgan | cgan | wgan_gp
  sample_shape: tuple       # (H, W, C) or (F,)
  arch: str = "auto"        # auto | conv | mlp (auto: conv for images except lsgan; mlp for tables)
  num_classes: int = 0      # > 0 only for cgan (conditioning)
  latent_dim: int = 100
  widths: tuple = (64, 32)  # conv generator stages, first (smallest) stage first
  hidden: tuple = (256, 256)  # mlp
  steps: int = 2000         # generator updates
  batch_size: int = 64
  learning_rate: float | None = None
  beta1: float | None = None
  beta2: float | None = None
  n_critic: int = 5         # wgan_gp critic updates per generator update
  gp_weight: float = 10.0
  embed_dim: int = 50       # cgan label embedding

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"unknown GAN --config.synth.method={self.kind!r}; choose one of {KINDS}")
    shape = tuple(int(d) for d in self.sample_shape)
    if len(shape) not in (1, 3):
      raise ValueError(f"GANs take images (H, W, C) or table rows (F,); got sample shape {shape}")
    arch = self.arch
    if arch == "auto":
      arch = "conv" if len(shape) == 3 and self.kind != "lsgan" else "mlp"
    if arch not in ("conv", "mlp"):
      raise ValueError(f"unknown --config.synth.{self.kind}.arch={self.arch!r}; choose auto, "
                       "conv or mlp")
    if arch == "conv":
      nets.conv_start(shape, self.widths, f"--config.synth.{self.kind}.")
    if (self.kind == "cgan") != (self.num_classes > 0) or self.num_classes == 1:
      raise ValueError(f"num_classes={self.num_classes} for a {self.kind} GAN: cgan conditions on "
                       "at least 2 classes and the other kinds on none")
    for name in ("steps", "batch_size", "n_critic", "latent_dim"):
      if getattr(self, name) < 1:
        raise ValueError(f"--config.synth.{self.kind}.{name} must be at least 1, got "
                         f"{getattr(self, name)}")
    defaults = _ADAM.get(self.kind, _DCGAN_ADAM)
    values = dict(sample_shape=shape, arch=arch, widths=tuple(self.widths),
                  hidden=tuple(self.hidden))
    for name, default in zip(("learning_rate", "beta1", "beta2"), defaults):
      values[name] = default if getattr(self, name) is None else float(getattr(self, name))
    for name, value in values.items():
      object.__setattr__(self, name, value)

  @property
  def critic_updates(self) -> int:
    return self.n_critic if self.kind == "wgan_gp" else 1


# Each kind's config block (synth.<kind>): GANSpec's fields, widths / hidden as text.
_OPTIONS = ("arch", "latent_dim", "widths", "hidden", "steps", "batch_size", "learning_rate",
            "beta1", "beta2")
OPTIONS = {"dcgan": _OPTIONS, "lsgan": _OPTIONS, "cgan": (*_OPTIONS, "embed_dim"),
           "wgan_gp": (*_OPTIONS, "n_critic", "gp_weight")}


def spec_from_config(kind: str, block, sample_shape: Sequence[int], num_classes: int) -> GANSpec:
  """The GANSpec of `kind` from its config block `synth.<kind>`.

  `widths` / `hidden` are comma-separated ints; an option the kind does not take is an error
  naming it, and one the block lacks keeps GANSpec's default. `num_classes` (of the data set)
  is used by cgan only.
  """
  if kind not in KINDS:
    raise ValueError(f"unknown GAN --config.synth.method={kind!r}; choose one of {KINDS}")
  options = dict(block)
  unknown = sorted(set(options) - set(OPTIONS[kind]))
  if unknown:
    raise ValueError(f"--config.synth.{kind} has no option(s) {unknown}; it takes "
                     f"{list(OPTIONS[kind])}")
  for name in ("widths", "hidden"):
    value = options.get(name)
    if isinstance(value, str):
      try:
        options[name] = tuple(int(v) for v in value.split(","))
      except ValueError:
        raise ValueError(f"--config.synth.{kind}.{name}={value!r} must be comma-separated "
                         "integers, e.g. 64,32") from None
  return GANSpec(kind=kind, sample_shape=tuple(sample_shape),
                 num_classes=num_classes if kind == "cgan" else 0, **options)


# Losses on discriminator logits. BCE's D loss is the sum of its real and fake terms (as in
# DCGAN); LSGAN's is their mean (the 1/2 of the LSGAN paper).

def _bce_d(real, fake):
  return jnp.mean(jax.nn.softplus(-real)) + jnp.mean(jax.nn.softplus(fake))


def _bce_g(fake):
  return jnp.mean(jax.nn.softplus(-fake))  # non-saturating: -log sigmoid(D(G(z)))


def _ls_d(real, fake):
  return 0.5 * (jnp.mean((real - 1.0) ** 2) + jnp.mean(fake ** 2))


def _ls_g(fake):
  return jnp.mean((fake - 1.0) ** 2)


def _wasserstein_d(real, fake):
  return jnp.mean(fake) - jnp.mean(real)


def _wasserstein_g(fake):
  return -jnp.mean(fake)


_LOSSES = {"dcgan": (_bce_d, _bce_g), "cgan": (_bce_d, _bce_g), "lsgan": (_ls_d, _ls_g),
           "wgan_gp": (_wasserstein_d, _wasserstein_g)}


def discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """The kind's D loss, without WGAN-GP's gradient penalty."""
  return _LOSSES[kind][0](real_logits, fake_logits)


def generator_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
  return _LOSSES[kind][1](fake_logits)


def gradient_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     eps: jax.Array) -> jax.Array:
  """mean over rows of (||grad_x critic(x_hat)|| - 1)^2 at x_hat = eps * real + (1 - eps) * fake.

  `eps` holds one weight in [0, 1] per row. The gradient of the summed critic is each row's own
  gradient only when rows do not interact (no BatchNorm in the critic).
  """
  eps = eps.reshape(-1, *([1] * (real.ndim - 1)))
  x_hat = eps * real + (1.0 - eps) * fake
  grads = jax.grad(lambda x: critic(x).sum())(x_hat).reshape(len(real), -1)
  norms = jnp.sqrt(jnp.sum(grads ** 2, axis=1) + 1e-12)  # finite gradient at a zero gradient
  return jnp.mean((norms - 1.0) ** 2)


@flax.struct.dataclass
class GANState:
  step: jax.Array
  g_params: Any
  g_rest: Any        # non-parameter state (BatchNorm statistics)
  d_params: Any
  d_rest: Any
  g_opt: Any
  d_opt: Any


@dataclasses.dataclass
class TrainedGAN:
  """Trained members: `state` has a leading member axis; `stats` maps samples back to the data."""
  spec: GANSpec
  graphdefs: tuple          # (generator, discriminator)
  state: GANState
  stats: dict               # "mean", "std": [K, ...]; data = internal * std + mean
  history: dict             # metric -> one list of per-member values per step


def build(spec: GANSpec, key: jax.Array) -> tuple[nnx.Module, nnx.Module]:
  """The generator and discriminator of `spec`, initialised from `key`."""
  rngs = nnx.Rngs(key)
  common = dict(rngs=rngs, num_classes=spec.num_classes)
  if spec.arch == "conv":
    g = nets.ConvGenerator(spec.sample_shape, widths=spec.widths, latent_dim=spec.latent_dim,
                           embed_dim=spec.embed_dim, **common)
    d = nets.ConvDiscriminator(spec.sample_shape, widths=spec.widths,
                               norm="layer" if spec.kind == "wgan_gp" else "batch", **common)
  else:
    g = nets.MLPGenerator(spec.sample_shape, hidden=spec.hidden, latent_dim=spec.latent_dim,
                          embed_dim=spec.embed_dim, tanh=len(spec.sample_shape) == 3, **common)
    d = nets.MLPDiscriminator(spec.sample_shape, hidden=spec.hidden, embed_dim=spec.embed_dim,
                              **common)
  return g, d


def _optimizer(spec: GANSpec) -> optax.GradientTransformation:
  return optax.adam(spec.learning_rate, b1=spec.beta1, b2=spec.beta2)


@functools.lru_cache(maxsize=None)
def _compiled_init(spec: GANSpec, mesh):
  """Jitted `init(keys [K]) -> stacked GANState`, and a holder the graph definitions land in."""
  graphs = []
  tx = _optimizer(spec)

  def init(key):
    g, d = build(spec, key)
    g_graph, g_params, g_rest = nnx.split(g, nnx.Param, ...)
    d_graph, d_params, d_rest = nnx.split(d, nnx.Param, ...)
    graphs[:] = [g_graph, d_graph]
    return GANState(step=jnp.zeros((), jnp.int32), g_params=g_params, g_rest=g_rest,
                    d_params=d_params, d_rest=d_rest, g_opt=tx.init(g_params),
                    d_opt=tx.init(d_params))

  return (mesh_lib.jit_replicated(jax.vmap(init), mesh,
                                  compiler_options=compiler.init_options()), graphs)


def init_state(spec: GANSpec, keys: jax.Array, mesh=None) -> tuple[tuple, GANState]:
  """(graphdefs, stacked state) of len(keys) members, member i initialised from keys[i]."""
  init, graphs = _compiled_init(spec, mesh)
  if mesh is not None:
    keys = mesh_lib.replicate(keys, mesh)
  state = init(keys)  # the first call traces `init`, which fills `graphs`
  return tuple(graphs), state


def member_step(spec: GANSpec, graphs: tuple, state: GANState, rows: jax.Array,
                labels: jax.Array | None, idx: jax.Array, key: jax.Array):
  """One generator update of one GAN after `spec.critic_updates` discriminator updates.

  `rows` (and, for cgan, `labels`) hold every member's internal-scale data; `idx` [critic
  updates, B] picks this member's real batches. `key` is the member's own; the step number is
  folded into it, so a member draws the same noise whether it is trained alone or stacked.
  """
  g_graph, d_graph = graphs
  d_loss_fn, g_loss_fn = _LOSSES[spec.kind]
  tx = _optimizer(spec)
  batch = idx.shape[-1]

  def generate(params, rest, key, y):
    g = nnx.merge(g_graph, params, rest, copy=True)
    fake = g(jax.random.normal(key, (batch, spec.latent_dim)), y, train=True)
    return fake, nnx.state(g, nnx.Not(nnx.Param))

  def critic(params, rest, x, y):
    d = nnx.merge(d_graph, params, rest, copy=True)
    return d(x, y, train=True)[:, 0], nnx.state(d, nnx.Not(nnx.Param))

  def d_update(state: GANState, inputs):
    real, y, key = inputs
    k_z, k_eps = jax.random.split(key)
    fake = jax.lax.stop_gradient(generate(state.g_params, state.g_rest, k_z, y)[0])

    def objective(params):
      real_logits, rest = critic(params, state.d_rest, real, y)
      fake_logits, rest = critic(params, rest, fake, y)
      loss = d_loss_fn(real_logits, fake_logits)
      if spec.kind == "wgan_gp":
        eps = jax.random.uniform(k_eps, (batch,))
        loss += spec.gp_weight * gradient_penalty(lambda x: critic(params, rest, x, y)[0],
                                                  real, fake, eps)
      return loss, rest

    (loss, rest), grads = jax.value_and_grad(objective, has_aux=True)(state.d_params)
    updates, opt = tx.update(grads, state.d_opt, state.d_params)
    return state.replace(d_params=optax.apply_updates(state.d_params, updates), d_rest=rest,
                         d_opt=opt), loss

  key = jax.random.fold_in(key, state.step)
  k_d, k_g = jax.random.split(key)
  y = None if labels is None else labels[idx]
  state, d_losses = jax.lax.scan(d_update, state,
                                 (rows[idx], y, jax.random.split(k_d, len(idx))))
  y = None if y is None else y[-1]  # fakes carry the labels of the last real batch

  def objective(params):
    fake, rest = generate(params, state.g_rest, k_g, y)
    return g_loss_fn(critic(state.d_params, state.d_rest, fake, y)[0]), rest

  (g_loss, g_rest), grads = jax.value_and_grad(objective, has_aux=True)(state.g_params)
  updates, opt = tx.update(grads, state.g_opt, state.g_params)
  state = state.replace(step=state.step + 1, g_params=optax.apply_updates(state.g_params, updates),
                        g_rest=g_rest, g_opt=opt)
  return state, {"d_loss": d_losses.mean(), "g_loss": g_loss}


@functools.lru_cache(maxsize=None)
def compiled_step(spec: GANSpec, graphs: tuple, mesh=None):
  """Jitted `step(state [K], rows, labels, idx [K, n, B], keys [K])`: vmap of `member_step`.

  One program per (spec, mesh) and shape: K separate runs of the same spec share it.
  """
  step = jax.vmap(functools.partial(member_step, spec, graphs), in_axes=(0, None, None, 0, 0))
  return mesh_lib.jit_replicated(step, mesh, donate_argnums=0)


def _member_keys(key: jax.Array, k: int) -> jax.Array:
  """One key per member: `key` split K ways, or `key` itself when it already holds K keys."""
  if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    key = jax.random.wrap_key_data(key)
  if key.ndim == 0:
    return jax.random.split(key, k)
  if key.shape != (k,):
    raise ValueError(f"got {key.shape[0]} keys for {k} GAN members; pass one key or one per member")
  return key


def _scaling(x: np.ndarray, table: bool) -> tuple[np.ndarray, np.ndarray]:
  """(mean, std) that map a member's data to the generator's range: internal = (x - mean) / std."""
  if not table:
    return np.full((1, 1, 1), 0.5, np.float32), np.full((1, 1, 1), 0.5, np.float32)
  std = x.std(axis=0)
  return x.mean(axis=0).astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _pad_rows(x: np.ndarray) -> np.ndarray:
  """Zero rows up to a multiple of _ROW_BUCKET (never drawn): folds and classes of similar size
  then share one compiled step instead of compiling one per row count."""
  return np.concatenate([x, np.zeros(((-len(x)) % _ROW_BUCKET, *x.shape[1:]), x.dtype)])


def _check_data(spec: GANSpec, data: list, labels: list | None, members: list[str]) -> None:
  if not data:
    raise ValueError("GAN training needs at least one data array")
  if len(members) != len(data):
    raise ValueError(f"{len(members)} member names for {len(data)} data arrays")
  if (spec.kind == "cgan") != (labels is not None) or (labels is not None and len(data) != 1):
    raise ValueError("cgan trains one model on one data array with its labels; the other kinds "
                     "take one data array per member and no labels")
  for name, x in zip(members, data):
    if x.ndim != len(spec.sample_shape) + 1 or x.shape[1:] != spec.sample_shape or not len(x):
      raise ValueError(f"GAN data for {name} has shape {x.shape}; expected [N >= 1, "
                       f"*{spec.sample_shape}]")
    if not np.all(np.isfinite(x)):
      raise ValueError(f"GAN data for {name} has non-finite values; impute or drop them first")
    if len(spec.sample_shape) == 3 and (x.min() < 0 or x.max() > 1):
      raise ValueError(f"GAN images for {name} lie in [{x.min()}, {x.max()}]; pass float images "
                       "scaled to [0, 1]")
  if labels is not None:
    y = np.asarray(labels[0])
    if y.shape != (len(data[0]),) or y.min() < 0 or y.max() >= spec.num_classes:
      raise ValueError(f"cgan labels must be {len(data[0])} integers in [0, {spec.num_classes})")


def train(spec: GANSpec, data: list[np.ndarray], key: jax.Array, *,
          labels: list[np.ndarray] | None = None, mesh: jax.sharding.Mesh | None = None,
          ckpt: checkpointing.FoldCheckpoints | None = None, checkpoint_every: int = 0,
          log_every: int = 100, members: Sequence[str] | None = None,
          log: loop.Log = print, track: tracking.Tracking = tracking.OFF) -> TrainedGAN:
  """Trains one GAN per data array (cgan: one on `data[0]` with `labels[0]`), all stacked.

  `key` is one key (split per member) or one key per member. With `mesh` the batch is split
  over its 'data' axis and the models are replicated. `ckpt` makes the run resumable: it
  continues from the latest checkpoint there; `track` shows and records the steps. A
  non-finite loss raises FloatingPointError naming the member.
  """
  data = [np.asarray(x, np.float32) for x in data]
  members = list(members) if members is not None else [f"member {i}" for i in range(len(data))]
  _check_data(spec, data, labels, members)
  if mesh is not None:
    mesh_lib.check_batch_size(spec.batch_size, mesh, f"--config.synth.{spec.kind}.batch_size")
  k = len(data)
  table = len(spec.sample_shape) == 1
  init_keys, step_keys, data_keys = jnp.moveaxis(
      jax.vmap(lambda m: jax.random.split(m, 3))(_member_keys(key, k)), 1, 0)
  seeds = np.asarray(jax.random.key_data(data_keys)).tolist()
  scales = [_scaling(x, table) for x in data]
  rows = _pad_rows(np.concatenate([(x - m) / s for x, (m, s) in zip(data, scales)]))
  offsets = np.cumsum([0] + [len(x) for x in data[:-1]])
  y = None if labels is None else _pad_rows(np.asarray(labels[0], np.int32))
  if mesh is None:
    rows, y, step_keys = jax.device_put((rows, y, step_keys))
  else:
    rows, y, step_keys = mesh_lib.replicate((rows, y, step_keys), mesh)
    idx_sharding = NamedSharding(mesh, P(None, None, "data"))
  n_batches = spec.critic_updates

  def batch_fn(step: int) -> jax.Array:
    idx = []
    for seed, offset, x in zip(seeds, offsets, data):
      rng = np.random.default_rng([*seed, step])
      idx.append([offset + rng.choice(len(x), spec.batch_size, replace=len(x) < spec.batch_size)
                  for _ in range(n_batches)])
    idx = np.asarray(idx, np.int32)
    return jax.device_put(idx) if mesh is None else mesh_lib.put(idx, idx_sharding)

  graphs, state = init_state(spec, init_keys, mesh)
  step = compiled_step(spec, graphs, mesh)
  log(f"  {spec.kind}: {k} model(s) of {members}, {spec.steps} steps, batch {spec.batch_size}")
  # Members fold the step into their own keys (see `member_step`); the loop's key is unused.
  state, history = loop.run(lambda s, idx, _: step(s, rows, y, idx, step_keys), state, batch_fn,
                            key=jax.random.key(0), num_steps=spec.steps, members=members,
                            ckpt=ckpt, checkpoint_every=checkpoint_every, log_every=log_every,
                            what=spec.kind, lr_key=f"--config.synth.{spec.kind}.learning_rate",
                            log=log, track=track)
  stats = {"mean": np.stack([m for m, _ in scales]), "std": np.stack([s for _, s in scales])}
  return TrainedGAN(spec=spec, graphdefs=graphs, state=state, stats=stats, history=history)


@functools.lru_cache(maxsize=None)
def _compiled_generate(spec: GANSpec, g_graph: nnx.GraphDef):
  def generate(params, rest, key, y):
    g = nnx.merge(g_graph, params, rest, copy=True)
    return g(jax.random.normal(key, (_SAMPLE_CHUNK, spec.latent_dim)), y, train=False)

  return jax.jit(generate)


def sample(trained: TrainedGAN, member: int, n: int, key: jax.Array,
           label: int | None = None) -> np.ndarray:
  """n samples of `member` (cgan: of class `label`) in the caller's representation.

  The generator runs in inference mode (BatchNorm running statistics); images come back in
  [0, 1], table rows in the scale of the member's data.
  """
  spec = trained.spec
  k = len(trained.stats["mean"])
  if not 0 <= member < k:
    raise ValueError(f"GAN member {member} does not exist; there are {k}")
  if (spec.kind == "cgan") != (label is not None):
    raise ValueError("cgan samples need a label and the other kinds take none")
  if label is not None and not 0 <= label < spec.num_classes:
    raise ValueError(f"cgan label {label} is outside [0, {spec.num_classes})")
  params, rest = jax.tree.map(lambda a: a[member], (trained.state.g_params, trained.state.g_rest))
  generate = _compiled_generate(spec, trained.graphdefs[0])
  y = None if label is None else jnp.full((_SAMPLE_CHUNK,), label, jnp.int32)
  chunks = [np.asarray(generate(params, rest, jax.random.fold_in(key, i), y))
            for i in range(-(-n // _SAMPLE_CHUNK))]
  x = np.concatenate(chunks)[:n] if chunks else np.zeros((0, *spec.sample_shape), np.float32)
  x = x * trained.stats["std"][member] + trained.stats["mean"][member]
  return np.clip(x, 0.0, 1.0) if len(spec.sample_shape) == 3 else x

"""CycleGAN (Zhu et al. 2017) from one source class to K target classes, trained as one program.

Seed 000 translates majority-class images (HAM10000's nv) into each minority class with one
CycleGAN per minority class. The K pairs share domain A (the source) and differ in domain B; their
states are stacked on a leading axis K, and one jitted step is `jax.vmap` of the single-pair step,
so K small models fill the accelerator together instead of queueing. Losses, image pool,
optimiser and learning-rate policy follow junyanz/pytorch-CycleGAN-and-pix2pix (`lsgan`, Adam
(0.5, 0.999), constant for `n_epochs` then linear decay over `n_epochs_decay`), with its naming:
G_A: A -> B, G_B: B -> A, D_A judges domain B, D_B domain A. The image pools live in the state,
so checkpoints hold them and a resumed run is the run that never stopped.

`arch` picks the nets (jimb.generative.cycle_nets): `conv` translates images in [0, 1] (the
reference's nets in [-1, 1], random horizontal flips), `mlp` translates table rows (seed 000's
NAFLD protocol) standardised with the per-feature mean and std of the rows the caller names (the
fold's training part), with the same losses, pool and schedule and no flips; translations come
back in the caller's space (images in [0, 1], rows in the original feature units), so a
classifier normalises real and synthetic rows alike.
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
import numpy as np
import optax

from jimb import checkpointing, compiler, tracking
from jimb.generative import cycle_nets, loop
from jimb import mesh as mesh_lib

_GAN_MODES = ("lsgan", "vanilla")
_ARCHS = ("conv", "mlp")


@dataclasses.dataclass(frozen=True)
class CycleSpec:
  """A CycleGAN's options, named and defaulted as the reference's."""

  sample_shape: tuple         # (H, W, C) for arch conv, (F,) for arch mlp
  arch: str = "conv"          # conv (images) | mlp (table rows)
  hidden: tuple = (128, 128)  # mlp: hidden sizes of the generators and discriminators
  ngf: int = 64
  ndf: int = 64
  n_blocks: int = 9
  n_layers_D: int = 3
  lambda_A: float = 10.0
  lambda_B: float = 10.0
  lambda_identity: float = 0.5
  pool_size: int = 50
  gan_mode: str = "lsgan"
  lr: float = 2e-4
  beta1: float = 0.5
  n_epochs: int = 100
  n_epochs_decay: int = 100
  batch_size: int = 1
  no_flip: bool = False       # the reference flips both domains' images horizontally at random

  def __post_init__(self):
    object.__setattr__(self, "sample_shape", tuple(int(s) for s in self.sample_shape))
    object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
    if self.arch not in _ARCHS:
      raise ValueError(f"--config.synth.cyclegan.arch={self.arch!r} is not one of {_ARCHS}")
    if self.arch == "conv":
      cycle_nets.check_image_shape(self.sample_shape, self.n_layers_D)
    elif len(self.sample_shape) != 1:
      raise ValueError(f"CycleGAN with arch=mlp translates table rows (F,); got shape "
                       f"{self.sample_shape}: set --config.synth.cyclegan.arch=conv for images")
    if not self.hidden or min(self.hidden) < 1:
      raise ValueError(f"--config.synth.cyclegan.hidden={self.hidden} needs at least one size, "
                       "each at least 1, e.g. 128,128")
    if self.gan_mode not in _GAN_MODES:
      raise ValueError(f"--config.synth.cyclegan.gan_mode={self.gan_mode!r} is not one of "
                       f"{_GAN_MODES}")
    for name in ("ngf", "ndf", "batch_size"):
      if getattr(self, name) < 1:
        raise ValueError(f"--config.synth.cyclegan.{name} must be at least 1, got "
                         f"{getattr(self, name)}")
    if self.n_blocks < 0 or self.pool_size < 0 or self.n_epochs < 0 or self.n_epochs_decay < 0:
      raise ValueError("--config.synth.cyclegan.n_blocks, pool_size, n_epochs and n_epochs_decay "
                       "must not be negative")
    if self.n_epochs + self.n_epochs_decay < 1:
      raise ValueError("CycleGAN needs at least one epoch: raise --config.synth.cyclegan.n_epochs")


# The config block synth.cyclegan: CycleSpec's fields, the learning rate as `learning_rate`,
# `hidden` as comma-separated sizes, and `source_class`, which the caller reads to pick domain A.
OPTIONS = ("source_class", "arch", "hidden", "ngf", "ndf", "n_blocks", "n_layers_D", "lambda_A",
           "lambda_B", "lambda_identity", "pool_size", "gan_mode", "no_flip", "n_epochs",
           "n_epochs_decay", "batch_size", "learning_rate", "beta1")


def spec_from_config(block, sample_shape: Sequence[int]) -> CycleSpec:
  """The CycleSpec of the config block `synth.cyclegan`.

  An option it does not take is an error naming it; one the block lacks keeps the reference's
  default.
  """
  options = dict(block)
  unknown = sorted(set(options) - set(OPTIONS))
  if unknown:
    raise ValueError(f"--config.synth.cyclegan has no option(s) {unknown}; it takes "
                     f"{list(OPTIONS)}")
  options.pop("source_class", None)
  if "learning_rate" in options:
    options["lr"] = options.pop("learning_rate")
  if isinstance(options.get("hidden"), str):
    try:
      options["hidden"] = tuple(int(h) for h in options["hidden"].split(","))
    except ValueError:
      raise ValueError(f"--config.synth.cyclegan.hidden={options['hidden']!r} must be "
                       "comma-separated integers, e.g. 128,128") from None
  return CycleSpec(sample_shape=tuple(sample_shape), **options)


def lr_schedule(spec: CycleSpec, steps_per_epoch: int) -> Callable[[jax.Array], jax.Array]:
  """The reference's 'linear' policy as a function of the optimiser step.

  Epochs count from 1 (the reference's `epoch_count`): epoch e has learning rate
  lr * (1 - max(0, e - n_epochs) / (n_epochs_decay + 1)).
  """

  def schedule(count):
    epoch = count // steps_per_epoch + 1
    return spec.lr * (1.0 - jnp.maximum(0, epoch - spec.n_epochs) / (spec.n_epochs_decay + 1))

  return schedule


@flax.struct.dataclass
class ImagePool:
  """The reference's ImagePool as arrays: `count` of `images` (or rows) are filled."""

  images: jax.Array   # [pool_size, *sample_shape]
  count: jax.Array    # int32 scalar


def empty_pool(pool_size: int, sample_shape: Sequence[int]) -> ImagePool | None:
  """An empty pool; None for pool_size 0 (no pool; checkpoints cannot hold empty arrays)."""
  if pool_size == 0:
    return None
  return ImagePool(images=jnp.zeros((pool_size, *sample_shape), jnp.float32),
                   count=jnp.zeros((), jnp.int32))


def query_pool(pool: ImagePool | None, images: jax.Array,
               key: jax.Array) -> tuple[ImagePool | None, jax.Array]:
  """Passes each image of the batch through the pool in order: (pool, returned images).

  Until the pool is full an image is stored and returned; then with probability 0.5 a stored
  image, drawn uniformly, is returned and replaced by it, else the image itself is returned.
  Without a pool (None) the images come back as they are.
  """
  if pool is None:
    return pool, images
  size = pool.images.shape[0]

  def one(pool, inputs):
    image, key = inputs
    k_p, k_id = jax.random.split(key)
    full = pool.count >= size
    swap = full & (jax.random.uniform(k_p) > 0.5)
    slot = jnp.where(full, jax.random.randint(k_id, (), 0, size), pool.count)
    stored = pool.images[slot]
    kept = jnp.where(full & ~swap, stored, image)
    pool = ImagePool(images=pool.images.at[slot].set(kept),
                     count=jnp.minimum(pool.count + 1, size))
    return pool, jnp.where(swap, stored, image)

  return jax.lax.scan(one, pool, (images, jax.random.split(key, images.shape[0])))


@flax.struct.dataclass
class PairState:
  """One CycleGAN (or K of them, stacked on a leading axis)."""

  g_params: Any       # {"G_A": ..., "G_B": ...}
  d_params: Any       # {"D_A": ..., "D_B": ...}
  g_opt: Any
  d_opt: Any
  pool_A: ImagePool | None   # generated A images (G_B's), shown to D_B
  pool_B: ImagePool | None   # generated B images (G_A's), shown to D_A


@dataclasses.dataclass
class TrainedCycleGAN:
  spec: CycleSpec
  graphdefs: tuple        # (generator, discriminator)
  state: PairState        # stacked: every leaf has a leading axis K
  history: dict
  scale: tuple            # (mean, std): data = nets' space * std + mean


def _optimizer(spec: CycleSpec, steps_per_epoch: int) -> optax.GradientTransformation:
  return optax.adam(lr_schedule(spec, steps_per_epoch), b1=spec.beta1, b2=0.999, eps=1e-8)


@functools.lru_cache(maxsize=None)
def _initializer(spec: CycleSpec, steps_per_epoch: int, mesh: jax.sharding.Mesh):
  """The jitted, vmapped pair builder and the graph definitions its trace records (cached, so
  repeated trainings of one spec do not compile it again)."""
  width = spec.sample_shape[-1]   # channels, or features
  if spec.arch == "conv":
    make_g = lambda rngs: cycle_nets.ResnetGenerator(width, ngf=spec.ngf, n_blocks=spec.n_blocks,
                                                     rngs=rngs)
    make_d = lambda rngs: cycle_nets.NLayerDiscriminator(width, ndf=spec.ndf,
                                                         n_layers_D=spec.n_layers_D, rngs=rngs)
  else:
    make_g = lambda rngs: cycle_nets.MLPGenerator(width, hidden=spec.hidden, rngs=rngs)
    make_d = lambda rngs: cycle_nets.MLPDiscriminator(width, hidden=spec.hidden, rngs=rngs)
  tx = _optimizer(spec, steps_per_epoch)
  graphdefs = [None, None]

  def init(key):
    k = jax.random.split(key, 4)
    g = {name: nnx.split(make_g(nnx.Rngs(kk)), nnx.Param)
         for name, kk in (("G_A", k[0]), ("G_B", k[1]))}
    d = {name: nnx.split(make_d(nnx.Rngs(kk)), nnx.Param)
         for name, kk in (("D_A", k[2]), ("D_B", k[3]))}
    graphdefs[:] = g["G_A"][0], d["D_A"][0]
    g_params = {name: p for name, (_, p) in g.items()}
    d_params = {name: p for name, (_, p) in d.items()}
    return PairState(g_params=g_params, d_params=d_params, g_opt=tx.init(g_params),
                     d_opt=tx.init(d_params),
                     pool_A=empty_pool(spec.pool_size, spec.sample_shape),
                     pool_B=empty_pool(spec.pool_size, spec.sample_shape))

  return jax.jit(jax.vmap(init), out_shardings=mesh_lib.replicated(mesh),
                 compiler_options=compiler.init_options()), graphdefs


def init_state(spec: CycleSpec, keys: jax.Array, steps_per_epoch: int,
               mesh: jax.sharding.Mesh) -> tuple[tuple, PairState]:
  """Builds K = len(keys) pairs in one jitted, vmapped program, replicated on `mesh`."""
  init, graphdefs = _initializer(spec, steps_per_epoch, mesh)
  state = init(keys)
  return tuple(graphdefs), state


def make_pair_step(spec: CycleSpec, graphdefs: tuple, steps_per_epoch: int):
  """The reference's `optimize_parameters` for one pair: `step(state, batch, key)`.

  `batch` holds "A" and "B", [B, *sample_shape]: images in [0, 1] (scaled to the nets' [-1, 1]
  here) or standardised rows (`train` standardises them). G_A and G_B take one Adam step on the
  generator loss, then D_A and D_B one on 0.5 * (real + fake) with fakes from the pools (the
  fakes of this step's forward pass, made before the generators' update).
  """
  g_def, d_def = graphdefs
  tx = _optimizer(spec, steps_per_epoch)
  lam_idt = spec.lambda_identity

  def gen(params, x):
    return nnx.merge(g_def, params, copy=True)(x)

  def disc(params, x):
    return nnx.merge(d_def, params, copy=True)(x)

  def gan_loss(logits, real: bool):
    target = jnp.full_like(logits, 1.0 if real else 0.0)
    if spec.gan_mode == "lsgan":
      return jnp.mean(jnp.square(logits - target))
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, target))

  def l1(a, b):
    return jnp.mean(jnp.abs(a - b))

  def prepare(key, x):
    if spec.arch == "mlp":
      return x
    x = x * 2.0 - 1.0
    if spec.no_flip:
      return x
    mirror = jax.random.bernoulli(key, 0.5, (x.shape[0], 1, 1, 1))
    return jnp.where(mirror, x[:, :, ::-1], x)

  def step(state: PairState, batch, key):
    k_fa, k_fb, k_pa, k_pb = jax.random.split(key, 4)
    real_A = prepare(k_fa, batch["A"])
    real_B = prepare(k_fb, batch["B"])

    def g_objective(g):
      fake_B = gen(g["G_A"], real_A)
      fake_A = gen(g["G_B"], real_B)
      losses = {
          "G_A": gan_loss(disc(state.d_params["D_A"], fake_B), True),
          "G_B": gan_loss(disc(state.d_params["D_B"], fake_A), True),
          "cycle_A": l1(gen(g["G_B"], fake_B), real_A) * spec.lambda_A,
          "cycle_B": l1(gen(g["G_A"], fake_A), real_B) * spec.lambda_B,
      }
      if lam_idt > 0:
        losses["idt_A"] = l1(gen(g["G_A"], real_B), real_B) * spec.lambda_B * lam_idt
        losses["idt_B"] = l1(gen(g["G_B"], real_A), real_A) * spec.lambda_A * lam_idt
      return sum(losses.values()), (losses, fake_A, fake_B)

    (_, (losses, fake_A, fake_B)), g_grads = jax.value_and_grad(g_objective, has_aux=True)(
        state.g_params)
    g_updates, g_opt = tx.update(g_grads, state.g_opt, state.g_params)
    pool_A, fake_A = query_pool(state.pool_A, jax.lax.stop_gradient(fake_A), k_pa)
    pool_B, fake_B = query_pool(state.pool_B, jax.lax.stop_gradient(fake_B), k_pb)

    def d_objective(d):
      d_losses = {
          "D_A": 0.5 * (gan_loss(disc(d["D_A"], real_B), True)
                        + gan_loss(disc(d["D_A"], fake_B), False)),
          "D_B": 0.5 * (gan_loss(disc(d["D_B"], real_A), True)
                        + gan_loss(disc(d["D_B"], fake_A), False)),
      }
      return sum(d_losses.values()), d_losses

    (_, d_losses), d_grads = jax.value_and_grad(d_objective, has_aux=True)(state.d_params)
    d_updates, d_opt = tx.update(d_grads, state.d_opt, state.d_params)
    new = PairState(g_params=optax.apply_updates(state.g_params, g_updates),
                    d_params=optax.apply_updates(state.d_params, d_updates),
                    g_opt=g_opt, d_opt=d_opt, pool_A=pool_A, pool_B=pool_B)
    return new, {**losses, **d_losses}

  return step


@functools.lru_cache(maxsize=None)
def make_step(spec: CycleSpec, graphdefs: tuple, steps_per_epoch: int, mesh: jax.sharding.Mesh):
  """One jitted step of K pairs: `step(state [K], batch [K, B, ...], keys [K])`, vmapped.

  Cached, so later folds and repeated trainings of the same shapes reuse the compiled step.
  """
  rep = mesh_lib.replicated(mesh)
  return jax.jit(jax.vmap(make_pair_step(spec, graphdefs, steps_per_epoch)),
                 out_shardings=(rep, rep), donate_argnums=0)


def steps_per_epoch(spec: CycleSpec, num_source: int) -> int:
  """An epoch passes once over the source class (shared by every pair)."""
  return math.ceil(num_source / spec.batch_size)


def _check_inputs(name: str, x: np.ndarray, spec: CycleSpec) -> np.ndarray:
  """float32 inputs of the spec's shape: images in [0, 1] (conv) or finite rows (mlp)."""
  x = np.asarray(x)
  if x.ndim != 1 + len(spec.sample_shape) or tuple(x.shape[1:]) != spec.sample_shape or not len(x):
    shape = ", ".join(map(str, spec.sample_shape))
    raise ValueError(f"CycleGAN {name} must be a non-empty [N, {shape}] array (the spec's "
                     f"sample_shape); got shape {x.shape}")
  if not np.issubdtype(x.dtype, np.floating):
    raise ValueError(f"CycleGAN {name} must be floats; got {x.dtype}")
  if spec.arch == "mlp" and not np.isfinite(x).all():
    raise ValueError(f"CycleGAN {name} rows hold NaN or infinite values; impute them first "
                     "(--config.data.impute=median)")
  if spec.arch == "conv" and not (x.min() >= 0.0 and x.max() <= 1.0):
    raise ValueError(f"CycleGAN {name} must be float images in [0, 1]; got {x.dtype} in "
                     f"[{x.min()}, {x.max()}]. Scale them to [0, 1] first")
  return x.astype(np.float32, copy=False)


def standardisation(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-feature (mean, std) of `rows` with std 1 for a constant feature: rows = z * std + mean."""
  std = rows.std(axis=0)
  return rows.mean(axis=0).astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def _batches(source: np.ndarray, targets: list[np.ndarray], batch_size: int, seed: list[int],
             mesh: jax.sharding.Mesh) -> Callable[[int], dict]:
  """`batch(step)`: pair k's source rows walk a permutation drawn from (seed, k, epoch); its
  target rows are drawn with replacement from (seed, k, step), as the reference's unaligned data."""
  n = len(source)
  per_epoch = math.ceil(n / batch_size)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))
  perms: dict[int, list[np.ndarray]] = {}

  def put(x):
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

  def batch(step: int) -> dict:
    epoch, i = divmod(step, per_epoch)
    if epoch not in perms:
      perms.clear()
      perms[epoch] = [np.random.default_rng([*seed, 0, k, epoch]).permutation(n)
                      for k in range(len(targets))]
    rows = (i * batch_size + np.arange(batch_size)) % n
    a = np.stack([source[p[rows]] for p in perms[epoch]])
    b = np.stack([t[np.random.default_rng([*seed, 1, k, step]).integers(0, len(t), batch_size)]
                  for k, t in enumerate(targets)])
    return {"A": put(a), "B": put(b)}

  return batch


def train(spec: CycleSpec, source: np.ndarray, targets: list[np.ndarray], key: jax.Array, *,
          mesh: jax.sharding.Mesh | None = None, ckpt: checkpointing.FoldCheckpoints | None = None,
          checkpoint_every: int = 0, log_every: int = 100, members: Sequence[str] | None = None,
          standardise_with: np.ndarray | None = None, log: loop.Log = print,
          track: tracking.Tracking = tracking.OFF) -> TrainedCycleGAN:
  """Trains one CycleGAN from `source` (domain A) to each of `targets` (domain B), all at once.

  Images are float32 NHWC in [0, 1]; table rows (arch mlp) are standardised with the per-feature
  mean and std of `standardise_with` (the fold's whole training part, so every pair and every
  grouping of pairs sees one scale; default: source and targets together). The run lasts
  (n_epochs + n_epochs_decay) epochs of ceil(len(source) / batch_size) steps, resumes from
  `ckpt`'s latest checkpoint, and stops with a FloatingPointError naming the pair (`members`,
  default "pair k") whose loss is not finite; `track` shows and records the steps.
  """
  source = _check_inputs("source", source, spec)
  targets = [_check_inputs(f"target {k}", t, spec) for k, t in enumerate(targets)]
  if not targets:
    raise ValueError("CycleGAN needs at least one target class")
  if spec.arch == "conv":
    scale = (np.float32(0.5), np.float32(0.5))   # the step maps [0, 1] to [-1, 1] itself
  else:
    scale = standardisation(np.concatenate([source, *targets]) if standardise_with is None
                            else _check_inputs("standardise_with", standardise_with, spec))
    source, *targets = ((t - scale[0]) / scale[1] for t in (source, *targets))
  members = list(members) if members is not None else [f"pair {k}" for k in range(len(targets))]
  if len(members) != len(targets):
    raise ValueError(f"{len(members)} member names for {len(targets)} targets")
  mesh = mesh if mesh is not None else mesh_lib.make_mesh(jax.devices()[:1])
  mesh_lib.check_batch_size(spec.batch_size, mesh, "--config.synth.cyclegan.batch_size")
  per_epoch = steps_per_epoch(spec, len(source))
  k_init, k_steps, k_data = jax.random.split(key, 3)
  graphdefs, state = init_state(spec, jax.random.split(k_init, len(targets)), per_epoch, mesh)
  step = make_step(spec, graphdefs, per_epoch, mesh)
  seed = np.asarray(jax.random.key_data(k_data)).ravel().tolist()
  state, history = loop.run(
      lambda s, b, k: step(s, b, jax.random.split(k, len(targets))), state,
      _batches(source, targets, spec.batch_size, seed, mesh), k_steps,
      (spec.n_epochs + spec.n_epochs_decay) * per_epoch, members=members, ckpt=ckpt,
      checkpoint_every=checkpoint_every, log_every=log_every, what="CycleGAN",
      lr_key="--config.synth.cyclegan.learning_rate", log=log, track=track)
  return TrainedCycleGAN(spec=spec, graphdefs=graphdefs, state=state, history=history,
                         scale=scale)


@jax.jit
def _translate_chunk(graphdef, params, x, mean, std):
  return nnx.merge(graphdef, params, copy=True)((x - mean) / std) * std + mean


def translate(trained: TrainedCycleGAN, member: int, x: np.ndarray,
              batch_size: int = 64) -> np.ndarray:
  """G_A of pair `member` applied to source inputs `x` (images in [0, 1], or rows in their
  original units): inputs of its target class, in the same space."""
  x = _check_inputs("input", x, trained.spec)
  params = jax.tree.map(lambda a: a[member], trained.state.g_params["G_A"])
  chunk = min(batch_size, len(x))
  out = []
  for start in range(0, len(x), chunk):
    part = x[start:start + chunk]
    padded = np.concatenate([part, np.zeros((chunk - len(part), *part.shape[1:]), part.dtype)])
    out.append(np.asarray(_translate_chunk(trained.graphdefs[0], params, padded,
                                           *trained.scale))[:len(part)])
  return np.concatenate(out)

"""DenseNet-121/169/201 as `keras.applications`, DenseNet-264, and a memory-efficient variant.

Layer for layer the Keras applications (so ImageNet weights convert): ZeroPadding2D(3) + 7x7/2
conv, BN, ReLU, ZeroPadding2D(1) + 3x3/2 max-pool; dense blocks of bottleneck layers
BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k) whose output is concatenated to their input; transitions
BN-ReLU-conv1x1(half the channels)-2x2 average pool; a final BN-ReLU and global average pool.
Keras puts no dropout before its classifier, so `dropout` defaults to 0.

Parameter paths: `stem/{conv,norm}`, `blocks/<b>/<i>/{norm1,conv1,norm2,conv2}` (dense block b,
layer i), `transitions/<b>/{norm,conv}` (after block b), `norm` (the final BN), `head/...`.
The transfer-learning recipe "freeze the first two dense blocks" is the freeze pattern
`^(stem|blocks/0|blocks/1|transitions/0|transitions/1)/`.

`remat=True` is the memory-efficient DenseNet (Pleiss et al., 2017): a dense layer keeps its
input as the list of earlier feature maps and concatenates them itself, and the backward pass
recomputes the concatenation, BatchNorms and ReLUs (cheap, elementwise) instead of storing them;
only convolution outputs are saved. Stored activations then grow linearly with depth instead of
quadratically. Transitions and the final BN take the same treatment. The numbers and BatchNorm
statistic updates are those of the plain model. At 224x224, batch 64, the compiled training step
needs 2.4-3.2x less memory (docs/benchmarks.md); on CPU that takes the compiler option
`jimb.compiler.backward_options` sets, without which XLA:CPU merges the recomputation back
into the forward pass.
"""

from __future__ import annotations

from typing import Callable, Sequence

from flax import nnx
import jax
from jax.ad_checkpoint import checkpoint_name
import jax.numpy as jnp

from jimb import conv as conv_lib
from jimb.models import keras_import
from jimb.models import layers
from jimb.models import pooling
from jimb.models.base import MODELS, Classifier

EPSILON = 1.001e-5            # Keras's DenseNet BatchNorm epsilon
REDUCTION = 0.5               # transitions keep this fraction of the channels (DenseNet-BC)
_SAVED = "densenet_conv_out"  # convolution outputs the remat policy keeps
_POLICY = jax.checkpoint_policies.save_only_these_names(_SAVED)

DEPTHS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 264: (6, 12, 64, 48)}


def _norm(features: int, dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  return nnx.BatchNorm(features, epsilon=EPSILON, momentum=0.99, dtype=dtype, rngs=rngs)


def _conv(cin: int, cout: int, size: int, dtype, rngs: nnx.Rngs, **kw) -> nnx.Conv:
  return conv_lib.Conv(cin, cout, (size, size), use_bias=False, dtype=dtype, rngs=rngs, **kw)


def _saved(x: jax.Array) -> jax.Array:
  return checkpoint_name(x, _SAVED)


class Stem(nnx.Module):
  """ZeroPadding2D(3) + 7x7/2 conv, BN, ReLU, ZeroPadding2D(1) + 3x3/2 max-pool."""

  def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
    self.conv = _conv(cin, cout, 7, dtype, rngs, strides=(2, 2), padding=((3, 3), (3, 3)))
    self.norm = _norm(cout, dtype, rngs)

  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = nnx.relu(layers.batch_norm(self.norm, self.conv(x), train))
    # Zero padding (not -inf) as Keras does; after the ReLU it never wins the max anyway.
    x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    return pooling.max_pool(x, (3, 3), (2, 2), "VALID")


class DenseLayer(nnx.Module):
  """concat(features) -> BN-ReLU-conv1x1(4k) -> BN-ReLU-conv3x3(k): the k new channels."""

  def __init__(self, cin: int, growth: int, *, dtype, rngs: nnx.Rngs):
    self.norm1 = _norm(cin, dtype, rngs)
    self.conv1 = _conv(cin, 4 * growth, 1, dtype, rngs)
    self.norm2 = _norm(4 * growth, dtype, rngs)
    self.conv2 = _conv(4 * growth, growth, 3, dtype, rngs, padding="SAME")

  def __call__(self, features: list[jax.Array], train: bool) -> jax.Array:
    x = jnp.concatenate(features, axis=-1)
    x = _saved(self.conv1(nnx.relu(layers.batch_norm(self.norm1, x, train))))
    return _saved(self.conv2(nnx.relu(layers.batch_norm(self.norm2, x, train))))


class Transition(nnx.Module):
  """concat(features) -> BN-ReLU-conv1x1(reduction * channels) -> 2x2/2 average pool."""

  def __init__(self, cin: int, cout: int, *, dtype, rngs: nnx.Rngs):
    self.norm = _norm(cin, dtype, rngs)
    self.conv = _conv(cin, cout, 1, dtype, rngs)

  def __call__(self, features: list[jax.Array], train: bool) -> jax.Array:
    x = jnp.concatenate(features, axis=-1)
    x = _saved(self.conv(nnx.relu(layers.batch_norm(self.norm, x, train))))
    return nnx.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def _final_size(size: int, num_transitions: int) -> int:
  """Spatial size after the stem (conv /2, max-pool /2) and the transitions (/2 each)."""
  size = (size + 6 - 7) // 2 + 1
  size = (size + 2 - 3) // 2 + 1
  for _ in range(num_transitions):
    size //= 2
  return size


def _final_norm(norm: nnx.BatchNorm, features: list[jax.Array], train: bool) -> jax.Array:
  return nnx.relu(layers.batch_norm(norm, jnp.concatenate(features, axis=-1), train))


class DenseNet(Classifier):
  """The DenseNet-BC of `keras.applications.densenet` for any block layout and growth rate."""

  def __init__(self, *, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
               blocks: Sequence[int], growth_rate: int = 32, remat: bool = False,
               dropout: float = 0.0, head_hidden: int = 0, dtype: str = "float32"):
    if len(input_shape) != 3:
      raise ValueError(f"DenseNet takes images (H, W, C); got input shape {tuple(input_shape)}. "
                       "Use --config.model.name=mlp for tables.")
    h, w, c = input_shape
    if min(_final_size(h, len(blocks) - 1), _final_size(w, len(blocks) - 1)) < 1:
      raise ValueError(f"DenseNet downsamples by 32; {h}x{w} images are too small. Resize them to "
                       "at least 32x32 (e.g. --config.data.image_size=32 for an image folder).")
    cdtype = layers.compute_dtype(dtype)
    self.remat = remat
    width = 2 * growth_rate
    self.stem = Stem(c, width, dtype=cdtype, rngs=rngs)
    self.blocks = nnx.List()
    self.transitions = nnx.List()
    for b, n in enumerate(blocks):
      block = nnx.List()
      for i in range(n):
        block.append(DenseLayer(width + i * growth_rate, growth_rate, dtype=cdtype, rngs=rngs))
      self.blocks.append(block)
      width += n * growth_rate
      if b < len(blocks) - 1:
        self.transitions.append(Transition(width, int(width * REDUCTION), dtype=cdtype, rngs=rngs))
        width = int(width * REDUCTION)
    self.norm = _norm(width, cdtype, rngs)
    self.head = layers.Head(width, num_classes, hidden=head_hidden, dropout=dropout, dtype=cdtype,
                            rngs=rngs)

  def _run(self, fn: Callable, module: nnx.Module, features: list[jax.Array],
           train: bool) -> jax.Array:
    """`fn(module, features, train)`, under remat when the model is memory-efficient."""
    if not self.remat:
      return fn(module, features, train)
    return nnx.remat(lambda m, f: fn(m, f, train), policy=_POLICY)(module, features)

  def embed(self, x, *, train=False, key=None):
    features = [self.stem(x, train)]
    for b, block in enumerate(self.blocks):
      for layer in block:
        features.append(self._run(DenseLayer.__call__, layer, features, train))
      if b < len(self.transitions):
        features = [self._run(Transition.__call__, self.transitions[b], features, train)]
    return jnp.mean(self._run(_final_norm, self.norm, features, train), axis=(1, 2))


def _member(blocks: Sequence[int]) -> Callable[..., DenseNet]:
  """The factory of one registered depth: DenseNet's options without `blocks`."""

  def build(*, num_classes: int, input_shape: Sequence[int], rngs: nnx.Rngs,
            growth_rate: int = 32, remat: bool = False, dropout: float = 0.0,
            head_hidden: int = 0, dtype: str = "float32") -> DenseNet:
    return DenseNet(num_classes=num_classes, input_shape=input_shape, rngs=rngs, blocks=blocks,
                    growth_rate=growth_rate, remat=remat, dropout=dropout,
                    head_hidden=head_hidden, dtype=dtype)

  return build


for _depth, _blocks in DEPTHS.items():
  MODELS.register(f"densenet{_depth}")(_member(_blocks))


def _from_keras(model: DenseNet, keras_model) -> None:
  """Copies `keras.applications.DenseNet*` layers by their Keras names; the top only if it fits."""
  names = {layer.name for layer in keras_model.layers}
  keras_layers = sum(name.endswith("_concat") for name in names)
  jimb_layers = sum(len(block) for block in model.blocks)
  if keras_layers != jimb_layers:
    raise ValueError(f"the Keras model has {keras_layers} dense layers but the jimb model "
                     f"{jimb_layers}; build the DenseNet of the same depth")
  get = keras_model.get_layer
  keras_import.set_conv(model.stem.conv, get("conv1_conv"))
  keras_import.set_batch_norm(model.stem.norm, get("conv1_bn"))
  for b, block in enumerate(model.blocks):
    for i, layer in enumerate(block):
      prefix = f"conv{b + 2}_block{i + 1}"
      keras_import.set_batch_norm(layer.norm1, get(f"{prefix}_0_bn"))
      keras_import.set_conv(layer.conv1, get(f"{prefix}_1_conv"))
      keras_import.set_batch_norm(layer.norm2, get(f"{prefix}_1_bn"))
      keras_import.set_conv(layer.conv2, get(f"{prefix}_2_conv"))
  for b, transition in enumerate(model.transitions):
    keras_import.set_batch_norm(transition.norm, get(f"pool{b + 2}_bn"))
    keras_import.set_conv(transition.conv, get(f"pool{b + 2}_conv"))
  keras_import.set_batch_norm(model.norm, get("bn"))
  if "predictions" in names:
    top = get("predictions")
    if tuple(top.kernel.shape) == model.head.out.kernel[...].shape:
      keras_import.set_dense(model.head.out, top)


for _depth in (121, 169, 201):
  keras_import.register_keras_app(f"densenet{_depth}", f"DenseNet{_depth}", "torch")(_from_keras)

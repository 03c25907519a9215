"""SMOTE over large, wide feature matrices (e.g. CNN penultimate features) as two jitted programs.

Same algorithm, sampling_strategy semantics, random draws and output order as
imblearn.over_sampling.SMOTE, but the exact k-nearest-neighbour search is a blockwise float32
matmul that computes each pair of blocks once, on the accelerator or all CPU cores, instead of
scikit-learn's per-class search. Compilation is kept off the critical path: the classes to
over-sample are packed into one array in which each class starts on a block boundary and whose
length is rounded up to a few bucket sizes, so one neighbour program serves every class and one
interpolation program, called on fixed-size chunks, makes every synthetic row; a data set of a
new bucket compiles these two again, nothing per class.
"""

from __future__ import annotations

from concurrent import futures
import dataclasses
import functools
import mmap
import numbers

from imblearn.over_sampling.base import BaseOverSampler
from imblearn.utils import check_target_type
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
from scipy import sparse
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval
from sklearn_compat.utils.validation import validate_data

# XLA:CPU's newer MLIR fusion emitters take twice as long to compile these loops, which decides
# the first call on small data, for kernels that run no faster. Other backends ignore the option.
_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}
_CHUNK = 2048  # synthetic rows per interpolation call: amortises the dispatch, stays in cache


def default_block_size(largest_class: int) -> int:
  """Rows per distance block for over-sampled classes of at most `largest_class` rows.

  On CPU, padding every class to a multiple of the block costs real matmul time, so blocks are
  small (256) unless the classes are large enough for 512-row blocks' faster matmuls to win
  (about 10 % at 20k rows per class); accelerators need large matmuls to be busy at all.
  """
  if jax.default_backend() != "cpu":
    return 2048
  return 512 if largest_class >= 8192 else 256


def bucket_blocks(num_blocks: int) -> int:
  """Smallest of 1, 2, 3, 4, 6, 8, 12, 16, ... (2^j or 1.5 * 2^j) >= num_blocks.

  The packed array's length is a compile-time shape; buckets let data sets of nearby sizes share
  the compiled programs for at most a third more (untouched) padding rows.
  """
  if num_blocks <= 4:
    return max(num_blocks, 1)
  power = 1 << (num_blocks - 1).bit_length()
  return power * 3 // 4 if power * 3 // 4 >= num_blocks else power


@dataclasses.dataclass(frozen=True)
class Packing:
  """Where each over-sampled class lies in the packed array (rows; block = `block` rows)."""

  indices: list            # per class, in sampling_strategy_ order: its rows of X
  offsets: np.ndarray      # (C,) first packed row of each class, a multiple of `block`
  block: int
  num_rows: int            # packed length: bucketed number of blocks * block

  def block_pairs(self) -> tuple[np.ndarray, int]:
    """(bucketed pairs, 2) int32 block pairs (i, j), i <= j, of one class, and how many are real.

    Zero rows pad the list to its bucket's all-one-class maximum, so its shape depends on the
    bucket only; the program reads just the first `num_pairs`.
    """
    pairs = []
    for offset, rows in zip(self.offsets, self.indices):
      first, count = offset // self.block, -(-len(rows) // self.block)
      i, j = np.triu_indices(count)
      pairs.append(np.stack([first + i, first + j], axis=1))
    blocks = self.num_rows // self.block
    padded = np.zeros((blocks * (blocks + 1) // 2, 2), np.int32)
    real = np.concatenate(pairs)
    padded[:len(real)] = real
    return padded, len(real)


def pack(X: np.ndarray, y: np.ndarray, classes: list, block: int) -> tuple[Packing, np.ndarray]:
  """Packs the rows of `classes` into a (rows, D) float32 array, each class block-aligned."""
  indices = [np.flatnonzero(y == c) for c in classes]
  sizes = np.array([-(-len(rows) // block) * block for rows in indices])
  offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
  packing = Packing(indices, offsets, block, bucket_blocks(int(sizes.sum()) // block) * block)
  packed = _aligned_zeros((packing.num_rows, X.shape[1]))
  for offset, rows in zip(offsets, indices):
    if sparse.issparse(X):
      packed[offset:offset + len(rows)] = X[rows].toarray()
    else:
      np.take(X, rows, axis=0, out=packed[offset:offset + len(rows)], mode="clip")
  return packing, packed


def _aligned_zeros(shape: tuple[int, int]) -> np.ndarray:
  """float32 zeros at a 64-byte aligned address, which JAX's CPU backend uses without a copy."""
  size = shape[0] * shape[1] * 4
  raw = np.zeros(size + 64, np.uint8)
  start = -raw.ctypes.data % 64
  return raw[start:start + size].view(np.float32).reshape(shape)


def block_layout(packing: Packing, packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(rows,) validity of each packed row and (blocks, D) the mean of each block's class.

  Distances are taken after subtracting the class mean: same values, but much smaller norms in
  ||a||^2 + ||b||^2 - 2 a.b, so float32 cancellation no longer reorders close neighbours of
  features far from the origin (post-ReLU CNN features are).
  """
  valid = np.zeros(packing.num_rows, bool)
  means = np.zeros((packing.num_rows // packing.block, packed.shape[1]), np.float32)
  for offset, rows in zip(packing.offsets, packing.indices):
    valid[offset:offset + len(rows)] = True
    blocks = slice(offset // packing.block, -(-(offset + len(rows)) // packing.block))
    means[blocks] = packed[offset:offset + len(rows)].mean(axis=0)
  return valid, means


def _rows(array, index, block):
  return lax.dynamic_slice_in_dim(array, index * block, block)


@functools.partial(jax.jit, static_argnames=("k", "block"), compiler_options=_COMPILER_OPTIONS)
def nearest_neighbours(packed, valid, means, pairs, num_pairs, *, k: int, block: int):
  """(rows, k) int32: each packed row's k nearest other rows of its class, nearest first.

  Walks the same-class block pairs (i <= j): one matmul gives the block of squared distances,
  which updates block i's rows and, transposed, block j's, so the matmul work is halved; both
  updates are one top_k. Distances are kept negated (top_k finds the largest) and padding rows
  at -inf, so they never become neighbours.
  """
  centred = packed - jnp.repeat(means, block, axis=0)
  sq = jnp.where(valid, jnp.sum(centred * centred, axis=1), jnp.inf)
  self_pair = jnp.concatenate([jnp.eye(block, dtype=bool), jnp.ones((block, block), bool)])

  def step(p, carry):
    best, best_i = carry
    i, j = pairs[p, 0], pairs[p, 1]
    a, b = _rows(centred, i, block), _rows(centred, j, block)
    dot = jnp.dot(a, b.T, precision=lax.Precision.HIGHEST)  # no TF32 on GPUs: neighbours stay exact
    near = 2 * dot - _rows(sq, i, block)[:, None] - _rows(sq, j, block)[None, :]
    # Rows of block i, then of block j; on a diagonal block a row is not its own neighbour and
    # the transposed half repeats the first, so it is masked out.
    near = jnp.where((i == j) & self_pair, -jnp.inf, jnp.concatenate([near, near.T]))
    old = jnp.concatenate([_rows(best, i, block), _rows(best, j, block)])
    old_i = jnp.concatenate([_rows(best_i, i, block), _rows(best_i, j, block)])
    # The barrier keeps XLA:CPU from folding the halves' row slices into top_k's column slice,
    # which hides the top_k and leaves a full sort of every row.
    new, pos = lax.optimization_barrier(lax.top_k(jnp.concatenate([old, near], axis=1), k))
    first_col = jnp.repeat(jnp.stack([j, i]) * block, block)[:, None]
    kept = sum(jnp.where(pos == t, old_i[:, t:t + 1], 0) for t in range(k))
    new_i = jnp.where(pos < k, kept, first_col + pos - k)
    # Block j is written first: when i == j its half is the unchanged old state.
    for half, index in ((slice(block, None), j), (slice(None, block), i)):
      best = lax.dynamic_update_slice_in_dim(best, new[half], index * block, 0)
      best_i = lax.dynamic_update_slice_in_dim(best_i, new_i[half], index * block, 0)
    return best, best_i

  num_rows = packed.shape[0]
  init = (jnp.full((num_rows, k), -jnp.inf, jnp.float32), jnp.zeros((num_rows, k), jnp.int32))
  return lax.fori_loop(0, num_pairs, step, init)[1]


@functools.partial(jax.jit, compiler_options=_COMPILER_OPTIONS)
def interpolate(packed, base, neighbour, gap):
  """Synthetic rows base + gap * (neighbour - base) from packed row indices."""
  start = packed[base]
  return start + gap[:, None] * (packed[neighbour] - start)


class JaxSMOTE(BaseOverSampler):
  """SMOTE (Chawla et al. 2002) with imblearn's interface and output, computed with JAX.

  Drop-in for imblearn.over_sampling.SMOTE (also inside imblearn.pipeline.Pipeline): with the
  same random_state it draws the same base points, neighbour ranks and gaps, so results agree
  up to float32 rounding and exact distance ties. Rows of X come first and unchanged, then the
  synthetic rows grouped by class in class order; `synthetic_mask_` marks the latter, so
  evaluation code can prove none reached it. Sparse X (CSR or CSC) gives sparse output in its
  format, as SMOTE's; the classes to over-sample are made dense for the neighbour search.

  Args:
    sampling_strategy: as imblearn's over-samplers ("auto", "minority", "not majority",
      "not minority", "all", a float for binary targets, a dict {class: target count}, or a
      callable).
    k_neighbors: neighbours to interpolate towards; every over-sampled class needs more members.
    random_state: int, RandomState or None, used as imblearn uses it.
    block_size: rows per distance block; None picks `default_block_size(largest class)`.
      Classes are padded to a multiple of it, so it trades padding against matmul efficiency.
  """

  _parameter_constraints: dict = {
      **BaseOverSampler._parameter_constraints,
      "k_neighbors": [Interval(numbers.Integral, 1, None, closed="left")],
      "block_size": [Interval(numbers.Integral, 1, None, closed="left"), None],
  }

  def __init__(self, sampling_strategy="auto", k_neighbors=5, random_state=None,
               block_size=None):
    super().__init__(sampling_strategy=sampling_strategy)
    self.k_neighbors = k_neighbors
    self.random_state = random_state
    self.block_size = block_size

  def _check_X_y(self, X, y, accept_sparse=None):
    """Float input, dense or sparse as SMOTE takes it: ints become float32, which JAX computes."""
    y, binarize_y = check_target_type(y, indicate_one_vs_all=True)
    X, y = validate_data(self, X=X, y=y, reset=True, accept_sparse=["csr", "csc"],
                         dtype=[np.float32, np.float64])
    return X, y, binarize_y

  def _fit_resample(self, X, y):
    k = self.k_neighbors
    targets = {c: n for c, n in self.sampling_strategy_.items() if n > 0}
    sizes = {c: int(np.sum(y == c)) for c in targets}
    for c, size in sizes.items():
      if size <= k:
        raise ValueError(f"class {c} has {size} samples, but SMOTE needs more than "
                         f"k_neighbors={k} of a class to find its neighbours; set "
                         f"k_neighbors to at most {size - 1} or leave class {c} out of "
                         f"sampling_strategy")
    n_new = sum(targets.values())
    block = self.block_size or default_block_size(max(sizes.values(), default=0))
    if sparse.issparse(X):   # as SMOTE: X's format out, the synthetic rows appended
      X_new = np.empty((n_new, X.shape[1]), X.dtype)
      self._synthesise(X, y, targets, block, X_new, functools.partial(_touch_pages, X_new))
      X_res = sparse.vstack([X, sparse.csr_matrix(X_new)], format=X.format)
    else:
      X_res = np.empty((len(X) + n_new, X.shape[1]), X.dtype)

      def prepare():
        X_res[:len(X)] = X
        _touch_pages(X_res[len(X):])

      self._synthesise(X, y, targets, block, X_res[len(X):], prepare)
    self.synthetic_mask_ = np.arange(X_res.shape[0]) >= X.shape[0]
    y_new = [np.full(n, c, dtype=y.dtype) for c, n in targets.items()]
    return X_res, np.concatenate([y, *y_new])

  def _synthesise(self, X, y, targets: dict, block: int, out: np.ndarray, prepare) -> None:
    """Writes the synthetic rows of every class in `targets` into `out`, in class order.

    `prepare()` (copy X into the output, fault in its pages) runs on a thread while the
    neighbours are searched: the first touch of a fresh output of hundreds of MB can cost as
    much as the search on a VM (0.1-0.7 s for 300 MB here, varying with the host), and when the
    interpolation touched it first, that time came on top.
    """
    if not targets:
      prepare()
      return
    k = self.k_neighbors
    with futures.ThreadPoolExecutor(1) as pool:
      prepared = pool.submit(prepare)
      packing, packed = pack(X, y, list(targets), block)
      valid, means = block_layout(packing, packed)
      pairs, num_pairs = packing.block_pairs()
      packed = jax.device_put(packed)
      neighbours = np.asarray(nearest_neighbours(packed, valid, means, pairs, num_pairs,
                                                 k=k, block=block))
      base, neighbour, gap = self._draws(packing, neighbours, targets)
      prepared.result()
    _interpolate_into(packed, base, neighbour, gap, out)

  def _draws(self, packing: Packing, neighbours: np.ndarray, targets: dict):
    """Packed rows of bases and neighbours and the gaps, drawn exactly as imblearn draws them."""
    k = self.k_neighbors
    base, neighbour, gap = [], [], []
    for offset, rows, n in zip(packing.offsets, packing.indices, targets.values()):
      random_state = check_random_state(self.random_state)  # per class, as imblearn does
      drawn = random_state.randint(low=0, high=len(rows) * k, size=n)
      gap.append(random_state.uniform(size=n).astype(np.float32))
      base.append(offset + drawn // k)
      neighbour.append(neighbours[offset + drawn // k, drawn % k])
    return (np.concatenate(base).astype(np.int32), np.concatenate(neighbour).astype(np.int32),
            np.concatenate(gap))


def _touch_pages(out: np.ndarray) -> None:
  """Faults in every page of the C-contiguous `out` by writing one element per page."""
  out.reshape(-1)[::max(mmap.PAGESIZE // out.itemsize, 1)] = 0


def _interpolate_into(packed, base, neighbour, gap, out: np.ndarray) -> None:
  """Fills `out` chunk by chunk; the next chunk computes while the previous one is copied out."""
  pending = None
  for start in range(0, len(out), _CHUNK):
    stop = min(start + _CHUNK, len(out))
    pad = _CHUNK - (stop - start)  # the last chunk is padded so one program serves all
    chunk = interpolate(packed, *(np.pad(a[start:stop], (0, pad)) for a in (base, neighbour, gap)))
    if pending is not None:
      _copy_out(*pending, out)
    pending = (start, stop, chunk)
  _copy_out(*pending, out)


def _copy_out(start: int, stop: int, chunk: jax.Array, out: np.ndarray) -> None:
  out[start:stop] = np.asarray(chunk)[:stop - start]


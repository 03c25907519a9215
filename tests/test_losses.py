"""Losses against an independent float64 NumPy implementation and optax."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from sklearn.utils.class_weight import compute_class_weight

from jimb import losses

COUNTS = np.array([50, 20, 5])


def _numpy_focal(logits, labels, gamma, alpha):
  z = np.asarray(logits, np.float64)
  z = z - z.max(1, keepdims=True)
  p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
  p_t = p[np.arange(len(labels)), labels]
  alpha_t = np.broadcast_to(np.asarray(alpha, np.float64), (p.shape[1],))[labels]
  return -alpha_t * (1 - p_t) ** gamma * np.log(p_t)


def _case(seed, k=3, b=16):
  rng = np.random.default_rng(seed)
  return (rng.normal(scale=3.0, size=(b, k)).astype(np.float32),
          rng.integers(0, k, b).astype(np.int32))


def _build(**cfg):
  return losses.build_loss(ml_collections.ConfigDict(cfg), COUNTS)


@pytest.mark.parametrize("gamma, alpha", [(2.0, 0.25), (0.5, 1.0), (1.0, (0.2, 0.3, 0.5))])
@pytest.mark.parametrize("seed", [0, 1])
def test_focal_matches_numpy(seed, gamma, alpha):
  logits, labels = _case(seed)
  out = _build(name="focal", gamma=gamma, alpha=alpha)(logits, labels)
  assert out.shape == (16,) and out.dtype == jnp.float32
  np.testing.assert_allclose(out, _numpy_focal(logits, labels, gamma, alpha), rtol=1e-5,
                             atol=1e-6)


def test_focal_default_is_gamma_2_alpha_quarter():
  logits, labels = _case(2)
  np.testing.assert_allclose(_build(name="focal")(logits, labels),
                             _numpy_focal(logits, labels, 2.0, 0.25), rtol=1e-5, atol=1e-6)


def test_focal_gamma_zero_alpha_none_is_cross_entropy():
  logits, labels = _case(3)
  focal = _build(name="focal", gamma=0.0, alpha=None)(logits, labels)
  ce = _build(name="cross_entropy")(logits, labels)
  np.testing.assert_allclose(focal, ce, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      ce, _numpy_focal(logits, labels, 0.0, 1.0), rtol=1e-5, atol=1e-6)


def test_focal_per_class_alpha_weights_by_true_class():
  logits, labels = _case(4)
  alpha = [0.1, 1.0, 3.0]
  weighted = _build(name="focal", gamma=2.0, alpha=alpha)(logits, labels)
  plain = _build(name="focal", gamma=2.0, alpha=None)(logits, labels)
  np.testing.assert_allclose(weighted, np.asarray(alpha)[labels] * plain, rtol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_matches_optax(smoothing):
  logits, labels = _case(5, k=4)
  out = losses.build_loss(
      ml_collections.ConfigDict(dict(name="cross_entropy", label_smoothing=smoothing)),
      np.ones(4))(logits, labels)
  target = optax.smooth_labels(jax.nn.one_hot(labels, 4), smoothing)
  np.testing.assert_allclose(out, optax.softmax_cross_entropy(logits, target), rtol=1e-5)


@pytest.mark.parametrize("cfg", [
    dict(name="cross_entropy"), dict(name="cross_entropy", label_smoothing=0.1),
    dict(name="focal", gamma=2.0), dict(name="focal", gamma=0.5), dict(name="focal", gamma=0.0),
])
def test_extreme_logits_give_finite_values_and_gradients(cfg):
  # Rows: true class far ahead (p_t == 1 exactly), far behind, and a near tie.
  logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [50.0, 0.0, -50.0],
                      [0.0, 0.0, 1e-3]], jnp.float32)
  labels = jnp.array([0, 0, 0, 2])
  fn = _build(**cfg)
  values = fn(logits, labels)
  grads = jax.grad(lambda z: fn(z, labels).sum())(logits)
  assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
  assert float(values[1]) > 1e3  # a confidently wrong example still costs a lot


def _finite_difference(numpy_fn, logits, eps=1e-4):
  """d sum(numpy_fn(z)) / dz by central differences in float64."""
  numeric = np.zeros_like(logits)
  for i, j in np.ndindex(*logits.shape):
    up, down = logits.copy(), logits.copy()
    up[i, j] += eps
    down[i, j] -= eps
    numeric[i, j] = (numpy_fn(up).sum() - numpy_fn(down).sum()) / (2 * eps)
  return numeric


def test_focal_gradient_matches_finite_difference():
  logits, labels = _case(6, b=4)
  logits = logits.astype(np.float64)
  fn = _build(name="focal", gamma=0.5, alpha=(0.2, 0.3, 0.5))
  grad = jax.grad(lambda z: fn(z, labels).sum())(jnp.asarray(logits, jnp.float32))
  numeric = _finite_difference(lambda z: _numpy_focal(z, labels, 0.5, (0.2, 0.3, 0.5)), logits)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-4)


def test_jit_and_bfloat16_give_float32():
  logits, labels = _case(7)
  fn = _build(name="focal", gamma=2.0)
  eager = fn(logits, labels)
  np.testing.assert_allclose(jax.jit(fn)(logits, labels), eager, rtol=1e-6)
  low = jax.jit(fn)(jnp.asarray(logits, jnp.bfloat16), labels)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, eager, rtol=0.1, atol=0.02)
  assert _build(name="cross_entropy")(jnp.asarray(logits, jnp.bfloat16), labels).dtype == (
      jnp.float32)


@pytest.mark.parametrize("cfg, match", [
    (dict(name="focal", gama=2.0), "gama"),
    (dict(name="cross_entropy", gamma=2.0), "gamma"),
    (dict(name="focal", gamma=-1.0), "loss.gamma"),
    (dict(name="focal", alpha=[0.5, 0.5]), "one weight per class"),
    (dict(name="focal", alpha=-0.25), "loss.alpha"),
    (dict(name="cross_entropy", label_smoothing=1.0), "label_smoothing"),
    (dict(name="hinge"), "unknown loss"),
])
def test_bad_options_raise(cfg, match):
  with pytest.raises(ValueError, match=match):
    _build(**cfg)


# ---- Imbalance-aware losses and class weights. -------------------------------------------------


def _numpy_log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(1, keepdims=True)
  return z - np.log(np.exp(z).sum(1, keepdims=True))


def _numpy_ce(z, labels, smoothing=0.0):
  k = z.shape[1]
  target = np.eye(k)[labels] * (1 - smoothing) + smoothing / k
  return -(target * _numpy_log_softmax(z)).sum(1)


def _numpy_ldam(z, labels, counts, max_margin, scale, smoothing=0.0):
  margins = max_margin * (np.min(counts) / np.asarray(counts, np.float64)) ** 0.25
  shifted = np.asarray(z, np.float64) - margins[labels][:, None] * np.eye(z.shape[1])[labels]
  return _numpy_ce(scale * shifted, labels, smoothing)


def _numpy_complement(z, labels):
  """The authors' formula: sum_{j != y} q_j log q_j / K with q = p / (1 - p_y)."""
  p = np.exp(_numpy_log_softmax(z))
  rows = np.arange(len(labels))
  q = p / (1 - p[rows, labels])[:, None]
  terms = q * np.log(q)
  terms[rows, labels] = 0.0
  return terms.sum(1) / z.shape[1]


def _numpy_effective_number(counts, beta):
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  w = np.zeros_like(counts)
  w[present] = (1 - beta) / (1 - beta ** counts[present])
  return w * present.sum() / w.sum()


_CE_FAMILY_CASES = [
    (dict(name="cross_entropy", label_smoothing=0.2), lambda z, y: _numpy_ce(z, y, 0.2)),
    (dict(name="ldam"), lambda z, y: _numpy_ldam(z, y, COUNTS, 0.5, 30.0)),
    (dict(name="ldam", max_margin=0.3, scale=10.0, label_smoothing=0.1),
     lambda z, y: _numpy_ldam(z, y, COUNTS, 0.3, 10.0, 0.1)),
    (dict(name="logit_adjusted"),
     lambda z, y: _numpy_ce(z + np.log(COUNTS / COUNTS.sum()), y)),
    (dict(name="logit_adjusted", tau=1.5, label_smoothing=0.1),
     lambda z, y: _numpy_ce(z + 1.5 * np.log(COUNTS / COUNTS.sum()), y, 0.1)),
    (dict(name="balanced_softmax"), lambda z, y: _numpy_ce(z + np.log(COUNTS), y)),
    (dict(name="balanced_softmax", label_smoothing=0.3),
     lambda z, y: _numpy_ce(z + np.log(COUNTS), y, 0.3)),
    (dict(name="cot"), _numpy_ce),
]


@pytest.mark.parametrize("cfg, reference", _CE_FAMILY_CASES)
@pytest.mark.parametrize("seed", [10, 11])
def test_losses_match_numpy(seed, cfg, reference):
  logits, labels = _case(seed)
  loss = _build(**cfg)
  out = loss(logits, labels)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, reference(logits, labels), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss.fn(logits, labels), out)


@pytest.mark.parametrize("seed, k", [(12, 3), (13, 7)])
def test_cot_complement_matches_authors_formula(seed, k):
  logits, labels = _case(seed, k=k)
  loss = losses.build_loss(ml_collections.ConfigDict(dict(name="cot")), np.ones(k))
  out = loss.complement(logits, labels)
  reference = _numpy_complement(logits, labels)
  np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-6)
  assert np.all(reference <= 0)  # negated entropy: minimising it flattens the wrong classes
  # The authors' batch loss is the sum over the batch divided by B and K.
  np.testing.assert_allclose(out.mean(), reference.sum() / len(labels), rtol=1e-5)


def test_cot_complement_is_lowest_for_uniform_wrong_classes():
  labels = jnp.array([0, 0])
  out = _build(name="cot").complement(jnp.array([[2.0, 1.0, 1.0], [2.0, 3.0, -1.0]]), labels)
  np.testing.assert_allclose(out[0], -np.log(2) / 3, rtol=1e-6)
  assert float(out[0]) < float(out[1])


def test_only_cot_has_a_complement():
  assert all(_build(name=name).complement is None for name in losses.LOSSES.names()
             if name != "cot")


def test_logit_adjusted_tau_zero_is_cross_entropy():
  logits, labels = _case(14)
  np.testing.assert_allclose(_build(name="logit_adjusted", tau=0.0)(logits, labels),
                             _numpy_ce(logits, labels), rtol=1e-5, atol=1e-6)


def test_balanced_softmax_is_cross_entropy_on_balanced_classes():
  logits, labels = _case(15, k=4)
  cfg = ml_collections.ConfigDict(dict(name="balanced_softmax"))
  np.testing.assert_allclose(losses.build_loss(cfg, np.full(4, 30))(logits, labels),
                             _numpy_ce(logits, labels), rtol=1e-5, atol=1e-6)


def test_ldam_margins_are_max_margin_times_relative_count_to_minus_quarter():
  # With zero logits and scale 1 the loss of class y is log(1 + (K - 1) e^{m_y}): invert it.
  counts = np.array([1000, 100, 10, 1])
  cfg = ml_collections.ConfigDict(dict(name="ldam", max_margin=0.4, scale=1.0))
  labels = jnp.arange(4)
  values = np.asarray(losses.build_loss(cfg, counts)(jnp.zeros((4, 4)), labels), np.float64)
  margins = np.log(np.expm1(values) / 3)
  np.testing.assert_allclose(margins.max(), 0.4, rtol=1e-5)
  np.testing.assert_allclose(margins * counts ** 0.25, 0.4 * np.ones(4), rtol=1e-4)


def test_adjust_logits():
  logits = jnp.array([[5.0, 4.0, 0.0], [0.3, 0.2, 0.25]])
  counts = np.array([900, 90, 10])
  np.testing.assert_array_equal(losses.adjust_logits(logits, counts, 0.0), logits)
  adjusted = losses.adjust_logits(logits, counts, 1.0)
  np.testing.assert_allclose(adjusted, logits - np.log(counts / counts.sum()), rtol=1e-6)
  np.testing.assert_array_equal(np.argmax(logits, 1), [0, 0])
  np.testing.assert_array_equal(np.argmax(adjusted, 1), [1, 2])  # toward the rarer classes
  assert losses.adjust_logits(logits.astype(jnp.bfloat16), counts, 1.0).dtype == jnp.float32


def test_balanced_weights_match_scikit_learn():
  labels = np.repeat(np.arange(3), COUNTS)
  expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
  loss = _build(name="cross_entropy", class_weights="balanced")
  assert loss.class_weights.dtype == np.float32
  np.testing.assert_allclose(loss.class_weights, expected, rtol=1e-6)


def test_effective_number_weights():
  loss = _build(name="ldam", class_weights="effective_number", beta=0.999)
  np.testing.assert_allclose(loss.class_weights, _numpy_effective_number(COUNTS, 0.999),
                             rtol=1e-5)
  np.testing.assert_allclose(loss.class_weights.sum(), 3, rtol=1e-6)
  assert loss.class_weights[2] > loss.class_weights[1] > loss.class_weights[0]
  default = _build(name="ldam", class_weights="effective_number")  # beta 0.9999
  np.testing.assert_allclose(default.class_weights, _numpy_effective_number(COUNTS, 0.9999),
                             rtol=1e-5)
  np.testing.assert_array_equal(
      _build(name="ldam", class_weights="effective_number", beta=0.0).class_weights, np.ones(3))


def test_absent_class_gets_zero_weight_and_finite_losses():
  counts = np.array([40, 0, 8])
  cfg = dict(name="ldam", class_weights="effective_number", beta=0.99)
  weights = losses.build_loss(ml_collections.ConfigDict(cfg), counts).class_weights
  np.testing.assert_allclose(weights, _numpy_effective_number(counts, 0.99), rtol=1e-5)
  np.testing.assert_allclose(weights.sum(), 2, rtol=1e-6)
  balanced = losses.build_loss(ml_collections.ConfigDict(
      dict(name="cross_entropy", class_weights="balanced")), counts).class_weights
  np.testing.assert_allclose(balanced, [48 / 80, 0, 48 / 16], rtol=1e-6)
  logits, labels = _case(16)
  for name in losses.LOSSES.names():
    fn = losses.build_loss(ml_collections.ConfigDict(dict(name=name)), counts)
    assert np.all(np.isfinite(fn(logits, labels))), name


def test_explicit_weights_and_deferred_reweighting():
  loss = _build(name="cross_entropy", class_weights=[1, 2.5, 0], drw_epoch=3)
  np.testing.assert_array_equal(loss.class_weights, np.array([1, 2.5, 0], np.float32))
  assert loss.weights_from_epoch == 3
  for epoch in (0, 2):
    w = loss.epoch_weights(epoch)
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w, np.ones(3))
  for epoch in (3, 10):
    np.testing.assert_array_equal(loss.epoch_weights(epoch), [1, 2.5, 0])
  unweighted = _build(name="focal")
  assert unweighted.class_weights is None and unweighted.weights_from_epoch == 0
  np.testing.assert_array_equal(unweighted.epoch_weights(5), np.ones(3, np.float32))
  np.testing.assert_array_equal(_build(name="cot", class_weights="balanced").epoch_weights(0),
                                _build(name="cot", class_weights="balanced").class_weights)


def test_plain_dict_config_works():
  loss = losses.build_loss(dict(name="logit_adjusted", class_weights="balanced"), COUNTS)
  assert loss.class_weights is not None and loss.weights_from_epoch == 0


_EXTREME_CASES = [dict(name=name) for name in losses.LOSSES.names()] + [
    dict(name="ldam", label_smoothing=0.1), dict(name="logit_adjusted", label_smoothing=0.1),
    dict(name="balanced_softmax", label_smoothing=0.1)]


@pytest.mark.parametrize("cfg", _EXTREME_CASES, ids=lambda cfg: "-".join(map(str, cfg.values())))
def test_extreme_logits_finite_for_every_loss(cfg):
  # Rows: true class far ahead, far behind, wrong classes far apart, one-hot-like, a near tie,
  # and an ordinary row (the others saturate the complement objective, whose gradient is 0).
  logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0], [0.0, 1e4, -1e4], [30.0, 0.0, 0.0],
                      [0.0, 0.0, 1e-3], [2.0, 1.0, -1.0]], jnp.float32)
  labels = jnp.array([0, 0, 0, 0, 2, 0])
  loss = _build(**cfg)
  for fn in filter(None, (loss.fn, loss.complement)):
    values = fn(logits, labels)
    grads = jax.grad(lambda z, fn=fn: fn(z, labels).sum())(logits)
    assert np.all(np.isfinite(values)) and np.all(np.isfinite(grads))
    assert np.any(grads != 0)
  assert float(loss(logits, labels)[1]) > 1e3


def test_cot_complement_gradient_matches_numpy_finite_difference():
  logits, labels = _case(17, b=4)
  logits = logits.astype(np.float64)
  complement = _build(name="cot").complement
  grad = jax.grad(lambda z: complement(z, labels).sum())(jnp.asarray(logits, jnp.float32))
  numeric = _finite_difference(lambda z: _numpy_complement(z, labels), logits)
  np.testing.assert_allclose(grad, numeric, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["ldam", "logit_adjusted", "balanced_softmax", "cot"])
def test_bfloat16_logits_give_float32(name):
  logits, labels = _case(18)
  loss = _build(name=name)
  for fn in filter(None, (loss.fn, loss.complement)):
    low = fn(jnp.asarray(logits, jnp.bfloat16), labels)
    assert low.dtype == jnp.float32
    np.testing.assert_allclose(low, fn(logits, labels), rtol=0.1, atol=0.1)


@pytest.mark.parametrize("cfg, match", [
    (dict(name="cross_entropy", class_weights="inverse"), "class_weights"),
    (dict(name="cross_entropy", class_weights=[1.0, 2.0]), "class_weights"),
    (dict(name="cross_entropy", class_weights=[1.0, -2.0, 1.0]), "class_weights"),
    (dict(name="cross_entropy", class_weights=[1.0, float("nan"), 1.0]), "class_weights"),
    (dict(name="cross_entropy", class_weights=[0, 0, 0]), "class_weights"),
    (dict(name="ldam", class_weights="effective_number", beta=1.0), "loss.beta"),
    (dict(name="ldam", class_weights="effective_number", beta=-0.1), "loss.beta"),
    (dict(name="ldam", beta=float("nan")), "loss.beta"),
    (dict(name="ldam", class_weights="balanced", drw_epoch=-1), "loss.drw_epoch"),
    (dict(name="ldam", class_weights="balanced", drw_epoch=1.5), "loss.drw_epoch"),
    (dict(name="ldam", drw_epoch=160), "class_weights"),
    (dict(name="ldam", max_margin=0.0), "loss.max_margin"),
    (dict(name="ldam", scale=-1.0), "loss.scale"),
    (dict(name="ldam", label_smoothing=1.0), "label_smoothing"),
    (dict(name="logit_adjusted", tau=float("nan")), "loss.tau"),
    (dict(name="logit_adjusted", tau=-1.0), "loss.tau"),
    (dict(name="balanced_softmax", label_smoothing=-0.1), "label_smoothing"),
    (dict(name="cot", label_smoothing=0.1), "label_smoothing"),
    (dict(name="balanced_softmax", tau=1.0), "tau"),
])
def test_bad_imbalance_options_raise(cfg, match):
  with pytest.raises(ValueError, match=match):
    _build(**cfg)


@pytest.mark.parametrize("counts", [np.array([3, -1, 2]), np.zeros(3), np.array([[1, 2]])])
def test_bad_class_counts_raise(counts):
  with pytest.raises(ValueError, match="class_counts"):
    losses.build_loss(ml_collections.ConfigDict(dict(name="cross_entropy")), counts)


@pytest.mark.parametrize("name", losses.LOSSES.names())
def test_count_free_losses_ignore_the_counts(name):
  """Folds share a train step when counts_key says the loss ignores the class counts: those
  losses must give the same values and gradients for other counts; the rest must not."""
  logits = jax.random.normal(jax.random.key(0), (16, 4)) * 3
  labels = jnp.arange(16) % 4
  fn = lambda counts: losses.build_loss(ml_collections.ConfigDict({"name": name}),
                                        np.array(counts)).fn
  a, b = fn([100, 30, 10, 1]), fn([5, 50, 20, 7])
  values = lambda f: (f(logits, labels), jax.grad(lambda z: f(z, labels).sum())(logits))
  same = all(np.array_equal(u, v) for u, v in zip(values(a), values(b)))
  assert same == (name in losses.COUNT_FREE)
  assert (losses.counts_key(name, np.array([3, 1])) is None) == (name in losses.COUNT_FREE)

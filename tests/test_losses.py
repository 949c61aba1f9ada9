"""Tests for bnjax.losses against float64 NumPy formulas and optax."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnjax.nn.losses import accuracy, l2_penalty, softmax_cross_entropy, weight_matrices

FAST = settings(max_examples=15, deadline=None)
SHAPES = [(1, 2), (4, 3), (8, 10)]

_ce = jax.jit(softmax_cross_entropy)
_ce_grad = jax.jit(jax.grad(lambda logits, labels: jnp.sum(softmax_cross_entropy(logits, labels))))
_optax_ce = jax.jit(optax.softmax_cross_entropy_with_integer_labels)
_accuracy = jax.jit(accuracy)
_l2 = jax.jit(l2_penalty)


def _np_log_softmax(logits):
  z = np.asarray(logits, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _np_softmax(logits):
  return np.exp(_np_log_softmax(logits))


def _draw(shape, spread, seed):
  rng = np.random.default_rng(seed)
  logits = (spread * rng.normal(size=shape)).astype(np.float32)
  labels = rng.integers(0, shape[1], size=shape[0]).astype(np.int32)
  return logits, labels


@FAST
@given(shape=st.sampled_from(SHAPES), spread=st.floats(0.1, 20.0), seed=st.integers(0, 2**31 - 1))
def test_cross_entropy_is_negative_log_softmax_of_label(shape, spread, seed):
  logits, labels = _draw(shape, spread, seed)
  loss = _ce(logits, labels)
  chex.assert_shape(loss, (shape[0],))
  chex.assert_type(loss, jnp.float32)
  expect = -_np_log_softmax(logits)[np.arange(shape[0]), labels]
  np.testing.assert_allclose(loss, expect, rtol=1e-5, atol=1e-5)


@FAST
@given(
  shape=st.sampled_from(SHAPES),
  seed=st.integers(0, 2**31 - 1),
  shifts=st.lists(st.floats(-100.0, 100.0), min_size=8, max_size=8),
)
def test_cross_entropy_is_shift_invariant_per_row(shape, seed, shifts):
  logits, labels = _draw(shape, 3.0, seed)
  shift = np.asarray(shifts[: shape[0]], np.float32)[:, None]
  # float32 rounding of logits + shift is at most ulp(100) ~ 1e-5 per logit.
  np.testing.assert_allclose(_ce(logits + shift, labels), _ce(logits, labels), atol=5e-5)


@FAST
@given(shape=st.sampled_from(SHAPES), spread=st.floats(0.1, 20.0), seed=st.integers(0, 2**31 - 1))
def test_gradient_is_softmax_minus_one_hot(shape, spread, seed):
  logits, labels = _draw(shape, spread, seed)
  grad = _ce_grad(logits, labels)
  one_hot = np.eye(shape[1])[labels]
  np.testing.assert_allclose(grad, _np_softmax(logits) - one_hot, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad).sum(axis=-1), 0.0, atol=1e-6)


def test_large_logits_are_finite_and_exact():
  logits, labels = _draw((8, 5), 1e4, seed=0)
  logits[0] = [1e4, -1e4, 0.0, 5e3, 1e4]  # a tie at the maximum
  labels[0] = 1
  loss, grad = _ce(logits, labels), _ce_grad(logits, labels)
  chex.assert_tree_all_finite((loss, grad))
  expect = -_np_log_softmax(logits)[np.arange(8), labels]
  np.testing.assert_allclose(loss, expect, rtol=1e-6)
  assert float(loss[0]) == pytest.approx(2e4 + np.log(2), rel=1e-6)
  np.testing.assert_allclose(grad, _np_softmax(logits) - np.eye(5)[labels], atol=1e-6)


@FAST
@given(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**31 - 1))
def test_probability_labels(shape, seed):
  logits, labels = _draw(shape, 4.0, seed)
  one_hot = np.eye(shape[1], dtype=np.float32)[labels]
  # One loss by two formulas (a gather against a weighted sum): float32 rounding apart.
  np.testing.assert_allclose(_ce(logits, one_hot), _ce(logits, labels), rtol=1e-6, atol=1e-6)
  probs = np.random.default_rng(seed).dirichlet(np.ones(shape[1]), size=shape[0])
  probs = probs.astype(np.float32)
  expect = -(probs * _np_log_softmax(logits)).sum(axis=-1)
  np.testing.assert_allclose(_ce(logits, probs), expect, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(_ce_grad(logits, probs), _np_softmax(logits) - probs, atol=1e-6)


def test_zero_target_on_minus_infinity_logit_is_zero_not_nan():
  logits = np.array([[0.0, -np.inf, 1.0], [0.0, -np.inf, 1.0]], np.float32)
  expect = -_np_log_softmax(np.array([[0.0, 1.0]]))[0]  # the -inf class has probability 0
  np.testing.assert_allclose(_ce(logits, np.array([2, 0])), expect[::-1], rtol=1e-6)
  probs = np.array([[0.0, 0.0, 1.0], [0.25, 0.0, 0.75]], np.float32)
  np.testing.assert_allclose(
    _ce(logits, probs), [expect[1], 0.25 * expect[0] + 0.75 * expect[1]], rtol=1e-6
  )


@FAST
@given(shape=st.sampled_from(SHAPES), spread=st.floats(0.1, 20.0), seed=st.integers(0, 2**31 - 1))
def test_matches_optax_integer_labels(shape, spread, seed):
  logits, labels = _draw(shape, spread, seed)
  np.testing.assert_allclose(
    _ce(logits, labels),
    _optax_ce(logits, labels),
    # optax subtracts the label's logit from logsumexp: float32 cancellation of ulp(|logit|).
    rtol=1e-6,
    atol=1e-6 * (1 + np.abs(logits).max()),
  )


def test_accuracy_on_ids_and_one_hot():
  logits = np.array(
    [[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [4.0, 5.0, 0.0], [0.0, 0.0, 1.0]]
  )
  labels = np.array([0, 1, 2, 0, 1])  # rows 3 and 4 are wrong
  assert float(_accuracy(logits, labels)) == pytest.approx(0.6)
  assert float(_accuracy(logits, np.eye(3, dtype=np.float32)[labels])) == pytest.approx(0.6)
  assert float(_accuracy(logits, np.array([1, 0, 0, 1, 2]))) == pytest.approx(0.4)
  soft = np.array(
    [[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3], [0.5, 0.4, 0.1]]
  )  # arg-max rows 0, 1, 2, 1, 0
  assert float(_accuracy(logits, soft)) == pytest.approx(0.8)


def _tree(seed):
  rng = np.random.default_rng(seed)
  f = lambda *shape: rng.normal(size=shape).astype(np.float32)
  return {
    'layers': [{'w': f(4, 3), 'bn': {'scale': f(3), 'offset': f(3)}}, {'w': f(3, 2), 'b': f(2)}],
    'output': {'w': f(2, 5), 'b': f(5)},
  }


def test_l2_penalty_is_notes_formula_on_w_leaves():
  params = _tree(0)
  ws = [params['layers'][0]['w'], params['layers'][1]['w'], params['output']['w']]
  squares = sum(np.sum(np.asarray(w, np.float64) ** 2) for w in ws)
  # A float32 sum of 28 squares against float64: about 1e-7 relative, in any order.
  for lam, m in [(0.1, 32), (0.7, 5), (0.0, 8)]:
    np.testing.assert_allclose(_l2(params, lam, m), lam / (2 * m) * squares, rtol=1e-6)
  assert len(weight_matrices(params)) == 3
  # Traceable in lambda and m.
  np.testing.assert_allclose(_l2(params, 0.3, 12), 0.3 / 24 * squares, rtol=1e-6)


def test_l2_penalty_ignores_biases_and_bn_params():
  params = _tree(1)
  base = float(_l2(params, 0.5, 10))
  other = _tree(2)
  changed = jax.tree_util.tree_map_with_path(
    lambda path, a, b: a if path[-1].key == 'w' else b, params, other
  )
  assert float(_l2(changed, 0.5, 10)) == base
  # Changing a weight matrix does change it.
  moved = jax.tree_util.tree_map_with_path(
    lambda path, a: np.asarray(a) * 2 if path[-1].key == 'w' else a, params
  )
  assert float(_l2(moved, 0.5, 10)) == pytest.approx(4 * base, rel=1e-6)


def test_l2_penalty_gradient_is_lambda_over_m_times_w():
  params = _tree(3)
  grads = jax.jit(jax.grad(l2_penalty))(params, 0.4, 8)
  expect = jax.tree_util.tree_map_with_path(
    lambda path, a: 0.4 / 8 * np.asarray(a) if path[-1].key == 'w' else np.zeros(a.shape), params
  )
  chex.assert_trees_all_close(grads, expect, rtol=1e-6, atol=1e-7)


def test_l2_penalty_keeps_float64():
  with jax.enable_x64(True):
    w = np.array([1.0 + 1e-12, 2.0, -3.0])
    penalty = l2_penalty({'w': jnp.asarray(w, jnp.float64)}, 1.0, 0.5)
    assert penalty.dtype == jnp.float64
    assert float(penalty) == pytest.approx(np.sum(w**2), rel=1e-15, abs=0)


_LOGITS = np.random.default_rng(5).normal(size=(4, 3)).astype(np.float32)


@pytest.mark.parametrize('fn', [softmax_cross_entropy, accuracy])
@pytest.mark.parametrize(
  'labels, where',
  [
    (np.array([0, 1, 3, 2]), r'label 3 \(at flat index 2\)'),
    (np.array([0, -1, 2, 2]), r'label -1 \(at flat index 1\)'),
    # Not wrapped into the range by a cast to int32:
    (np.array([0, 1, 2, 2**40], np.int64), r'label 1099511627776 \(at flat index 3\)'),
    (jnp.asarray([0, 1, 2, 7]), r'label 7 \(at flat index 3\)'),  # concrete JAX: checked too
  ],
)
def test_concrete_labels_outside_the_classes_raise(fn, labels, where):
  # One-hot of an id outside [0, C) is a row of zeros: a loss of 0, silently.
  with pytest.raises(ValueError, match=where + r' is outside \[0, 3\) for logits of shape'):
    fn(_LOGITS, labels)


def test_traced_labels_are_not_checked():
  """Inside jit the ids have no value: the check costs the compiled program nothing."""
  loss = _ce(_LOGITS, np.array([0, 1, 2, 3]))
  chex.assert_shape(loss, (4,))
  assert float(loss[3]) == 0.0  # what the check exists to catch where it can


@pytest.mark.parametrize('fn', [softmax_cross_entropy, accuracy])
@pytest.mark.parametrize(
  'labels, pattern',
  [
    (np.zeros(3, np.int32), r'labels have shape \(3,\) but logits have shape \(4, 3\)'),
    (np.zeros((4, 1), np.int32), r'labels have shape \(4, 1\) but logits have shape \(4, 3\)'),
    (np.zeros((4, 2), np.float32), r'shape \(4, 2\).*probability rows of shape \(4, 3\)'),
    (np.zeros((4, 3, 1), np.float32), r'labels have shape \(4, 3, 1\)'),
  ],
)
def test_label_shapes_must_fit_the_logits_at_trace_time(fn, labels, pattern):
  with pytest.raises(ValueError, match=pattern):
    jax.eval_shape(fn, _LOGITS, labels)  # traces only: the error comes before any compute


@pytest.mark.parametrize('fn', [softmax_cross_entropy, accuracy])
def test_class_ids_must_be_integers(fn):
  # A float id of 0.5 would one-hot to zeros; bool ids are a mistake too.
  for labels in (np.array([0.0, 1.0, 0.5, 2.0]), np.array([True, False, True, True])):
    with pytest.raises(TypeError, match=r'labels of shape \(4,\) are class ids and must be'):
      jax.eval_shape(fn, _LOGITS, labels)


def test_logits_need_a_class_axis():
  with pytest.raises(ValueError, match=r'logits has shape \(\)'):
    softmax_cross_entropy(np.float32(1.0), np.int32(0))

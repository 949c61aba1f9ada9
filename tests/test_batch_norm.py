"""Tests for bnjax.batch_norm against the notes' formulas, NumPy and flax.linen.BatchNorm."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import bnjax
from bnjax.nn.normalization import batch_norm, batch_statistics, bn_init

# A few shapes only, so each jitted function compiles a handful of times.
SHAPES = [(2, 1), (5, 3), (16, 3), (3, 2, 2, 3), (4, 3, 2, 1)]
FAST = settings(max_examples=15, deadline=None)
# Batches `loc + spread * N(0, 1)` of a shape from SHAPES, drawn from `seed`.
BATCHES = dict(
  shape=st.sampled_from(SHAPES),
  loc=st.floats(-10, 10),
  spread=st.floats(0.5, 10),
  seed=st.integers(0, 2**31 - 1),
)


def _np_stats(x):
  """Mean and biased variance in float64 over all axes but the last."""
  x = np.asarray(x, np.float64)
  axes = tuple(range(x.ndim - 1))
  return x.mean(axis=axes), x.var(axis=axes)


def _np_bn(x, scale, offset, mean, var, eps):
  x = np.asarray(x, np.float64)
  return np.asarray(scale) * (x - mean) / np.sqrt(np.asarray(var, np.float64) + eps) + offset


def _random_bn(num_features, seed):
  """Non-trivial params and state: scale, offset, running mean and variance."""
  rng = np.random.default_rng(seed)
  params = {
    'scale': jnp.asarray(rng.uniform(0.5, 2.0, num_features), jnp.float32),
    'offset': jnp.asarray(rng.normal(0.0, 1.0, num_features), jnp.float32),
  }
  state = {
    'mean': jnp.asarray(rng.normal(0.0, 2.0, num_features), jnp.float32),
    'var': jnp.asarray(rng.uniform(0.5, 3.0, num_features), jnp.float32),
  }
  return params, state


# Jitted once per shape: eager calls compile every primitive and are far slower.
_bn = jax.jit(batch_norm, static_argnames=('training', 'axis_name'))
_train = jax.jit(lambda p, s, x, m, e: batch_norm(p, s, x, training=True, momentum=m, eps=e))


@FAST
@given(**BATCHES)
def test_training_output_has_zero_mean_unit_variance(shape, loc, spread, seed):
  rng = np.random.default_rng(seed)
  x = (loc + spread * rng.normal(size=shape)).astype(np.float32)
  params, state = bn_init(shape[-1])
  eps = 1e-5
  y, _ = _train(params, state, x, 0.9, eps)
  chex.assert_shape(y, shape)
  chex.assert_type(y, jnp.float32)
  y_mean, y_var = _np_stats(y)
  _, x_var = _np_stats(x)
  np.testing.assert_allclose(y_mean, 0.0, atol=1e-4)
  # Exactly 1 up to eps: var / (var + eps).
  np.testing.assert_allclose(y_var, x_var / (x_var + eps), rtol=1e-4)
  # Which is 1 whenever the batch variance dwarfs eps (not always so for 2 rows).
  np.testing.assert_allclose(y_var[x_var > 1e-2], 1.0, rtol=1e-2)
  # And elementwise the notes' formula.
  mean, var = _np_stats(x)
  np.testing.assert_allclose(y, _np_bn(x, 1.0, 0.0, mean, var, eps), atol=1e-4)


@FAST
@given(**BATCHES)
def test_scale_sqrt_var_offset_mean_inverts(shape, loc, spread, seed):
  rng = np.random.default_rng(seed)
  x = (loc + spread * rng.normal(size=shape)).astype(np.float32)
  eps = 1e-3
  mean, var = _np_stats(x)
  params = {
    'scale': jnp.asarray(np.sqrt(var + eps), jnp.float32),
    'offset': jnp.asarray(mean, jnp.float32),
  }
  _, state = bn_init(shape[-1])
  y, _ = _train(params, state, x, 0.9, eps)
  np.testing.assert_allclose(y, x, atol=1e-5 * (abs(loc) + 10 * spread))


def test_eval_mode_uses_running_stats_and_keeps_state():
  params, state = _random_bn(3, seed=0)
  x = np.random.default_rng(1).normal(3.0, 2.0, size=(4, 6, 3)).astype(np.float32)
  eps = 1e-3
  expect = _np_bn(x, params['scale'], params['offset'], state['mean'], state['var'], eps)
  y, new_state = _bn(params, state, x[0], training=False, momentum=0.9, eps=eps)
  np.testing.assert_allclose(y, expect[0], rtol=1e-5, atol=1e-5)
  # Not the batch's statistics: the running ones give a clearly different answer.
  assert np.abs(np.asarray(y).mean(axis=0)).max() > 0.1
  chex.assert_trees_all_equal(new_state, state)
  chex.assert_trees_all_equal_dtypes(new_state, state)
  chex.assert_trees_all_equal_structs(new_state, state)

  def eval_step(carry, xb):
    yb, carry = _bn(params, carry, xb, training=False, momentum=0.9, eps=eps)
    return carry, yb

  final, ys = jax.jit(lambda s, xs: lax.scan(eval_step, s, xs))(state, x)
  chex.assert_trees_all_equal(final, state)
  chex.assert_trees_all_equal_dtypes(final, state)
  np.testing.assert_allclose(ys, expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_train_and_eval_states_share_structure_in_cond(dtype):
  """lax.cond needs both branches' states to match in structure and dtype."""
  params, state = bn_init(3, dtype)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 3)), dtype)

  def step(training, state):
    return lax.cond(
      training,
      lambda s: batch_norm(params, s, x, training=True, momentum=0.5),
      lambda s: batch_norm(params, s, x, training=False, momentum=0.5),
      state,
    )

  y_train, s_train = jax.jit(step)(True, state)
  y_eval, s_eval = jax.jit(step)(False, state)
  chex.assert_trees_all_equal_dtypes(s_train, state)
  chex.assert_trees_all_equal(s_eval, state)
  chex.assert_type([y_train, y_eval], dtype)
  mean, var = _np_stats(np.asarray(x, np.float64))
  np.testing.assert_allclose(s_train['mean'], 0.5 * mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(s_train['var'], 0.5 + 0.5 * var, rtol=1e-5)


@pytest.mark.parametrize('state_dtype', [jnp.float32, jnp.bfloat16])
def test_training_state_keeps_dtypes_through_scan(state_dtype):
  params, _ = _random_bn(3, seed=17)
  state = {'mean': jnp.zeros(3, state_dtype), 'var': jnp.ones(3, state_dtype)}
  xs = np.random.default_rng(18).normal(2.0, 1.5, size=(4, 8, 3)).astype(np.float32)

  def step(carry, xb):
    yb, carry = batch_norm(params, carry, xb, training=True, momentum=0.5)
    return carry, yb

  final, ys = jax.jit(lambda s, xs: lax.scan(step, s, xs))(state, xs)
  chex.assert_trees_all_equal_dtypes(final, state)
  chex.assert_type(ys, jnp.float32)
  expect = sum(0.5 * 0.5 ** (3 - j) * _np_stats(xs[j])[0] for j in range(4))
  np.testing.assert_allclose(
    final['mean'], expect, rtol=1e-2 if state_dtype == jnp.bfloat16 else 1e-5
  )


@pytest.mark.parametrize('shape', [(6, 3), (4, 2, 3, 3)])
def test_running_stats_closed_form(shape):
  k, m = 5, 0.8
  rng = np.random.default_rng(3)
  params, state = _random_bn(shape[-1], seed=4)
  init_mean, init_var = np.asarray(state['mean'], np.float64), np.asarray(state['var'], np.float64)
  batches = [
    (rng.normal(size=shape) * rng.uniform(0.5, 3) + rng.normal(0, 3)).astype(np.float32)
    for _ in range(k)
  ]
  for xb in batches:
    _, state = _train(params, state, xb, m, 1e-5)
  expect_mean, expect_var = m**k * init_mean, m**k * init_var
  for j, xb in enumerate(batches, start=1):
    mean_j, var_j = _np_stats(xb)
    expect_mean = expect_mean + (1 - m) * m ** (k - j) * mean_j
    expect_var = expect_var + (1 - m) * m ** (k - j) * var_j
  np.testing.assert_allclose(state['mean'], expect_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(state['var'], expect_var, rtol=1e-5)
  chex.assert_type(state['mean'], jnp.float32)


_masked_train = jax.jit(
  lambda p, s, x, mask: batch_norm(p, s, x, training=True, momentum=0.7, eps=1e-5, mask=mask)
)


def _check_mask(shape, mask, garbage):
  params, state = _random_bn(shape[-1], seed=5)
  x = np.random.default_rng(6).normal(2.0, 3.0, size=shape).astype(np.float32)
  x[~mask] = garbage
  y, new_state = _masked_train(params, state, x, mask)
  # BN of only the unmasked rows, by the notes' formulas in float64.
  mean, var = _np_stats(x[mask])
  y_ref = _np_bn(x[mask], params['scale'], params['offset'], mean, var, 1e-5)
  state_ref = {
    'mean': 0.7 * np.asarray(state['mean']) + 0.3 * mean,
    'var': 0.7 * np.asarray(state['var']) + 0.3 * var,
  }
  np.testing.assert_allclose(np.asarray(y)[mask], y_ref, rtol=1e-4, atol=1e-4)
  chex.assert_trees_all_close(new_state, state_ref, rtol=1e-5, atol=1e-5)
  return params, state, x, y, new_state


@FAST
@given(
  shape=st.sampled_from([(8, 3), (8, 2, 2, 3)]),
  bits=st.lists(st.booleans(), min_size=8, max_size=8).filter(any),
  garbage=st.sampled_from([0.0, -7.0, 1e3, -1e6, 3e15]),
)
def test_masked_rows_change_nothing(shape, bits, garbage):
  _check_mask(shape, np.asarray(bits), garbage)


def test_masked_batch_equals_batch_norm_of_unmasked_rows():
  mask = np.array([1, 0, 1, 1, 0, 0, 1, 1], bool)
  params, state, x, y, new_state = _check_mask((8, 3), mask, 1e4)
  y_ref, state_ref = _bn(params, state, x[mask], training=True, momentum=0.7, eps=1e-5)
  # 8 rows with 3 masked against 5 rows: other shapes, so the 5 real terms may
  # be summed in another order. Float32 rounding moves a mean of 5 terms with
  # |x| <= ~10 by 1e-6 at most; the largest error seen is a tenth of these
  # tolerances.
  np.testing.assert_allclose(np.asarray(y)[mask], y_ref, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(new_state, state_ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('garbage', [1e20, np.inf, np.nan])
def test_masked_rows_change_nothing_even_when_non_finite(garbage):
  _check_mask((8, 3), np.array([1, 1, 0, 1, 0, 1, 1, 0], bool), garbage)


def test_fully_masked_batch_stays_finite():
  params, state = _random_bn(3, seed=7)
  x = np.ones((4, 3), np.float32)
  y, new_state = _bn(params, state, x, training=True, momentum=0.5, mask=np.zeros(4, bool))
  chex.assert_tree_all_finite((y, new_state))


def _flax_bn(params, state, x, *, training, momentum, eps):
  module = nn.BatchNorm(
    use_running_average=not training, momentum=momentum, epsilon=eps, use_fast_variance=False
  )
  variables = {
    'params': {'scale': params['scale'], 'bias': params['offset']},
    'batch_stats': {'mean': state['mean'], 'var': state['var']},
  }
  if training:
    y, updates = module.apply(variables, x, mutable=['batch_stats'])
    return y, dict(updates['batch_stats'])
  return module.apply(variables, x), state


@pytest.mark.parametrize('training', [True, False])
@pytest.mark.parametrize('shape', [(7, 4), (3, 2, 5, 4)])
def test_matches_flax_batch_norm(training, shape):
  momentum, eps = 0.85, 1e-3
  flax_bn = jax.jit(_flax_bn, static_argnames=('training', 'momentum', 'eps'))
  params, state = _random_bn(shape[-1], seed=8)
  x = jnp.asarray(np.random.default_rng(9).normal(1.5, 2.5, size=shape), jnp.float32)
  y, new_state = _bn(params, state, x, training=training, momentum=momentum, eps=eps)
  y_flax, state_flax = flax_bn(params, state, x, training=training, momentum=momentum, eps=eps)
  # An independent implementation: the same formulas in another order of float32 operations.
  np.testing.assert_allclose(y, y_flax, rtol=1e-5, atol=1e-5)
  chex.assert_trees_all_close(new_state, state_flax, rtol=1e-5, atol=1e-6)
  if training:  # The update really moved the running stats.
    assert np.abs(np.asarray(new_state['mean']) - np.asarray(state['mean'])).min() > 1e-2


def _formula_bn(params, state, x, momentum, eps):
  """Training-mode BN as the notes write it, whose derivative JAX takes term by term."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axis=axes)
  var = jnp.mean(jnp.square(x - mean), axis=axes)
  y = params['scale'] * (x - mean) / jnp.sqrt(var + eps) + params['offset']
  new_state = {
    'mean': momentum * state['mean'] + (1 - momentum) * mean,
    'var': momentum * state['var'] + (1 - momentum) * var,
  }
  return y, new_state


def _objective(bn, weights):
  """A loss of everything BN gives: its output and the running statistics it updates."""

  def loss(params, x, eps, state):
    y, new_state = bn(params, state, x, 0.9, eps)
    terms = [jnp.sum(jnp.sin(y) * weights['y'])]
    terms += [jnp.sum(new_state[name] * weights[name]) for name in ('mean', 'var')]
    return sum(terms)

  return loss


def _derivatives(bn):
  """Reverse (gradients of the loss), forward (its jvp) and forward over reverse (an hvp)."""

  @jax.jit
  def run(params, x, eps, state, weights, tangents):
    loss = _objective(bn, weights)
    primals = (params, x, eps)
    grads = jax.grad(loss, argnums=(0, 1, 2))(*primals, state)
    _, jvp = jax.jvp(lambda *p: loss(*p, state), primals, tangents)
    grad_x = lambda *p: jax.grad(loss, argnums=1)(*p, state)
    _, hvp = jax.jvp(grad_x, primals, tangents)
    return grads, jvp, hvp

  return run


_fused_derivatives = _derivatives(
  lambda p, s, x, m, e: batch_norm(p, s, x, training=True, momentum=m, eps=e)
)
_formula_derivatives = _derivatives(_formula_bn)


@FAST
@given(shape=st.sampled_from([(16, 3), (4, 2, 2, 3)]), seed=st.integers(0, 2**31 - 1))
def test_derivatives_equal_those_of_the_notes_formula(shape, seed):
  # batch_norm's training mode has a derivative of its own, in closed form
  # (`_normalize_batch_jvp`); here it must equal JAX's derivative of the
  # formula, in every input, with the running statistics in the loss, in
  # reverse mode, forward mode and forward over reverse.
  rng = np.random.default_rng(seed)
  params, state = _random_bn(3, seed)
  x = jnp.asarray(rng.normal(rng.uniform(-5, 5), rng.uniform(0.5, 5), shape), jnp.float32)
  eps = jnp.float32(rng.uniform(1e-3, 1.0))
  weights = {
    'y': jnp.asarray(rng.normal(size=shape), jnp.float32),
    'mean': jnp.asarray(rng.normal(size=3), jnp.float32),
    'var': jnp.asarray(rng.normal(size=3), jnp.float32),
  }
  tangents = (
    jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape), jnp.float32), params),
    jnp.asarray(rng.normal(size=shape), jnp.float32),
    jnp.float32(rng.normal()),
  )
  got = _fused_derivatives(params, x, eps, state, weights, tangents)
  want = _formula_derivatives(params, x, eps, state, weights, tangents)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    scale = float(np.max(np.abs(b)))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def test_gradients_match_flax_batch_norm_under_vmap():
  # An independent implementation (flax differentiated by JAX), over a
  # `vmap` of trials with their own eps, as a search trains them.
  shape, trials = (7, 4), 3
  params, state = _random_bn(shape[-1], seed=20)
  rng = np.random.default_rng(21)
  xs = jnp.asarray(rng.normal(1.5, 2.5, size=(trials, *shape)), jnp.float32)
  weights = jnp.asarray(rng.normal(size=shape), jnp.float32)
  epsilons = jnp.asarray([1e-5, 1e-2, 0.5], jnp.float32)

  def grads(bn):
    loss = lambda p, x, e: jnp.sum(jnp.sin(bn(p, state, x, e)[0]) * weights)
    return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(None, 0, 0)))

  ours = grads(lambda p, s, x, e: batch_norm(p, s, x, training=True, momentum=0.9, eps=e))
  # flax takes epsilon as a static attribute: one trial at a time, stacked.
  flax = [
    jax.grad(
      lambda p, x, e=float(e): jnp.sum(
        jnp.sin(_flax_bn(p, state, x, training=True, momentum=0.9, eps=e)[0]) * weights
      ),
      argnums=(0, 1),
    )(params, x)
    for x, e in zip(xs, epsilons, strict=True)
  ]
  want = jax.tree.map(lambda *a: jnp.stack(a), *flax)
  chex.assert_trees_all_close(ours(params, xs, epsilons), want, rtol=1e-4, atol=1e-5)


@FAST
@given(
  a=st.lists(st.floats(0.1, 10.0), min_size=3, max_size=3),
  b=st.lists(st.floats(-100.0, 100.0), min_size=3, max_size=3),
  shape=st.sampled_from([(16, 3), (4, 2, 2, 3)]),
)
def test_invariant_to_positive_affine_rescaling(a, b, shape):
  params, state = _random_bn(3, seed=10)
  x = np.random.default_rng(11).normal(size=shape).astype(np.float32)
  eps = 1e-9  # negligible next to the smallest variance, 0.01 * var(x)
  y, _ = _train(params, state, x, 0.9, eps)
  y_affine, _ = _train(
    params, state, (np.asarray(a) * x + np.asarray(b)).astype(np.float32), 0.9, eps
  )
  np.testing.assert_allclose(y_affine, y, atol=1e-3)


def test_large_offset_small_spread_is_accurate():
  rng = np.random.default_rng(12)
  x = (1000.0 + 0.01 * rng.normal(size=(256, 4))).astype(np.float32)
  _, var64 = _np_stats(x)
  params, state = bn_init(4)

  @jax.jit
  def run(x):
    mean, var = batch_statistics(x)
    y, _ = batch_norm(params, state, x, training=True, eps=1e-10)
    naive = jnp.mean(x * x, axis=0) - jnp.mean(x, axis=0) ** 2
    return mean, var, y, naive

  mean, var, y, naive = run(jnp.asarray(x))
  chex.assert_type([mean, var, y], jnp.float32)
  np.testing.assert_allclose(var, var64, rtol=0.03)
  np.testing.assert_allclose(np.var(np.asarray(y, np.float64), axis=0), 1.0, rtol=0.03)
  # The one-pass E[x^2] - E[x]^2 in float32 is useless here: the test can tell.
  assert np.abs(np.asarray(naive) / var64 - 1).max() > 0.5


def test_axis_name_pools_statistics_over_shards():
  params, state = _random_bn(3, seed=13)
  rng = np.random.default_rng(14)
  # Shards with very different means, so per-shard and pooled statistics differ.
  shards = np.stack([rng.normal(4.0 * i, 1.0 + i, size=(5, 3)) for i in range(4)]).astype(
    np.float32
  )
  whole = shards.reshape(20, 3)
  y_whole, state_whole = _train(params, state, whole, 0.6, 1e-5)

  pooled = jax.vmap(
    lambda xs: batch_norm(params, state, xs, training=True, momentum=0.6, axis_name='d'),
    axis_name='d',
  )
  y, new_state = jax.jit(pooled)(shards)
  # Four partial sums pooled by psum against one sum of 20 rows: the same
  # terms in another order, so float32 rounding (|x| up to ~20: a few 1e-6).
  np.testing.assert_allclose(np.asarray(y).reshape(20, 3), y_whole, rtol=1e-5, atol=1e-5)
  for i in range(4):
    chex.assert_trees_all_close(
      jax.tree.map(lambda s, i=i: s[i], new_state), state_whole, rtol=1e-5, atol=1e-6
    )

  per_shard = jax.vmap(lambda xs: batch_norm(params, state, xs, training=True, momentum=0.6))
  y_sep, state_sep = jax.jit(per_shard)(shards)
  # A vmap of 4 against one shard alone: other shapes, hence float32 rounding.
  for i in range(4):
    y_i, state_i = _train(params, state, shards[i], 0.6, 1e-5)
    np.testing.assert_allclose(y_sep[i], y_i, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(
      jax.tree.map(lambda s, i=i: s[i], state_sep), state_i, rtol=1e-5, atol=1e-6
    )
  assert np.abs(np.asarray(y_sep).reshape(20, 3) - np.asarray(y_whole)).max() > 0.5


@jax.jit
@chex.assert_max_traces(n=1)
def _bn_sweep(params, state, x, momenta, epsilons):
  def one(m, e):
    y_train, s_train = _bn(params, state, x, training=True, momentum=m, eps=e)
    y_eval, s_eval = _bn(params, s_train, x, training=False, momentum=m, eps=e)
    return y_train, s_train, y_eval, s_eval

  return jax.vmap(one)(momenta, epsilons)


def test_vmap_over_traced_momentum_and_eps_matches_loop():
  params, state = _random_bn(3, seed=15)
  x = jnp.asarray(np.random.default_rng(16).normal(0.0, 0.2, size=(6, 3)), jnp.float32)
  for momenta, epsilons in [
    ([0.0, 0.5, 0.9, 0.99], [1e-5, 1e-2, 1e-1, 1.0]),
    ([0.3, 0.7, 0.95, 0.999], [1.0, 1e-3, 1e-5, 0.5]),
  ]:
    got = _bn_sweep(params, state, x, jnp.asarray(momenta), jnp.asarray(epsilons))
    # The vmap and the single calls have other shapes, so their sums over the
    # 6 rows may round differently: float32 agreement, not bitwise.
    for i, (m, e) in enumerate(zip(momenta, epsilons, strict=True)):
      y_train, s_train = _bn(params, state, x, training=True, momentum=m, eps=e)
      y_eval, s_eval = _bn(params, s_train, x, training=False, momentum=m, eps=e)
      chex.assert_trees_all_close(
        jax.tree.map(lambda a, i=i: a[i], got),
        (y_train, s_train, y_eval, s_eval),
        rtol=1e-5,
        atol=1e-6,
      )
  # eps matters at this scale (var ~ 0.04), so the sweep is not trivially constant.
  assert np.abs(np.asarray(got[0][0]) - np.asarray(got[0][3])).max() > 0.1


@pytest.mark.parametrize(
  'dtype, stat_dtype',
  [(jnp.float32, jnp.float32), (jnp.bfloat16, jnp.float32), (jnp.float16, jnp.float32)],
)
def test_bn_init(dtype, stat_dtype):
  params, state = bn_init(5, dtype)
  chex.assert_shape([params['scale'], params['offset'], state['mean'], state['var']], (5,))
  chex.assert_type([params['scale'], params['offset']], dtype)
  chex.assert_type([state['mean'], state['var']], stat_dtype)
  assert set(params) == {'scale', 'offset'} and set(state) == {'mean', 'var'}
  np.testing.assert_array_equal(params['scale'], np.ones(5))
  np.testing.assert_array_equal(params['offset'], np.zeros(5))
  np.testing.assert_array_equal(state['mean'], np.zeros(5))
  np.testing.assert_array_equal(state['var'], np.ones(5))


@pytest.mark.parametrize('num_features', [0, -2])
def test_bn_init_rejects_non_positive_features(num_features):
  with pytest.raises(ValueError, match='num_features'):
    bn_init(num_features)


def test_public_api_exports_batch_norm():
  assert bnjax.batch_norm is batch_norm and bnjax.bn_init is bn_init
  assert bnjax.batch_statistics is batch_statistics


# Mistakes that used to broadcast, zero out or truncate silently. Each must fail while
# tracing (`jax.eval_shape` runs nothing), with the shapes or dtype in the message.
_F = 4
_X = np.random.default_rng(19).normal(size=(8, _F)).astype(np.float32)
BAD_SHAPES = {
  'x_one_feature_against_four': (
    dict(x=_X[:, :1]),
    ValueError,
    r"x has shape \(8, 1\) but params\['scale'\] has shape \(4,\)",
  ),
  'x_too_wide': (dict(x=np.ones((8, 5), np.float32)), ValueError, r'x has shape \(8, 5\)'),
  'x_one_dimensional': (
    dict(x=_X[:, 0]),
    ValueError,
    r'batch_norm needs \[batch, \.\.\., features\]; got shape \(8,\)',
  ),
  'x_scalar': (dict(x=np.float32(1.0)), ValueError, r'got shape \(\)'),
  'x_integer': (dict(x=_X.astype(np.int32)), TypeError, 'floating-point x; got dtype int32'),
  'x_bool': (dict(x=_X > 0), TypeError, 'got dtype bool'),
  'mask_column': (
    dict(mask=np.ones((8, 1), bool)),
    ValueError,
    r'mask has shape \(8, 1\) but x has shape \(8, 4\); mask must be \[batch\] = \(8,\)',
  ),
  'mask_too_short': (dict(mask=np.ones(5, bool)), ValueError, r'mask has shape \(5,\)'),
  'state_other_width': (
    dict(state=bn_init(3)[1]),
    ValueError,
    r"state\['mean'\] has shape \(3,\) but params\['scale'\] has shape \(4,\)",
  ),
}


def _bn_call(params=None, state=None, x=_X, mask=None, training=True):
  default_params, default_state = bn_init(_F)
  params = default_params if params is None else params
  state = default_state if state is None else state
  return lambda: batch_norm(params, state, x, training=training, mask=mask)


@pytest.mark.parametrize('case', BAD_SHAPES)
@pytest.mark.parametrize('training', [True, False])
def test_bad_shapes_and_dtypes_fail_at_trace_time(case, training):
  kwargs, error, pattern = BAD_SHAPES[case]
  with pytest.raises(error, match=pattern):
    jax.eval_shape(_bn_call(training=training, **kwargs))
  with pytest.raises(error, match=pattern):  # and eagerly, with the same message
    _bn_call(training=training, **kwargs)()


def test_batch_statistics_rejects_what_batch_norm_does():
  with pytest.raises(ValueError, match=r'batch_statistics needs .* got shape \(8,\)'):
    jax.eval_shape(batch_statistics, _X[:, 0])
  with pytest.raises(ValueError, match=r'mask has shape \(8, 1\)'):
    jax.eval_shape(lambda x: batch_statistics(x, mask=np.ones((8, 1), bool)), _X)


@pytest.mark.parametrize(
  'momentum, eps, pattern',
  [
    (2, 1e-5, r'momentum must be in \[0, 1\); got 2.0'),
    (1.0, 1e-5, r'momentum must be in \[0, 1\); got 1.0'),
    (-0.1, 1e-5, 'momentum must be in'),
    (np.float32(1.5), 1e-5, 'momentum must be in'),
    (np.array([0.5, 1.0]), 1e-5, r'momentum must be in \[0, 1\); got 1.0'),
    (jnp.asarray(2.0), 1e-5, 'momentum must be in'),  # concrete, so checked too
    (float('nan'), 1e-5, 'momentum must be in'),
    (0.9, -1, r'eps must be a finite number > 0; got -1.0'),
    (0.9, 0.0, 'eps must be a finite number > 0'),
    (0.9, np.inf, 'eps must be a finite number > 0; got inf'),
  ],
)
def test_concrete_momentum_and_eps_are_checked(momentum, eps, pattern):
  params, state = bn_init(_F)
  for training in (True, False):
    with pytest.raises(bnjax.registry.HyperparameterError, match=pattern):
      batch_norm(params, state, _X, training=training, momentum=momentum, eps=eps)


def test_traced_momentum_and_eps_trace_unchecked():
  """A traced value has no value yet: no check, and the formula runs as written."""
  params, state = _random_bn(_F, seed=20)
  run = jax.jit(
    lambda m, e: batch_norm(params, state, _X, training=True, momentum=m, eps=e),
  )
  _, new_state = run(2.0, 1e-5)  # out of range, but traced: computed, not refused
  mean, _ = _np_stats(_X)
  np.testing.assert_allclose(
    new_state['mean'], 2.0 * np.asarray(state['mean']) - mean, rtol=1e-5, atol=1e-5
  )
  y, _ = run(0.9, 1e-5)
  chex.assert_tree_all_finite(y)
  # The checks run in Python at trace time only: the jitted program is the same as one
  # traced with in-range values, so they cost the jitted path nothing.
  assert str(jax.make_jaxpr(run)(0.9, 1e-5)) == str(jax.make_jaxpr(run)(2.0, -1.0))


@pytest.mark.parametrize(
  'training, pattern',
  [
    (jnp.asarray(True), r'training must be a Python bool; got ArrayImpl of shape \(\)'),
    (np.array(True), 'training must be a Python bool; got ndarray'),
    (1, 'training must be a Python bool; got 1'),
    ('yes', "training must be a Python bool; got 'yes'"),
  ],
)
def test_training_must_be_a_python_bool(training, pattern):
  params, state = bn_init(_F)
  with pytest.raises(TypeError, match=pattern + '.*static_argnames'):
    batch_norm(params, state, _X, training=training)


def test_traced_training_names_the_fix():
  params, state = bn_init(_F)
  traced = jax.jit(lambda t: batch_norm(params, state, _X, training=t))
  with pytest.raises(TypeError, match=r"training is traced.*static_argnames=\('training',\)"):
    traced(True)
  # NumPy's bool is a bool too.
  y, _ = batch_norm(params, state, _X, training=np.bool_(True))
  chex.assert_shape(y, _X.shape)

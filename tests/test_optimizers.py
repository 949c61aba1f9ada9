"""Tests for bnjax.optimizers: the notes' formulas in NumPy, optax, traced families."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

import bnjax
from bnjax.optim.transforms import FAMILIES

STEPS = 6
FAST = settings(max_examples=15, deadline=None)


def _f32(x):
  """Hyperparameters as float32 numbers, so that NumPy and JAX see the same values."""
  return float(np.float32(x))


def _problem(seed, grad_scale=1.0):
  rng = np.random.default_rng(seed)
  params = {
    'w': rng.normal(size=(3, 2)).astype(np.float32),
    'b': rng.normal(size=(4,)).astype(np.float32),
  }
  grads = {
    'w': (grad_scale * rng.normal(size=(STEPS, 3, 2))).astype(np.float32),
    'b': (grad_scale * rng.normal(size=(STEPS, 4))).astype(np.float32),
  }
  return params, grads


def _trajectory(tx, params, grads):
  """Params after each of the updates from `grads` (leading axis = step), and the updates."""

  def step(carry, g):
    params, state = carry
    updates, state = tx.update(g, state, params)
    params = optax.apply_updates(params, updates)
    return (params, state), (params, updates)

  _, (params_k, updates_k) = lax.scan(step, (params, tx.init(params)), grads)
  return params_k, updates_k


def _notes_reference(family, params, grads, lr, beta1, beta2, eps):
  """The notes' update rules, leaf by leaf, in float64."""
  out = {}
  for name, w in params.items():
    w, v, s = np.asarray(w, np.float64), 0.0, 0.0
    path = []
    for t, g in enumerate(np.asarray(grads[name], np.float64), start=1):
      if family == 'sgd':
        w = w - lr * g
      elif family == 'momentum':
        v = beta1 * v + (1 - beta1) * g
        w = w - lr * v
      elif family == 'rmsprop':
        s = beta2 * s + (1 - beta2) * g**2
        w = w - lr * g / (np.sqrt(s) + eps)
      else:
        v = beta1 * v + (1 - beta1) * g
        s = beta2 * s + (1 - beta2) * g**2
        v_hat, s_hat = v / (1 - beta1**t), s / (1 - beta2**t)
        w = w - lr * v_hat / (np.sqrt(s_hat) + eps)
      path.append(w)
    out[name] = np.stack(path)
  return out


FACTORIES = {
  'sgd': lambda lr, b1, b2, eps: bnjax.sgd(lr),
  'momentum': lambda lr, b1, b2, eps: bnjax.momentum(lr, b1),
  'rmsprop': lambda lr, b1, b2, eps: bnjax.rmsprop(lr, b2, eps),
  'adam': lambda lr, b1, b2, eps: bnjax.adam(lr, b1, b2, eps),
}


@functools.partial(jax.jit, static_argnames='family')
def _run_named(params, grads, lr, beta1, beta2, eps, *, family):
  """The named alias (bnjax.adam, ...) with traced hyperparameters: one compile per family."""
  return _trajectory(FACTORIES[family](lr, beta1, beta2, eps), params, grads)


@jax.jit
def _run_indexed(params, grads, lr, beta1, beta2, eps, family_index):
  return _trajectory(
    bnjax.optimizer(lr, family_index, beta1=beta1, beta2=beta2, eps=eps), params, grads
  )


@FAST
@given(
  family=st.sampled_from(FAMILIES),
  lr=st.floats(1e-3, 1.0),
  beta1=st.floats(0.0, 0.99),
  beta2=st.floats(0.5, 0.999),
  log_eps=st.floats(-8, -1),
  log_grad_scale=st.floats(-3, 1),
  seed=st.integers(0, 2**20),
)
def test_matches_notes_formula_step_by_step(
  family, lr, beta1, beta2, log_eps, log_grad_scale, seed
):
  lr, beta1, beta2, eps = _f32(lr), _f32(beta1), _f32(beta2), _f32(10.0**log_eps)
  params, grads = _problem(seed, 10.0**log_grad_scale)
  got, _ = _run_named(params, grads, lr, beta1, beta2, eps, family=family)
  expect = _notes_reference(family, params, grads, lr, beta1, beta2, eps)
  chex.assert_trees_all_close(got, expect, rtol=1e-4, atol=1e-4 * lr)


@pytest.mark.parametrize('family', FAMILIES)
def test_matches_notes_where_eps_placement_and_bias_correction_matter(family):
  """Small gradients next to a large eps: eps inside the root would be far off."""
  lr, beta1, beta2, eps = 0.1, _f32(0.8), _f32(0.99), _f32(1e-2)
  params, grads = _problem(1, grad_scale=1e-2)
  got, updates = _run_named(params, grads, lr, beta1, beta2, eps, family=family)
  expect = _notes_reference(family, params, grads, lr, beta1, beta2, eps)
  chex.assert_trees_all_close(got, expect, rtol=1e-5, atol=1e-6)
  # Step 1 by hand: v_hat = g and s_hat = g^2 for Adam, so w moves by lr g / (|g| + eps).
  g = grads['b'][0].astype(np.float64)
  first = {
    'sgd': -lr * g,
    'momentum': -lr * (1 - beta1) * g,
    'rmsprop': -lr * g / (np.sqrt(1 - beta2) * np.abs(g) + eps),
    'adam': -lr * g / (np.abs(g) + eps),
  }[family]
  np.testing.assert_allclose(updates['b'][0], first, rtol=1e-5)


def _optax_pair(family, lr, b1, b2, eps):
  return {
    'sgd': optax.sgd(lr),
    'momentum': optax.sgd(lr * (1 - b1), momentum=b1),
    'rmsprop': optax.rmsprop(lr, decay=b2, eps=eps, eps_in_sqrt=False),
    'adam': optax.adam(lr, b1=b1, b2=b2, eps=eps),
  }[family]


@jax.jit
def _run_optax_all(params, grads, lr, b1, b2, eps):
  return {
    family: _trajectory(_optax_pair(family, lr, b1, b2, eps), params, grads)[0]
    for family in FAMILIES
  }


@pytest.mark.parametrize(
  'hp', [(0.1, 0.9, 0.999, 1e-8), (0.03, 0.5, 0.9, 1e-3), (1.0, 0.0, 0.6, 0.0)]
)
def test_matches_optax(hp):
  lr, b1, b2, eps = map(_f32, hp)
  params, grads = _problem(2)
  ours = {
    family: _run_named(params, grads, lr, b1, b2, eps, family=family)[0] for family in FAMILIES
  }
  theirs = _run_optax_all(params, grads, lr, b1, b2, eps)
  # optax is an independent implementation: the same updates in another order of float32 ops.
  chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)
  # The documented relation is not an identity: plain optax.sgd(lr, momentum=b) steps larger.
  if 0 < b1 < 1:
    plain = jax.jit(lambda p, g: _trajectory(optax.sgd(lr, momentum=b1), p, g)[0])(params, grads)
    assert np.abs(np.asarray(plain['w']) - np.asarray(ours['momentum']['w'])).max() > 1e-2


def test_rmsprop_matches_optax_with_eps_zero():
  params, grads = _problem(3)
  lr, b2 = 0.05, _f32(0.9)
  ours, _ = _run_named(params, grads, lr, 0.9, b2, 0.0, family='rmsprop')
  theirs, _ = jax.jit(lambda p, g: _trajectory(optax.rmsprop(lr, decay=b2, eps=0.0), p, g))(
    params, grads
  )
  chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_traced_family_index_equals_named_family():
  params, grads = _problem(4, grad_scale=0.1)
  hp = (0.05, _f32(0.8), _f32(0.95), _f32(1e-3))
  results = {}
  for index, family in enumerate(FAMILIES):
    indexed, _ = _run_indexed(params, grads, *hp, jnp.int32(index))
    named, _ = _run_named(params, grads, *hp, family=family)
    # Equal shapes, but two programs: the traced index selects among all four
    # updates, which XLA may fuse (and contract into FMAs) differently than the
    # named family's. Elementwise float32 over 6 steps: a few ulps (sgd and
    # momentum come out bitwise equal here, adam within a sixth of this).
    chex.assert_trees_all_close(indexed, named, rtol=1e-6, atol=1e-7)
    string_family, _ = jax.jit(
      lambda p, g, family=family: _trajectory(
        bnjax.optimizer(hp[0], family, beta1=hp[1], beta2=hp[2], eps=hp[3]), p, g
      )
    )(params, grads)
    chex.assert_trees_all_close(indexed, string_family, rtol=1e-6, atol=1e-7)
    results[family] = np.asarray(indexed['w'][-1])
  # The four families really are different programs.
  for a in FAMILIES:
    for b in FAMILIES:
      if a < b:
        assert np.abs(results[a] - results[b]).max() > 1e-3, (a, b)


def test_string_family_stores_only_the_averages_it_uses():
  params, _ = _problem(5)
  for family, has_v, has_s in [
    ('sgd', False, False),
    ('momentum', True, False),
    ('rmsprop', False, True),
    ('adam', True, True),
  ]:
    state = bnjax.optimizer(0.1, family).init(params)
    assert (state.velocity is not None) == has_v and (state.square is not None) == has_s


def test_schedule_is_called_with_pre_increment_count():
  params, grads = _problem(6)
  seen = lambda count: 1.0 + count  # step k (from 0) is scaled by 1 + k
  _, updates = jax.jit(lambda p, g: _trajectory(bnjax.sgd(seen), p, g))(params, grads)
  scale = 1.0 + np.arange(STEPS)
  np.testing.assert_allclose(updates['b'], -scale[:, None] * grads['b'], rtol=1e-6)

  schedule = bnjax.inverse_time_decay(0.5, 1.0, 2)  # 0.5, 0.5, 0.25, 0.25, 1/6, 1/6
  _, updates = jax.jit(lambda p, g: _trajectory(bnjax.sgd(schedule), p, g))(params, grads)
  rates = 0.5 / (1.0 + np.arange(STEPS) // 2)
  np.testing.assert_allclose(updates['w'], -rates[:, None, None] * grads['w'], rtol=1e-6)

  ours, _ = jax.jit(lambda p, g: _trajectory(bnjax.adam(schedule), p, g))(params, grads)
  theirs, _ = jax.jit(lambda p, g: _trajectory(optax.adam(schedule), p, g))(params, grads)
  chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6)


@jax.jit
@chex.assert_max_traces(n=1)
def _sweep(params, grads, lr, beta1, beta2, eps, family_index):
  one = lambda *hp: _trajectory(
    bnjax.optimizer(hp[0], hp[4], beta1=hp[1], beta2=hp[2], eps=hp[3]), params, grads
  )[0]
  return jax.vmap(one)(lr, beta1, beta2, eps, family_index)


def test_vmap_over_hyperparameters_and_family_compiles_once():
  params, grads = _problem(7, grad_scale=0.3)
  rng = np.random.default_rng(8)
  for _ in range(2):  # A second sweep with new values reuses the compiled program.
    trials = 8
    hp = {
      'lr': rng.uniform(0.01, 0.5, trials),
      'beta1': rng.uniform(0.0, 0.95, trials),
      'beta2': rng.uniform(0.8, 0.999, trials),
      'eps': 10.0 ** rng.uniform(-8, -2, trials),
    }
    hp = {k: v.astype(np.float32) for k, v in hp.items()}
    family_index = np.arange(trials, dtype=np.int32) % len(FAMILIES)
    got = _sweep(params, grads, hp['lr'], hp['beta1'], hp['beta2'], hp['eps'], family_index)
    for i in range(trials):
      family = FAMILIES[family_index[i]]
      args = [float(hp[k][i]) for k in ('lr', 'beta1', 'beta2', 'eps')]
      loop, _ = _run_named(params, grads, *args, family=family)
      # A vmap of 8 against one named call: other shapes and programs, so
      # elementwise float32 rounding over 6 steps, not bitwise.
      chex.assert_trees_all_close(
        jax.tree.map(lambda a, i=i: a[i], got), loop, rtol=1e-5, atol=1e-6
      )
      expect = _notes_reference(family, params, grads, *args)
      chex.assert_trees_all_close(
        jax.tree.map(lambda a, i=i: a[i], got), expect, rtol=1e-4, atol=1e-5
      )


@pytest.mark.parametrize('family', ['nadam', 'SGD', ''])
def test_unknown_string_family_raises(family):
  with pytest.raises(ValueError, match='optimizer got'):
    bnjax.optimizer(0.1, family)

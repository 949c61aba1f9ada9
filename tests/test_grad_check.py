"""Tests for bnjax.grad_check: it passes correct gradients and catches planted bugs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnjax
from bnjax.gradient_check import grad_check

BATCH, IN, HIDDEN, CLASSES = 8, 5, (4, 3), 3


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(1.0, 2.0, size=(BATCH, IN)).astype(np.float32)
  y = rng.integers(0, CLASSES, size=BATCH).astype(np.int32)
  return x, y


def _random_like(tree, rng):
  """Values for a tree of shapes: a generic point to check at, not the 1/0 init of BN."""

  def value(path, leaf):
    name = path[-1].key
    if name == 'w':
      return (rng.normal(size=leaf.shape) / np.sqrt(leaf.shape[0])).astype(leaf.dtype)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(leaf.dtype)
    return (0.3 * rng.normal(size=leaf.shape)).astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(value, tree)


def _l2_float64(params, l2, m):
  """The notes' L2 term, computed in the dtype of the weights (float64 inside grad_check)."""
  return l2 / (2.0 * m) * sum(jnp.sum(jnp.square(w)) for w in bnjax.weight_matrices(params))


def _mlp_cost(activation, placement, l2_penalty=_l2_float64):
  # Jitted: grad_check differentiates fn eagerly, which is slow op by op.
  @jax.jit
  def cost(params, state, x, y):
    logits, _ = bnjax.mlp_apply(
      params, state, x, training=True, activation=activation, bn_placement=placement
    )
    data = jnp.mean(bnjax.softmax_cross_entropy(logits, y))
    return data + l2_penalty(params, 0.1, x.shape[0])

  return cost


def _mlp(placement, seed=0):
  # The structure mlp_init gives (eval_shape: no compile), with random values.
  params, state = jax.eval_shape(
    lambda key: bnjax.mlp_init(key, IN, HIDDEN, CLASSES, batch_norm=True, bn_placement=placement),
    jax.random.key(0),
  )
  assert all('bn' in layer for layer in params['layers'])
  assert all(('b' in layer) == (placement == 'after') for layer in params['layers'])
  rng = np.random.default_rng(seed)
  return _random_like(params, rng), _random_like(state, rng)


@pytest.mark.parametrize('activation, bound', [('tanh', 1e-6), ('relu', 1e-5)])
@pytest.mark.parametrize('placement', ['before', 'after'])
def test_bn_mlp_gradients_pass(activation, bound, placement):
  params, state = _mlp(placement)
  x, y = _data()
  difference = grad_check(_mlp_cost(activation, placement), params, state, x, y)
  assert isinstance(difference, float)
  assert 0.0 <= difference < bound


def test_bn_mlp_gradients_pass_with_bnjax_l2_penalty():
  params, state = _mlp('before')
  x, y = _data()
  cost = _mlp_cost('tanh', 'before', l2_penalty=bnjax.l2_penalty)
  assert grad_check(cost, params, state, x, y) < 1e-6


def test_quadratic():
  w = {'a': np.linspace(-1.0, 2.0, 7).astype(np.float32), 'b': np.array([[3.0, -0.5]])}
  # Two-sided differences are exact for a quadratic; a larger eps keeps rounding out of it.
  difference = grad_check(lambda p: sum(jnp.sum(v**2) for v in jax.tree.leaves(p)), w, eps=1e-3)
  assert difference < 1e-9


def _scaled_gradient(factor):
  """Identity forward whose backward multiplies the cotangent by `factor`."""

  @jax.custom_vjp
  def f(x):
    return x

  f.defvjp(lambda x: (x, None), lambda _, g: (factor * g,))
  return f


def test_catches_a_wrong_custom_gradient():
  rng = np.random.default_rng(2)
  params = {'w': rng.normal(size=(3, 4)).astype(np.float32), 'b': rng.normal(size=4)}
  cost = lambda p: jnp.sum(jnp.sin(p['w']) * jnp.arange(12.0).reshape(3, 4)) + jnp.sum(p['b'] ** 3)
  wrong = _scaled_gradient(1.1)
  difference = grad_check(jax.jit(lambda p: wrong(cost(p))), params)
  # ||0.1 g|| / (||g|| + ||1.1 g||) = 0.1 / 2.1.
  assert difference > 1e-3
  assert difference == pytest.approx(0.1 / 2.1, rel=1e-5)
  # The same wrapper with the right factor passes: the difference is the planted bug.
  right = _scaled_gradient(1.0)
  assert grad_check(jax.jit(lambda p: right(cost(p))), params) < 1e-8


def _bn_without_statistics_gradient(params, x, eps=1e-5):
  """A classic BN backward bug: treating the batch mean and variance as constants."""
  mean = jax.lax.stop_gradient(jnp.mean(x, axis=0))
  var = jax.lax.stop_gradient(jnp.var(x, axis=0))
  return params['scale'] * (x - mean) / jnp.sqrt(var + eps) + params['offset']


def test_catches_a_broken_batch_norm_backward():
  x, y = _data(5)
  rng = np.random.default_rng(6)
  params = {
    'w': rng.normal(size=(IN, 4)).astype(np.float32),
    'bn': {
      'scale': rng.uniform(0.5, 2, 4).astype(np.float32),
      'offset': rng.normal(size=4).astype(np.float32),
    },
    'out': rng.normal(size=(4, CLASSES)).astype(np.float32),
  }

  def cost(bn, params, x, y):
    h = jnp.tanh(bn(params['bn'], x @ params['w']))
    return jnp.mean(bnjax.softmax_cross_entropy(h @ params['out'], y))

  def correct_bn(bn_params, z):
    _, state = bnjax.bn_init(4)
    return bnjax.batch_norm(bn_params, state, z, training=True)[0]

  correct = jax.jit(lambda p, x, y: cost(correct_bn, p, x, y))
  assert grad_check(correct, params, x, y) < 1e-6
  broken = grad_check(
    jax.jit(lambda p, x, y: cost(_bn_without_statistics_gradient, p, x, y)), params, x, y
  )
  assert broken > 1e-3

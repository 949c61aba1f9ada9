"""Tests for bnjax.stable_random: draws that do not depend on how far an array is padded."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bnjax.nn import stable_random

DRAWS = {'normal': stable_random.normal, 'uniform': stable_random.uniform}
BIG = (7, 9)
BLOCKS = [(1, 9), (7, 1), (3, 5)]


@functools.cache
def _jitted(shape):
  """Both draws of one shape in one compiled program."""
  return jax.jit(lambda key: {name: draw(key, shape) for name, draw in DRAWS.items()})


def test_leading_block_equals_smaller_draw():
  # Exact across shapes, on any machine: threefry is integer arithmetic and the
  # normal/uniform transforms are elementwise, with no sum whose order could
  # depend on the shape. The search relies on it: padding never moves a draw.
  key = jax.random.key(42)
  big = _jitted(BIG)(key)
  for r, c in BLOCKS:
    small = _jitted((r, c))(key)
    for name in DRAWS:
      assert small[name].shape == (r, c)
      np.testing.assert_array_equal(np.asarray(big[name])[:r, :c], small[name])


def test_normals_are_each_streams_own_draw():
  # One draw as wide as the widest, cut: by the leading-block property, the
  # numbers each `normal(fold_in(key, stream), shape)` gives on its own.
  key = jax.random.key(5)
  streams, shapes = (0, 1, 2**31 - 1), [(3, 9), (9, 9), (9, 2)]
  drawn = jax.jit(lambda key: stable_random.normals(key, streams, shapes))(key)
  for stream, shape, got in zip(streams, shapes, drawn, strict=True):
    want = _jitted(shape)(jax.random.fold_in(key, stream))['normal']
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize('name', DRAWS)
def test_draws_differ_across_keys_rows_and_columns(name):
  a = np.asarray(_jitted(BIG)(jax.random.key(0))[name])
  b = np.asarray(_jitted(BIG)(jax.random.key(1))[name])
  assert not np.any(a == b)
  # No two rows or columns repeat each other (the per-row fold_in keys are distinct).
  assert len({row.tobytes() for row in a}) == BIG[0]
  assert len({col.tobytes() for col in a.T}) == BIG[1]
  assert len(np.unique(a)) == a.size


def test_normal_statistics():
  x = np.asarray(_jitted((400, 500))(jax.random.key(3))['normal'], np.float64)
  assert x.dtype == np.float64 and np.all(np.isfinite(x))
  n = x.size
  assert abs(x.mean()) < 5 / np.sqrt(n)
  assert abs(x.std() - 1.0) < 5 / np.sqrt(2 * n)
  assert stats.kstest(x.ravel(), 'norm').pvalue > 1e-3
  # Rows are independent streams: neighbouring rows are uncorrelated.
  corr = np.corrcoef(x[:-1].ravel(), x[1:].ravel())[0, 1]
  assert abs(corr) < 5 / np.sqrt(n)


def test_uniform_statistics_and_range():
  x = np.asarray(_jitted((400, 500))(jax.random.key(4))['uniform'])
  assert x.dtype == np.float32
  assert x.min() >= 0.0 and x.max() < 1.0
  n = x.size
  assert abs(x.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n)
  assert abs(x.var() - 1 / 12) < 1e-3
  assert stats.kstest(x.ravel().astype(np.float64), 'uniform').pvalue > 1e-3


def test_dtype_argument():
  x = jax.jit(lambda key: stable_random.normal(key, (2, 3), jnp.bfloat16))(jax.random.key(5))
  assert x.dtype == jnp.bfloat16 and x.shape == (2, 3)


@pytest.mark.parametrize('shape', [(5,), (2, 3, 4)])
def test_rejects_non_matrix_shapes(shape):
  with pytest.raises(ValueError, match='2-D'):
    stable_random.normal(jax.random.key(0), shape)


@functools.cache
def _bernoulli(shape):
  return jax.jit(lambda key, p: stable_random.bernoulli(key, p, shape))


def test_bernoulli_leading_block_equals_smaller_draw():
  # 9 columns: the last hash's lanes are partly padding, and a block of 5
  # columns ends inside a hash.
  key, p = jax.random.key(7), 0.4
  big = np.asarray(_bernoulli(BIG)(key, p))
  for r, c in BLOCKS:
    np.testing.assert_array_equal(big[:r, :c], _bernoulli((r, c))(key, p))


@pytest.mark.parametrize('p', [0.1, 0.5, 0.85])
def test_bernoulli_frequency_and_independence(p):
  shape = (300, 401)
  x = np.asarray(_bernoulli(shape)(jax.random.key(8), p), np.float64)
  n = x.size
  # The kept fraction within 5 binomial standard deviations of p (p is a
  # multiple of 2^-16 to within 1e-5, far inside that).
  assert abs(x.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
  # Lanes of one hash (neighbouring columns) and neighbouring rows are uncorrelated.
  for a, b in [(x[:, :-1], x[:, 1:]), (x[:-1], x[1:])]:
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 5 / np.sqrt(n)
  other = np.asarray(_bernoulli(shape)(jax.random.key(9), p), np.float64)
  assert abs(np.corrcoef(x.ravel(), other.ravel())[0, 1]) < 5 / np.sqrt(n)


def test_bernoulli_extremes_are_exact():
  key = jax.random.key(10)
  assert np.all(_bernoulli((5, 7))(key, 1.0))
  assert not np.any(_bernoulli((5, 7))(key, 0.0))
  # Resolution 2^-16: a quarter step below 1 rounds up to keeping everything.
  assert np.all(_bernoulli((5, 7))(key, 1.0 - 2.0**-18))


def test_bernoulli_rounds_p_to_the_nearest_16_bit_step():
  # A quarter step either side of k / 2^16 gives k's mask exactly; the next
  # step keeps more. 2^20 elements hold about 16 lanes equal to k - 1 and 16
  # equal to k, so flooring or a coarser resolution would change the masks.
  shape, key, k = (1024, 1024), jax.random.key(13), 52429
  at = lambda p: np.asarray(_bernoulli(shape)(key, np.float32(p)))
  mask = at(k / 2**16)
  np.testing.assert_array_equal(at(k / 2**16 - 2.0**-18), mask)
  np.testing.assert_array_equal(at(k / 2**16 + 2.0**-18), mask)
  above = at((k + 1) / 2**16)
  assert np.all(above >= mask) and np.sum(above) > np.sum(mask)


def test_dropout_is_inverted_dropout():
  # Against the formula: each unit is 0 or x / keep_prob, kept with
  # probability keep_prob, so the expected activation is x.
  from bnjax.nn import dropout

  keep_prob, shape = 0.7, (512, 64)
  x = jax.random.normal(jax.random.key(11), shape) + 2.0
  out = np.asarray(jax.jit(dropout)(jax.random.key(12), x, keep_prob))
  kept = out != 0
  np.testing.assert_array_equal(out[kept], (np.asarray(x) / np.float32(keep_prob))[kept])
  assert abs(kept.mean() - keep_prob) < 5 * np.sqrt(keep_prob * (1 - keep_prob) / kept.size)
  np.testing.assert_allclose(out.mean(axis=0), np.asarray(x).mean(axis=0), rtol=0.15)
  np.testing.assert_array_equal(jax.jit(dropout)(jax.random.key(12), x, 1.0), x)

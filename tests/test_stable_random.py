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

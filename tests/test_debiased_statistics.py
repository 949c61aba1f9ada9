"""`debiased_statistics`: the running averages with their start divided out (Adam's correction)."""

import jax.numpy as jnp
import numpy as np
import pytest

from bnjax.nn import batch_norm, batch_statistics, bn_init, debiased_statistics


def weighted_average(batches: np.ndarray, momentum: float) -> np.ndarray:
  """The exponentially weighted average of the batch statistics alone, weights summing to 1."""
  count = len(batches)
  weights = (1 - momentum) * momentum ** np.arange(count - 1, -1, -1, dtype=np.float64)
  return np.tensordot(weights / weights.sum(), batches, axes=1)


@pytest.mark.parametrize('momentum', [0.0, 0.9, 0.99, 0.999])
@pytest.mark.parametrize('count', [1, 3, 40])
def test_it_is_the_weighted_average_of_the_batches_alone(momentum, count):
  rng = np.random.default_rng(count)
  params, state = bn_init(5)
  means, variances = [], []
  for step in range(count):
    x = jnp.asarray(3.0 + step + rng.normal(size=(16, 5)) * (1 + step), jnp.float32)
    mean, var = batch_statistics(x)
    means.append(np.asarray(mean, np.float64))
    variances.append(np.asarray(var, np.float64))
    _, state = batch_norm(params, state, x, training=True, momentum=momentum)
  got = debiased_statistics(state, momentum=momentum, count=count)
  # float32 running averages: the correction divides by 1 - momentum**count
  # (0.001 for one step at 0.999), which scales their rounding by up to 1000.
  tolerance = 1e-6 / (1 - momentum**count)
  np.testing.assert_allclose(
    got['mean'], weighted_average(np.stack(means), momentum), rtol=tolerance, atol=tolerance
  )
  np.testing.assert_allclose(
    got['var'], weighted_average(np.stack(variances), momentum), rtol=tolerance, atol=tolerance
  )


def test_no_updates_and_a_custom_start():
  state = {'mean': jnp.asarray([0.5, -1.0]), 'var': jnp.asarray([2.0, 3.0])}
  same = debiased_statistics(state, momentum=0.9, count=0)
  np.testing.assert_array_equal(same['mean'], state['mean'])
  np.testing.assert_array_equal(same['var'], state['var'])
  start = {'mean': jnp.asarray([1.0, 1.0]), 'var': jnp.asarray([4.0, 4.0])}
  # One update from `start` with batch statistics b: running = 0.9 start + 0.1 b.
  batch = {'mean': np.asarray([2.0, -3.0]), 'var': np.asarray([0.5, 7.0])}
  running = {name: 0.9 * start[name] + 0.1 * batch[name] for name in batch}
  got = debiased_statistics(running, momentum=0.9, count=1, initial=start)
  for name in batch:
    np.testing.assert_allclose(got[name], batch[name], rtol=1e-5)

"""Batch normalization with its running statistics threaded as explicit state.

The notes' formulas, for one feature over a mini-batch of m examples:

    mu = 1/m sum_i z_i                 sigma^2 = 1/m sum_i (z_i - mu)^2
    z_norm = (z - mu) / sqrt(sigma^2 + eps)
    z_tilde = gamma * z_norm + beta     (here: scale * z_norm + offset)

At test time mu and sigma^2 come from exponentially weighted averages kept
during training: `running = momentum * running + (1 - momentum) * batch`
(flax's convention; PyTorch's `momentum=0.1` is our 0.9).
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Params = dict[str, jax.Array]
State = dict[str, jax.Array]


def bn_init(num_features: int, dtype: Any = jnp.float32) -> tuple[Params, State]:
  """Returns `(params, state)` for a batch norm over `num_features` features.

  `params = {'scale': ones[F], 'offset': zeros[F]}` (gamma and beta of the
  notes); `state = {'mean': zeros[F], 'var': ones[F]}`, kept in at least
  float32 because it is an average of many small updates.
  """
  if int(num_features) < 1:
    raise ValueError(f'num_features must be a positive int; got {num_features}.')
  stat_dtype = jnp.promote_types(dtype, jnp.float32)
  params = {'scale': jnp.ones((num_features,), dtype), 'offset': jnp.zeros((num_features,), dtype)}
  state = {
    'mean': jnp.zeros((num_features,), stat_dtype),
    'var': jnp.ones((num_features,), stat_dtype),
  }
  return params, state


def batch_statistics(
  x: jax.Array, *, mask: jax.Array | None = None, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array]:
  """Mean and biased variance of `x` over all axes but the last.

  Two passes in (at least) float32: the one-pass E[x^2] - E[x]^2 form cancels
  catastrophically for inputs like `1000 + 0.01 * noise`.

  Args:
    x: `[batch, ..., F]`.
    mask: optional `[batch]` bool; False rows are left out (padding).
    axis_name: optional named mapped axis to pool the statistics over.

  Returns:
    `(mean, var)`, each `[F]`.
  """
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  axes = tuple(range(x.ndim - 1))
  if mask is None:
    weight = jnp.ones(x.shape[:1] + (1,) * (x.ndim - 1), x.dtype)
  else:
    keep = jnp.asarray(mask, bool).reshape(x.shape[:1] + (1,) * (x.ndim - 1))
    weight = keep.astype(x.dtype)
    # Select, not multiply: 0 * inf is NaN, and padding may hold anything.
    x = jnp.where(keep, x, 0.0)
  count = jnp.sum(weight) * (x[0].size // x.shape[-1])

  def pooled(total):
    return total if axis_name is None else lax.psum(total, axis_name)

  # A batch whose rows are all masked has no statistics; dividing by one
  # keeps the result finite (mean 0, var 0) instead of NaN.
  count = jnp.maximum(pooled(count), 1.0)
  mean = pooled(jnp.sum(weight * x, axis=axes)) / count
  var = pooled(jnp.sum(weight * jnp.square(x - mean), axis=axes)) / count
  return mean, var


def batch_norm(
  params: Params,
  state: State,
  x: jax.Array,
  *,
  training: bool,
  momentum: jax.typing.ArrayLike = 0.99,
  eps: jax.typing.ArrayLike = 1e-5,
  mask: jax.Array | None = None,
  axis_name: str | None = None,
) -> tuple[jax.Array, State]:
  """Normalizes `x` per feature and returns `(y, new_state)`.

  Args:
    params: `{'scale': [F], 'offset': [F]}`.
    state: `{'mean': [F], 'var': [F]}` running averages.
    x: `[batch, F]` or `[batch, ..., F]`; statistics over all axes but the last.
    training: mini-batch statistics and updated running averages if True;
      the running averages and an unchanged state if False.
    momentum: weight of the old running average (traceable).
    eps: added to the variance before the square root (traceable).
    mask: optional `[batch]` bool; False rows stay out of the statistics.
    axis_name: pool statistics over this named mapped axis (data parallel).
      Without it an outer `vmap` over trials gives per-trial statistics.

  Returns:
    `y` with the shape and dtype of `x`, and the new state.
  """
  if training:
    mean, var = batch_statistics(x, mask=mask, axis_name=axis_name)
    if mask is not None:  # A batch with no real rows leaves the averages alone.
      rows = jnp.sum(jnp.asarray(mask, jnp.float32))
      rows = rows if axis_name is None else lax.psum(rows, axis_name)
      momentum = jnp.where(rows > 0, momentum, 1.0)
    new_state = {
      'mean': (momentum * state['mean'] + (1 - momentum) * mean).astype(state['mean'].dtype),
      'var': (momentum * state['var'] + (1 - momentum) * var).astype(state['var'].dtype),
    }
  else:
    mean, var = state['mean'], state['var']
    new_state = state
  x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  x_norm = (x32 - mean) * lax.rsqrt(var + eps)
  y = params['scale'] * x_norm + params['offset']
  return y.astype(x.dtype), new_state

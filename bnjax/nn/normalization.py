"""Batch normalization with its running statistics threaded as explicit state.

The notes' formulas, for one feature over a mini-batch of m examples:

    mu = 1/m sum_i z_i                 sigma^2 = 1/m sum_i (z_i - mu)^2
    z_norm = (z - mu) / sqrt(sigma^2 + eps)
    z_tilde = gamma * z_norm + beta     (here: scale * z_norm + offset)

At test time mu and sigma^2 come from exponentially weighted averages kept
during training: `running = momentum * running + (1 - momentum) * batch`
(flax's convention; PyTorch's `momentum=0.1` is our 0.9).

Training mode's derivative is written out in closed form
(`_normalize_batch_jvp`), as PyTorch's and cuDNN's BN backward kernels are,
rather than JAX's term-by-term derivative of the formulas above: the same
gradients in fewer passes over the batch. Forward mode, reverse mode and
their compositions all work. Masked or pooled statistics (`mask`,
`axis_name`) keep JAX's own derivative.

Mistakes fail at trace time with the shapes in the message: an `x` whose last
axis is not the features (no silent broadcasting), a 1-D or integer `x`, a
`mask` that is not `[batch]`, a `training` that is not a Python bool. Values
are checked only where they are concrete (a Python or NumPy `momentum` of 2,
an `eps` of -1); traced values pass unchecked, so jitted code pays nothing.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bnjax import registry

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


def static_flag(value: Any, *, name: str, where: str) -> bool:
  """`value` as a Python bool, or a `TypeError` that says how to make it static.

  A flag that picks a code path is read in Python while tracing, so it cannot
  be an array: under `jit` or `vmap` an array is a tracer with no value yet.
  """
  if isinstance(value, bool | np.bool_):
    return bool(value)
  fix = (
    f'pass a Python bool (under jax.jit: static_argnames=({name!r},)), or pick '
    f'between a {name}=True and a {name}=False call with jax.lax.cond'
  )
  if isinstance(value, jax.core.Tracer):
    raise TypeError(f'{where}: {name} is traced, but it picks a code path; {fix}')
  raise TypeError(f'{where}: {name} must be a Python bool; got {_describe(value)}; {fix}')


def _describe(value: Any) -> str:
  """A one-line description of `value` for an error message."""
  if hasattr(value, 'shape') and hasattr(value, 'dtype'):
    return f'{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}'
  text = repr(value)
  return ' '.join(text.split()) if len(text) < 60 else type(value).__name__


def _check_batch(x: jax.Array, mask: Any, where: str) -> None:
  """Static shape checks: `x` is `[batch, ..., F]` and `mask` is `[batch]`."""
  if x.ndim < 2:
    raise ValueError(
      f'{where} needs [batch, ..., features]; got shape {x.shape}: add the missing axis, '
      'e.g. x[:, None] for one feature'
    )
  if mask is not None and jnp.shape(mask) != x.shape[:1]:
    raise ValueError(
      f'{where}: mask has shape {jnp.shape(mask)} but x has shape {x.shape}; '
      f'mask must be [batch] = {x.shape[:1]}'
    )


def _check_features(params: Params, state: State, x: jax.Array) -> None:
  """Static shape checks: every parameter and statistic is `[F]`, and so is `x`'s last axis."""
  features = jnp.shape(params['scale'])
  for where, value in (
    ("params['offset']", params['offset']),
    ("state['mean']", state['mean']),
    ("state['var']", state['var']),
  ):
    if jnp.shape(value) != features:
      raise ValueError(
        f"batch_norm: {where} has shape {jnp.shape(value)} but params['scale'] has shape "
        f'{features}; build params and state together with bn_init(num_features)'
      )
  if x.shape[-1:] != features:
    raise ValueError(
      f"batch_norm: x has shape {x.shape} but params['scale'] has shape {features}; x must be "
      f'[batch, ..., {features[0] if features else "F"}] with the features last, or build '
      'params with bn_init(x.shape[-1])'
    )


def _check_concrete(name: str, value: Any, admits: Any, rule: str) -> None:
  """Raises if a concrete `value` (any element of it) breaks `rule`; tracers pass."""
  if isinstance(value, jax.core.Tracer):
    return
  try:
    values = np.asarray(value, np.float64)
  except (TypeError, ValueError):
    raise TypeError(f'batch_norm {name} must be a number; got {_describe(value)}') from None
  with np.errstate(invalid='ignore'):
    bad = ~admits(values)
  if np.any(bad):
    raise registry.HyperparameterError(
      f'batch_norm {name} must be {rule}; got {values[bad].ravel()[0].item()!r}'
    )


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

  Raises:
    ValueError: at trace time, if `x` has fewer than 2 axes or `mask` is not `[batch]`.
  """
  x = jnp.asarray(x)
  _check_batch(x, mask, 'batch_statistics')
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

  `training` and `axis_name` pick code paths and must be Python values: under
  `jax.jit` mark them static (`static_argnames=('training', 'axis_name')`); to
  switch mode on a traced flag, call twice inside `jax.lax.cond`. Everything
  else traces, so `momentum` and `eps` may vary per trial under `vmap`.

  Args:
    params: `{'scale': [F], 'offset': [F]}`.
    state: `{'mean': [F], 'var': [F]}` running averages.
    x: floating `[batch, F]` or `[batch, ..., F]`; statistics over all axes but
      the last, which must have the F features of `params`.
    training: Python bool (static). Mini-batch statistics and updated running
      averages if True; the running averages and an unchanged state if False.
    momentum: weight of the old running average, in [0, 1) (traceable;
      checked when concrete).
    eps: added to the variance before the square root, > 0 (traceable;
      checked when concrete).
    mask: optional `[batch]` bool; False rows stay out of the statistics.
    axis_name: pool statistics over this named mapped axis (data parallel).
      Without it an outer `vmap` over trials gives per-trial statistics.

  Returns:
    `y` with the shape and dtype of `x`, and the new state.

  Raises:
    ValueError: at trace time, for shapes that do not fit together.
    TypeError: at trace time, for a non-floating `x` or a `training` that is
      not a Python bool.
    HyperparameterError: for a concrete `momentum` outside [0, 1) or `eps` <= 0.
  """
  training = static_flag(training, name='training', where='batch_norm')
  x = jnp.asarray(x)
  _check_batch(x, mask, 'batch_norm')
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
      f'batch_norm needs floating-point x; got dtype {x.dtype} (shape {x.shape}): '
      'cast it first, e.g. x.astype(jnp.float32)'
    )
  _check_features(params, state, x)
  _check_concrete('momentum', momentum, registry.REGISTRY['bn_momentum'].admits, 'in [0, 1)')
  _check_concrete('eps', eps, lambda v: np.isfinite(v) & (v > 0), 'a finite number > 0')
  with jax.named_scope('batch_norm'):  # names its ops in profiles (`benchmarks/profile_step.py`)
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    scale, offset = params['scale'], params['offset']
    if not training:
      y = scale * _standardize(x32, state['mean'], lax.rsqrt(state['var'] + eps)) + offset
      return y.astype(x.dtype), state
    if mask is None and axis_name is None:  # with a derivative of its own, in closed form
      y, mean, var = _normalize_batch(x32, scale, offset, eps)
    else:
      mean, var = batch_statistics(x, mask=mask, axis_name=axis_name)
      if mask is not None:  # A batch with no real rows leaves the averages alone.
        rows = jnp.sum(jnp.asarray(mask, jnp.float32))
        rows = rows if axis_name is None else lax.psum(rows, axis_name)
        momentum = jnp.where(rows > 0, momentum, 1.0)
      y = scale * _standardize(x32, mean, lax.rsqrt(var + eps)) + offset
    new_state = {
      'mean': (momentum * state['mean'] + (1 - momentum) * mean).astype(state['mean'].dtype),
      'var': (momentum * state['var'] + (1 - momentum) * var).astype(state['var'].dtype),
    }
    return y.astype(x.dtype), new_state


def _standardize(x: jax.Array, mean: jax.Array, inv_std: jax.Array) -> jax.Array:
  return (x - mean) * inv_std


@jax.custom_jvp
def _normalize_batch(x, scale, offset, eps):
  """Training-mode BN of float32 `x [batch, ..., F]` over all but its last axis.

  Returns `(y, mean, var)`: the output and the batch statistics for the
  running averages. The values are `batch_norm`'s own; only the derivative
  is written out (`_normalize_batch_jvp`).
  """
  mean, var = batch_statistics(x)
  return scale * _standardize(x, mean, lax.rsqrt(var + eps)) + offset, mean, var


@_normalize_batch.defjvp
def _normalize_batch_jvp(primals, tangents):
  """The derivative in closed form, arranged so that its transpose is cheap.

  With `x_norm = (x - mean) * inv_std` and per-feature sums over the batch,

      dy = scale * inv_std * (dx - sum(dx) / m - x_norm * sum(x_norm * dx) / m)
           - scale * inv_std**2 / 2 * x_norm * deps + dscale * x_norm + doffset,
      dmean = sum(dx) / m,    dvar = 2 / inv_std * sum(x_norm * dx) / m.

  Reverse mode transposes this (JAX does), and every per-feature factor
  multiplies a sum after it is taken, so the transpose's only passes over
  the batch are `sum(ct)` and `sum(x_norm * ct)`: the same two sums that are
  the offset's and the scale's gradients, which XLA computes once. JAX's
  derivative of the plain formula (the two-pass variance differentiated term
  by term) took about a dozen passes per layer instead; this made a 3 x 256
  chunk's step 6 to 8% faster on the 2-core Intel Xeon, two chunks at once
  (docs/performance.md, "BN's derivative in closed form"). It is checked
  against that derivative, forward and reverse, in `tests/test_batch_norm.py`.
  """
  x, scale, offset, eps = primals
  dx, dscale, doffset, deps = tangents
  mean, var = batch_statistics(x)
  inv_std = lax.rsqrt(var + eps)
  x_norm = _standardize(x, mean, inv_std)
  y = scale * x_norm + offset
  axes, count = _batch_axes(x)
  dx_sum = jnp.sum(dx, axes)
  projection = jnp.sum(x_norm * dx, axes)
  gain = scale * inv_std  # [F]: multiplies the sums only after they are taken
  dy = (
    gain * dx
    - (gain / count) * dx_sum
    - x_norm * ((gain / count) * projection + (0.5 * gain * inv_std) * deps)
    + dscale * x_norm
    + doffset
  )
  return (y, mean, var), (dy, dx_sum / count, (2 / (count * inv_std)) * projection)


def _batch_axes(x: jax.Array) -> tuple[tuple[int, ...], int]:
  """The axes statistics sum over (all but the features) and how many values each sum holds."""
  return tuple(range(x.ndim - 1)), x.size // x.shape[-1]


def debiased_statistics(
  state: State,
  *,
  momentum: jax.typing.ArrayLike,
  count: jax.typing.ArrayLike,
  initial: State | None = None,
) -> State:
  """The running averages with their starting values divided out, as Adam corrects its moments.

  After `count` training updates `running = momentum * running + (1 - momentum) * batch`
  from `initial`, the running average is

      momentum**count * initial + (1 - momentum) * sum_i momentum**(count - 1 - i) * batch_i,

  so after a short run (momentum 0.99, a few hundred steps) it still leans on
  `initial` (mean 0, var 1). This returns `(running - momentum**count *
  initial) / (1 - momentum**count)`: the exponentially weighted average of the
  batch statistics alone, whose weights sum to one. Use it in place of `state`
  at evaluation; training is unchanged. `count = 0` returns `state`.

  Args:
    state: `{'mean': [F], 'var': [F]}` running averages after `count` updates.
    momentum: the momentum they were updated with (traceable).
    count: updates so far (traceable): optimizer steps, one BN update each.
    initial: the averages before the first update; default `bn_init`'s (0, 1).

  Returns:
    `{'mean', 'var'}` of the same shapes and dtypes.
  """
  start = initial or {'mean': jnp.zeros_like(state['mean']), 'var': jnp.ones_like(state['var'])}
  momentum = jnp.asarray(momentum, jnp.float32)
  weight = momentum ** jnp.asarray(count, jnp.float32)  # what the start still weighs
  fresh = jnp.asarray(count) > 0

  def correct(running, first):
    debiased = (running - weight * first) / jnp.where(fresh, 1 - weight, 1.0)
    return jnp.where(fresh, debiased, running).astype(running.dtype)

  return {name: correct(state[name], start[name]) for name in ('mean', 'var')}

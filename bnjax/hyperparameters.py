"""The traced hyperparameters as the arrays `train` takes: `hparams`.

Every searched number or category reaches the training loop as an array, so
one compiled program serves every value (and `vmap` maps over them). This
module encodes values into that form, checking concrete ones against
`bnjax.registry`; tracers pass through, since they have no value yet.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnjax import registry

# The hyperparameters `train` receives as arrays (`bnjax.registry`: role 'traced').
TRACED = registry.TRACED
# Beside them, the architecture masks: `widths [layers]` and `depth` (the MLP's
# units per layer and layers, or the CNN's channels per block and blocks).
MASKS = ('widths', 'depth')


def _concrete(value: Any) -> bool:
  return not isinstance(value, jax.core.Tracer)


def _encode(name: str, value: Any) -> jax.Array:
  """One traced hyperparameter as an array: categories become int32 indices.

  Concrete values are checked against the registry (every element of an
  array); traced values pass through unchecked, since they have no value yet.
  """
  entry = registry.REGISTRY[name]
  if entry.kind == 'choice':
    if _concrete(value):
      value = np.asarray(value)
      if value.dtype.kind in 'USO':  # names: 'adam', or one per trial
        value = np.vectorize(entry.index, otypes=[np.int32])(value)
      _check_index(entry, value)
    return jnp.asarray(value, jnp.int32)
  if _concrete(value):
    values = np.asarray(value, np.float64)
    inside = entry.admits(values)
    if not np.all(inside):
      entry.check(float(values[~inside].ravel()[0]))  # raises with the rule in its message
  return jnp.asarray(value, jnp.float32)


def _check_index(entry: registry.Hyperparameter, index: np.ndarray) -> None:
  """A category index must name a choice: JAX would clamp one out of range silently."""
  outside = (
    (index < 0) | (index >= len(entry.choices))
    if index.dtype.kind in 'iu'
    else np.ones(index.shape, bool)
  )
  if np.any(outside):
    raise registry.HyperparameterError(
      f'{entry.name} got index {index[outside].ravel()[0].item()!r}; use a name from '
      f'{entry.choices} or an integer index in 0..{len(entry.choices) - 1}'
    )


def hparams(**values) -> dict:
  """The hyperparameter dict `train` takes: defaults, overridden by `values`.

  Each value may be a scalar, an array with one value per trial (a leading
  trial axis, as the search builds it), or a tracer (inside `vmap`).
  Categorical values may be given by name ('adam', 'inverse_time', 'he') and
  become int32 indices into `bnjax.registry.choices(name)`; an index out of
  range is an error, never clamped. `widths` (`[..., layers]` ints) and
  `depth` turn on architecture masking (for `model='cnn'`, channels per
  block and blocks; the model itself is static, in `TrainConfig`). Concrete
  values are checked against the registry's ranges; everything becomes an
  array, so the dict traces.
  """
  unknown = set(values) - set(TRACED) - set(MASKS)
  if unknown:
    raise registry.HyperparameterError(
      f'unknown hyperparameters {sorted(unknown)}; known: {sorted(TRACED)} plus widths, depth'
    )
  out = {name: _encode(name, values.get(name, registry.DEFAULTS[name])) for name in TRACED}
  for name in MASKS:
    if name in values:
      mask = values[name]
      if _concrete(mask) and np.any(np.asarray(mask) < 1):
        raise registry.HyperparameterError(f'{name} must be >= 1; got {np.asarray(mask)!r}')
      out[name] = jnp.asarray(mask, jnp.int32)
  return out

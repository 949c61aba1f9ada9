"""What a space may name: `bnjax.registry`'s hyperparameters, checked against whole supports.

A space may name any subset of `registry.REGISTRY` (plus per-layer ``hidden_units_K``);
`with_defaults` fills the rest from `registry.DEFAULTS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from bnjax import registry
from bnjax.space._distributions import Choice, Distribution, Fixed, IntLogUniform, IntUniform
from bnjax.space._scalars import SpaceError, count, pack

#: Value of every name a space leaves out (read-only): `bnjax.registry.DEFAULTS`.
DEFAULTS = registry.DEFAULTS


def _as_space_error(check: Any, value: Any) -> Any:
  """`check(value)`, a registry failure raised again as a `SpaceError` with its message."""
  try:
    return check(value)
  except registry.HyperparameterError as e:
    raise SpaceError(str(e)) from None


def hyperparameter(name: Any) -> registry.Hyperparameter:
  """The registry entry for `name`; an unknown name raises `SpaceError`."""
  return _as_space_error(registry.get, name)


def check_entry(name: str, dist: Distribution) -> None:
  """Checks the whole support of `dist` against what `name` allows, as a `SpaceError`."""
  entry = hyperparameter(name)
  if isinstance(dist, Choice | Fixed):
    for v in dist.values if isinstance(dist, Choice) else (dist.value,):
      _as_space_error(entry.check, v)
    return
  if entry.kind in ('choice', 'bool'):
    options = '|'.join(entry.choices) if entry.choices else 'true|false'
    raise SpaceError(f'{name} is categorical; got {dist.to_spec()}; use choice:{options}')
  if entry.kind == 'int' and not isinstance(dist, IntUniform | IntLogUniform):
    raise SpaceError(
      f'{name} takes integers; got {dist.to_spec()}; use int:LOW:HIGH or intlog:LOW:HIGH'
    )
  low, high = dist.low, dist.high  # type: ignore[attr-defined]
  if not (entry.admits(low) and entry.admits(high)):
    raise SpaceError(
      f'{name} must lie in {entry.interval()}; got range '
      f'[{low:g}, {high:g}]; pick bounds inside {entry.interval()}'
    )


def with_defaults(columns: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
  """Returns `columns` plus every missing registry name filled with its `DEFAULTS` value.

  Args:
    columns: name -> array of length `n` (e.g. the output of `Space.sample`).
    n: number of rows.

  Returns:
    A new dict of length-`n` numpy arrays: the given columns first, then the defaults
    in registry order.
  """
  n = count(n, 'n', 0)
  out = {}
  for name, col in columns.items():
    hyperparameter(name)
    arr = np.asarray(col)
    if arr.shape != (n,):
      raise SpaceError(f'column {name!r} has shape {arr.shape}; expected ({n},)')
    out[name] = arr
  for name, value in DEFAULTS.items():
    if name not in out:
      out[name] = pack((value,))[np.zeros(n, dtype=np.intp)]
  return out

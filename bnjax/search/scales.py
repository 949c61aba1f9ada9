"""Where a hyperparameter's values sit on its sampling scale, for the figures.

Which searched names vary, each name's scale and transform (its
distribution's, from `Results.space`; linear without one), positions in
[0, 1], and short labels that keep the digits that tell values apart.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from bnjax.registry import to_python

if TYPE_CHECKING:  # results.py imports the figures, which import this module
  from bnjax.search.results import Results


def varying_names(results: Results) -> tuple[str, ...]:
  """The searched names whose values differ between trials (not fixed, not extra columns)."""
  names = []
  for name in results.searched:
    if name in results.extra_columns or scale_of(results, name) == 'fixed':
      continue
    if not results.rows or any(name not in row for row in results.rows):
      continue
    if len({to_python(row[name]) for row in results.rows}) > 1:
      names.append(name)
  return tuple(names)


def scale_of(results: Results, name: str) -> str:
  """`name`'s sampling scale (`Distribution.scale`); strings and bools are categorical."""
  values = [row[name] for row in results.rows]
  if any(isinstance(v, str | bool | np.str_ | np.bool_) for v in values):
    return 'categorical'
  space = results.space
  return space[name].scale if space is not None and name in space else 'linear'


def to_scale(results: Results, name: str, values) -> np.ndarray:
  """`values` of `name` mapped to its sampling scale by its distribution (`to_scale`)."""
  space = results.space
  dist = space[name] if space is not None and name in space else None
  values = np.asarray(values, dtype=np.float64)
  if not hasattr(dist, 'to_scale'):  # no space, or a Choice of numbers: linear
    return values
  return np.asarray(dist.to_scale(values), np.float64)


def normalize(results: Results, name: str, values, reference=None) -> np.ndarray:
  """Positions of `name`'s `values` in [0, 1] on its sampling scale, spanning `reference`.

  Args:
    results: where `name`'s distribution comes from (`Results.space`).
    name: a hyperparameter name, or a column plotted linearly.
    values: `[n]` values of it.
    reference: the values whose min and max map to 0 and 1 (default `values`);
      a constant axis maps to 0.5. Categories sit at their index among the
      sorted categories.

  Returns:
    `[n]` float positions.
  """
  reference = values if reference is None else reference
  if scale_of(results, name) == 'categorical':
    index = {to_python(c): i for i, c in enumerate(sorted_categories([*reference, *values]))}
    t = np.asarray([index[to_python(v)] for v in values], dtype=np.float64)
    t_ref = np.asarray([index[to_python(v)] for v in reference], dtype=np.float64)
  else:
    t, t_ref = to_scale(results, name, values), to_scale(results, name, reference)
  low, high = np.nanmin(t_ref), np.nanmax(t_ref)
  if not high > low:
    return np.full(t.shape, 0.5)
  return (t - low) / (high - low)


def extremes(results: Results, name: str) -> tuple[str, str]:
  """Real values at the bottom and top of `name`'s parallel-coordinates axis."""
  scale = scale_of(results, name)
  values = results.column(name)
  if scale == 'categorical':
    categories = sorted_categories(values)
    return label(categories[0], scale), label(categories[-1], scale)
  return label(np.min(values), scale), label(np.max(values), scale)


def sorted_categories(values) -> list:
  """The distinct values, sorted (by text where types mix)."""
  unique = {to_python(v): v for v in values}
  try:
    return [unique[key] for key in sorted(unique)]
  except TypeError:  # mixed types: order by text
    return [unique[key] for key in sorted(unique, key=str)]


def label(value, scale: str) -> str:
  """A short label for one value; betas keep the digits that tell them apart."""
  value = to_python(value)
  if isinstance(value, bool | str):
    return str(value).lower() if isinstance(value, bool) else value
  if isinstance(value, int):
    return str(value)
  if not math.isfinite(value):
    return 'nan'
  if scale == 'one_minus_log' and 0 < value < 1:
    digits = math.ceil(-math.log10(1.0 - value) - 1e-9) + 1
    return f'{value:.{digits}f}'.rstrip('0').rstrip('.')
  if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
    return f'{value:.2g}'
  return f'{value:.3g}'


def axis_label(name: str, scale: str, compact: bool = False) -> str:
  """`name` with its scale, as an axis says it (`compact`: in two short lines)."""
  if scale == 'one_minus_log':
    return f'{name}\n(log of 1 - {name})' if compact else f'1 - {name} (log; ticks show {name})'
  if scale == 'log':
    return f'{name}\n(log)' if compact else f'{name} (log)'
  return name

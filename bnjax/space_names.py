"""Canonical hyperparameter names, their rules and `DEFAULTS`, and the scalar-value checks.

Canonical names (a space may name any subset; `with_defaults` fills the rest from `DEFAULTS`):

=============  ======  =======================================  ========
name           kind    allowed                                  default
=============  ======  =======================================  ========
learning_rate  float   (0, inf)                                 1e-3
optimizer      choice  sgd, momentum, rmsprop, adam             adam
beta1          float   [0, 1): momentum beta / Adam beta1       0.9
beta2          float   [0, 1): RMSprop / Adam beta2             0.999
eps            float   (0, inf)                                 1e-8
lr_schedule    choice  constant, inverse_time, exponential      constant
lr_decay       float   [0, 1): inverse_time: lr / (1 + d*epoch);
                       exponential: lr * (1 - d)**epoch         0.0
l2             float   [0, inf)                                 0.0
keep_prob      float   (0, 1]                                   1.0
batch_norm     bool    true, false                              True
bn_momentum    float   [0, 1)                                   0.99
bn_placement   choice  before, after (BN before/after the act.) before
hidden_units   int     [1, inf)                                 256
num_layers     int     [1, inf)                                 3
activation     choice  relu, tanh, sigmoid                      relu
batch_size     int     [1, inf)                                 128
init           choice  he, xavier                               he
=============  ======  =======================================  ========

Per-layer widths: ``hidden_units_1``, ``hidden_units_2``, ... (int, >= 1; layers count from 1)
override ``hidden_units`` for that one layer. They have no default.

This module also holds the small helpers `bnjax.space` shares (`SpaceError`, scalar checks,
packing columns, one value in the spec grammar); `bnjax.space` re-exports the public names.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import numpy as np

Scalar = int | float | str | bool


class SpaceError(ValueError):
  """A malformed distribution, space, spec string or sampling request (one-line message)."""


# ---------------------------------------------------------------------------------- helpers


def _py(x: Any) -> Any:
  return x.item() if isinstance(x, np.generic) else x


def _real(x: Any, what: str) -> float:
  x = _py(x)
  if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
    raise SpaceError(f'{what} must be a finite number; got {x!r}')
  return float(x)


def _integer(x: Any, what: str) -> int:
  x = _py(x)
  if isinstance(x, float) and x.is_integer():  # JSON and "1e2" write integral bounds as floats
    x = int(x)
  if isinstance(x, bool) or not isinstance(x, int):
    raise SpaceError(f'{what} must be an integer; got {x!r}')
  return x


def _scalar(x: Any, what: str) -> Scalar:
  x = _py(x)
  if isinstance(x, bool | str | int) or (isinstance(x, float) and math.isfinite(x)):
    return x
  raise SpaceError(f'{what} must be a finite number, a string or a bool; got {x!r}')


def _type_of(v: Scalar) -> str:
  return 'bool' if isinstance(v, bool) else 'str' if isinstance(v, str) else 'number'


def _to_array(values: Iterable[Scalar]) -> np.ndarray:
  """Packs scalars as bool, str, int64 or float64 (the dtypes `sample` promises)."""
  vals = list(values)
  if all(isinstance(v, bool) for v in vals):
    return np.asarray(vals, dtype=bool)
  if all(isinstance(v, str) for v in vals):
    return np.asarray(vals, dtype=np.str_)
  if all(isinstance(v, int) for v in vals):
    return np.asarray(vals, dtype=np.int64)
  return np.asarray(vals, dtype=np.float64)


def _count(n: Any, what: str, minimum: int) -> int:
  n = _py(n)
  if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
    raise SpaceError(f'{what} must be an integer >= {minimum}; got {n!r}')
  return n


def _fmt(v: Scalar) -> str:
  """Writes a value in the spec grammar so that it parses back to the same value."""
  if isinstance(v, bool):
    return 'true' if v else 'false'
  if isinstance(v, float):
    return repr(v)  # repr round-trips exactly and always shows '.', 'e' (never int-like)
  if isinstance(v, str) and (
    not v or v != v.strip() or set(v) & set(',=:|') or not isinstance(_parse_scalar(v), str)
  ):
    raise SpaceError(f'string {v!r} cannot be written in the spec grammar; use to_json()')
  return str(v)


def _parse_scalar(s: str) -> Scalar:
  """'true'/'false' -> bool, int-like -> int, float-like -> float, else the string."""
  if s.lower() in ('true', 'false'):
    return s.lower() == 'true'
  if re.fullmatch(r'[+-]?\d+', s):
    return int(s)
  try:
    return float(s)
  except ValueError:
    return s


# --------------------------------------------------------------------------- canonical names


class _Rule(NamedTuple):
  kind: str  # 'float' | 'int' | 'choice' | 'bool'
  low: float = -math.inf
  high: float = math.inf
  ends: str = '[]'  # '[' / ']' include that bound, '(' / ')' exclude it
  choices: tuple[str, ...] = ()

  def interval(self) -> str:
    return f'{self.ends[0]}{self.low:g}, {self.high:g}{self.ends[1]}'

  def admits(self, x: float) -> bool:
    above = x >= self.low if self.ends[0] == '[' else x > self.low
    return above and (x <= self.high if self.ends[1] == ']' else x < self.high)


_POS, _NONNEG, _UNIT = (
  _Rule('float', 0, math.inf, '()'),
  _Rule('float', 0, math.inf, '[)'),
  _Rule('float', 0, 1, '[)'),
)
_COUNT = _Rule('int', 1, math.inf, '[)')
_RULES: dict[str, _Rule] = {
  'learning_rate': _POS,
  'optimizer': _Rule('choice', choices=('sgd', 'momentum', 'rmsprop', 'adam')),
  'beta1': _UNIT,
  'beta2': _UNIT,
  'eps': _POS,
  'lr_schedule': _Rule('choice', choices=('constant', 'inverse_time', 'exponential')),
  'lr_decay': _UNIT,  # exponential: lr * (1 - lr_decay)**epoch, so 1 would zero the rate
  'l2': _NONNEG,
  'keep_prob': _Rule('float', 0, 1, '(]'),
  'batch_norm': _Rule('bool'),
  'bn_momentum': _UNIT,
  'bn_placement': _Rule('choice', choices=('before', 'after')),
  'hidden_units': _COUNT,
  'num_layers': _COUNT,
  'activation': _Rule('choice', choices=('relu', 'tanh', 'sigmoid')),
  'batch_size': _COUNT,
  'init': _Rule('choice', choices=('he', 'xavier')),
}

#: Value of every canonical name a space leaves out (read-only by convention).
DEFAULTS: dict[str, Scalar] = {
  'learning_rate': 1e-3,
  'optimizer': 'adam',
  'beta1': 0.9,
  'beta2': 0.999,
  'eps': 1e-8,
  'lr_schedule': 'constant',
  'lr_decay': 0.0,
  'l2': 0.0,
  'keep_prob': 1.0,
  'batch_norm': True,
  'bn_momentum': 0.99,
  'bn_placement': 'before',
  'hidden_units': 256,
  'num_layers': 3,
  'activation': 'relu',
  'batch_size': 128,
  'init': 'he',
}
_PER_LAYER = re.compile(r'hidden_units_[1-9][0-9]*')


def _rule_for(name: Any) -> _Rule:
  if isinstance(name, str) and name in _RULES:
    return _RULES[name]
  if isinstance(name, str) and _PER_LAYER.fullmatch(name):
    return _COUNT
  close = difflib.get_close_matches(str(name), list(_RULES), n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  raise SpaceError(
    f'unknown hyperparameter {name!r}{hint}; known names: '
    f'{", ".join(_RULES)}, hidden_units_1, hidden_units_2, ...'
  )


def _check_value(name: str, rule: _Rule, v: Scalar) -> None:
  if rule.kind == 'choice':
    if not (isinstance(v, str) and v in rule.choices):
      close = difflib.get_close_matches(str(v), rule.choices, n=1)
      hint = f' (did you mean {close[0]!r}?)' if close else ''
      raise SpaceError(f'{name} got {v!r}{hint}; choose from {", ".join(map(repr, rule.choices))}')
  elif rule.kind == 'bool':
    if not isinstance(v, bool):
      raise SpaceError(f'{name} takes true or false; got {v!r}')
  elif isinstance(v, bool | str) or (rule.kind == 'int' and not isinstance(v, int)):
    raise SpaceError(
      f'{name} takes {"an integer" if rule.kind == "int" else "a number"}; got {v!r}'
    )
  elif not rule.admits(v):
    raise SpaceError(f'{name} must lie in {rule.interval()}; got {v!r}')


def with_defaults(columns: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
  """Returns `columns` plus every missing canonical name filled with its `DEFAULTS` value.

  Args:
    columns: name -> array of length `n` (e.g. the output of `Space.sample`).
    n: number of rows.

  Returns:
    A new dict of length-`n` numpy arrays: the given columns first, then the defaults.
  """
  n = _count(n, 'n', 0)
  out = {}
  for name, col in columns.items():
    _rule_for(name)
    arr = np.asarray(col)
    if arr.shape != (n,):
      raise SpaceError(f'column {name!r} has shape {arr.shape}; expected ({n},)')
    out[name] = arr
  for name, value in DEFAULTS.items():
    if name not in out:
      out[name] = _to_array((value,))[np.zeros(n, dtype=np.intp)]
  return out

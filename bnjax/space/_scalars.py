"""Scalar helpers the space modules share: checks, column packing, one spec value."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from bnjax import registry
from bnjax.registry import Scalar


class SpaceError(registry.HyperparameterError):
  """A malformed distribution, space, spec string or sampling request (one-line message)."""


def real(x: Any, what: str) -> float:
  """`x` as a finite float, or a `SpaceError` naming `what`."""
  x = registry.to_python(x)
  try:
    finite = not isinstance(x, bool) and isinstance(x, int | float) and math.isfinite(x)
  except OverflowError:  # an int past the float range
    finite = False
  if not finite:
    raise SpaceError(f'{what} must be a finite number; got {x!r}')
  return float(x)


def integer(x: Any, what: str) -> int:
  """`x` as an int (integral floats too: JSON and "1e2" write them so)."""
  x = registry.to_python(x)
  if isinstance(x, float) and x.is_integer():
    x = int(x)
  if isinstance(x, bool) or not isinstance(x, int):
    raise SpaceError(f'{what} must be an integer; got {x!r}')
  return x


def count(n: Any, what: str, minimum: int) -> int:
  """`n` as an int >= `minimum` (a bool or an integral float is refused)."""
  n = registry.to_python(n)
  if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
    raise SpaceError(f'{what} must be an integer >= {minimum}; got {n!r}')
  return n


def scalar(x: Any, what: str) -> Scalar:
  """`x` as a Python bool, str, int or finite float."""
  x = registry.to_python(x)
  if isinstance(x, bool | str | int) or (isinstance(x, float) and math.isfinite(x)):
    return x
  raise SpaceError(f'{what} must be a finite number, a string or a bool; got {x!r}')


def type_name(v: Scalar) -> str:
  """'bool', 'str' or 'number': the families a `Choice` may not mix."""
  return 'bool' if isinstance(v, bool) else 'str' if isinstance(v, str) else 'number'


def pack(values: Iterable[Scalar]) -> np.ndarray:
  """Packs scalars as bool, str, int64 or float64 (the dtypes `sample` promises)."""
  vals = list(values)
  if all(isinstance(v, bool) for v in vals):
    return np.asarray(vals, dtype=bool)
  if all(isinstance(v, str) for v in vals):
    return np.asarray(vals, dtype=np.str_)
  if all(isinstance(v, int) for v in vals):
    return np.asarray(vals, dtype=np.int64)
  return np.asarray(vals, dtype=np.float64)


def format_value(v: Scalar) -> str:
  """Writes a value in the spec grammar so that `parse_scalar` reads back the same value."""
  if isinstance(v, bool):
    return 'true' if v else 'false'
  if isinstance(v, float):
    return repr(v)  # repr round-trips exactly and always shows '.', 'e' (never int-like)
  if isinstance(v, str) and (
    not v or v != v.strip() or set(v) & set(',=:|') or not isinstance(parse_scalar(v), str)
  ):
    raise SpaceError(f'string {v!r} cannot be written in the spec grammar; use to_json()')
  return str(v)


def parse_scalar(s: str) -> Scalar:
  """'true'/'false' -> bool, int-like -> int, float-like -> float, else the string."""
  if s.lower() in ('true', 'false'):
    return s.lower() == 'true'
  if re.fullmatch(r'[+-]?\d+', s):
    try:
      return int(s)
    except ValueError:  # Python refuses ints of over 4300 digits; as a float it is inf,
      pass  # which every numeric check then rejects with its own message
  try:
    return float(s)
  except ValueError:
    return s

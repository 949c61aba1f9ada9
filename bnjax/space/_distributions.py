"""Distributions over one hyperparameter, each sampled on its own scale.

Following the deep-learning course notes: sample a learning rate log-uniformly (each decade
gets equal effort), sample an averaging beta as ``1 - 10**r`` (``beta`` near 1 is where small
changes matter), draw random points rather than a grid, and search coarse-to-fine (`refine`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any, ClassVar

import numpy as np

from bnjax.registry import Scalar
from bnjax.space._sampling import check_key, uniform01, uniform_index
from bnjax.space._scalars import (
  SpaceError,
  count,
  format_value,
  integer,
  pack,
  real,
  scalar,
  type_name,
)

_MAX_SPAN = 2**31  # up to here 53-bit uniforms keep uniform_index's bias below 2**-22


def _points(a: float, b: float, num: int) -> np.ndarray:
  return np.array([(a + b) / 2]) if num == 1 else np.linspace(a, b, num)


def _shrunk(a: float, b: float, t: np.ndarray, shrink: Any) -> tuple[float, float]:
  """A window of [a, b] centred on t, `shrink` times as wide (covering all t), kept inside."""
  shrink = real(shrink, 'shrink')
  if not 0 < shrink <= 1:
    raise SpaceError(f'shrink must lie in (0, 1]; got {shrink!r}')
  width = max(shrink * (b - a), float(t.max() - t.min()))
  lo = min(max((float(t.min() + t.max())) / 2 - width / 2, a), b - width)
  return lo, lo + width


class Distribution:
  """Interface shared by all distributions (frozen dataclasses validated on creation)."""

  kind: ClassVar[str]  # the spec-grammar kind, e.g. 'log'
  scale: ClassVar[str]  # 'linear' | 'log' | 'one_minus_log' | 'categorical' | 'fixed'

  def sample(self, key: Any, n: int) -> np.ndarray:
    """Draws `n` values deterministically from the jax PRNG `key`.

    Draws are a prefix: ``sample(key, k)`` equals ``sample(key, n)[:k]`` for k <= n.
    """
    raise NotImplementedError

  def grid(self, num: int) -> tuple:
    """`num` values evenly spaced on this distribution's own scale (num=1: the centre)."""
    raise NotImplementedError

  def refine(self, values: Any, *, shrink: float = 0.5) -> Distribution:
    """Same-kind distribution `shrink` times as wide, centred on and covering `values`."""
    raise NotImplementedError

  def to_spec(self) -> str:
    """`KIND:ARGS` in the grammar of `bnjax.space.parse_spec`."""
    args = (getattr(self, f.name) for f in dataclasses.fields(self))  # type: ignore[arg-type]
    return ':'.join([self.kind, *map(format_value, args)])

  def to_json(self) -> dict[str, Any]:
    """`{"kind": KIND, field: value, ...}`, as read by `bnjax.space.load_space`."""
    out: dict[str, Any] = {'kind': self.kind}
    for f in dataclasses.fields(self):  # type: ignore[arg-type]
      v = getattr(self, f.name)
      out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


class _Ranged(Distribution):
  """A numeric [low, high] sampled uniformly in t = to_scale(value) (linear unless overridden)."""

  low: Any
  high: Any
  _convert: ClassVar[Any]  # reads low and high: `real` or `integer`

  @staticmethod
  def to_scale(x: Any) -> Any:
    """A value's position on the sampling scale (where draws are uniform)."""
    return x

  @staticmethod
  def from_scale(t: Any) -> Any:
    """The inverse of `to_scale`."""
    return t

  def _check(self, ok: Any, rule: str, example: str) -> None:
    """Converts low and high (`_convert`), then raises unless `ok(low, high)`."""
    name = type(self).__name__
    for side in ('low', 'high'):
      object.__setattr__(self, side, self._convert(getattr(self, side), f'{name} {side}'))
    if not ok(self.low, self.high):
      raise SpaceError(
        f'{name} needs {rule}; got low={self.low!r}, high={self.high!r}; e.g. {example}'
      )

  def _draw(self, key: Any, n: Any, lo: float, hi: float) -> np.ndarray:
    a, b = self.to_scale(lo), self.to_scale(hi)
    u = uniform01(key, count(n, 'n', 0))
    return self.from_scale(a + u * (b - a))

  def _grid_points(self, num: int) -> np.ndarray:
    return self.from_scale(_points(self.to_scale(self.low), self.to_scale(self.high), num))

  def _window(self, vals: np.ndarray, shrink: Any, pad: float) -> tuple[float, float]:
    """`_shrunk` on this scale over [low - pad, high + pad], mapped back to values."""
    lo, hi = _shrunk(
      self.to_scale(self.low - pad), self.to_scale(self.high + pad), self.to_scale(vals), shrink
    )
    return float(self.from_scale(lo)), float(self.from_scale(hi))

  def _values(self, values: Any) -> np.ndarray:
    try:
      arr = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
      raise SpaceError(f'refine needs numbers for {self.to_spec()}; got {values!r}') from None
    tol = 1e-9 * (self.high - self.low)  # float noise from the scale transform is fine
    bad = arr[~((arr >= self.low - tol) & (arr <= self.high + tol))]
    if arr.size == 0 or bad.size:
      got = 'nothing' if arr.size == 0 else f'{bad[0]!r}'
      raise SpaceError(f'refine needs values inside {self.to_spec()}; got {got}')
    return np.clip(arr, self.low, self.high)


class _LogScale:
  """The log10 scale that `LogUniform` and `IntLogUniform` share: each decade weighs the same."""

  scale: ClassVar[str] = 'log'

  @staticmethod
  def to_scale(x: Any) -> Any:
    return np.log10(x)

  @staticmethod
  def from_scale(t: Any) -> Any:
    return np.power(10.0, t)


class _Continuous(_Ranged):
  _convert = staticmethod(real)

  def sample(self, key: Any, n: int) -> np.ndarray:
    return np.clip(self._draw(key, n, self.low, self.high), self.low, self.high)

  def grid(self, num: int) -> tuple[float, ...]:
    num = count(num, 'grid num', 1)
    v = np.clip(self._grid_points(num), self.low, self.high)
    if num > 1:  # exact ends, free of log/exp round-off
      v[0], v[-1] = self.low, self.high
    return tuple(float(x) for x in v)

  def refine(self, values: Any, *, shrink: float = 0.5) -> _Continuous:
    vals = self._values(values)
    lo, hi = self._window(vals, shrink, 0.0)
    new_low = max(self.low, min(lo, float(vals.min())))
    new_high = min(self.high, max(hi, float(vals.max())))
    return type(self)(new_low, new_high) if new_low < new_high else self


@dataclasses.dataclass(frozen=True)
class Uniform(_Continuous):
  """Float uniform on [low, high]."""

  low: float
  high: float
  kind: ClassVar[str] = 'uniform'
  scale: ClassVar[str] = 'linear'

  def __post_init__(self) -> None:
    self._check(lambda lo, hi: lo < hi, 'low < high', 'Uniform(0.0, 1.0)')


@dataclasses.dataclass(frozen=True)
class LogUniform(_LogScale, _Continuous):
  """value = 10**r, r ~ U[log10 low, log10 high]: each decade equally likely."""

  low: float
  high: float
  kind: ClassVar[str] = 'log'

  def __post_init__(self) -> None:
    self._check(lambda lo, hi: 0 < lo < hi, '0 < low < high', 'LogUniform(1e-4, 1.0)')


@dataclasses.dataclass(frozen=True)
class OneMinusLogUniform(_Continuous):
  """value = 1 - 10**r, r ~ U[log10(1-high), log10(1-low)]: for averaging betas."""

  low: float
  high: float
  kind: ClassVar[str] = '1mlog'
  scale: ClassVar[str] = 'one_minus_log'

  @staticmethod
  def to_scale(x: Any) -> Any:
    return -np.log10(1.0 - np.asarray(x, dtype=np.float64))  # increasing in x

  @staticmethod
  def from_scale(t: Any) -> Any:
    return 1.0 - np.power(10.0, -np.asarray(t, dtype=np.float64))

  def __post_init__(self) -> None:
    self._check(
      lambda lo, hi: 0 <= lo < hi < 1, '0 <= low < high < 1', 'OneMinusLogUniform(0.9, 0.999)'
    )


class _Integer(_Ranged):
  """Integers low..high inclusive; integer k owns the cell [k - 0.5, k + 0.5] on the scale."""

  _convert = staticmethod(integer)

  def sample(self, key: Any, n: int) -> np.ndarray:
    # Rounding a draw over the cells gives every integer positive weight, both ends included.
    k = np.floor(self._draw(key, n, self.low - 0.5, self.high + 0.5) + 0.5)
    return np.clip(k, self.low, self.high).astype(np.int64)

  def grid(self, num: int) -> tuple[int, ...]:
    num = min(count(num, 'grid num', 1), self.high - self.low + 1)
    k = np.clip(np.floor(self._grid_points(num) + 0.5).astype(np.int64), self.low, self.high)
    for i in range(1, len(k)):  # rounding may merge neighbours: push them apart, in range
      k[i] = max(k[i], k[i - 1] + 1)
    k[-1] = min(k[-1], self.high)
    for i in range(len(k) - 2, -1, -1):
      k[i] = min(k[i], k[i + 1] - 1)
    return tuple(int(x) for x in k)

  def refine(self, values: Any, *, shrink: float = 0.5) -> _Integer:
    vals = self._values(values)
    if np.any(vals != np.round(vals)):
      raise SpaceError(f'refine needs integers for {self.to_spec()}; got {values!r}')
    # Keep the integers whose cell centre lies in the shrunk window.
    lo, hi = self._window(vals, shrink, 0.5)
    new_low = max(self.low, min(math.ceil(lo - 1e-9), int(vals.min())))
    new_high = min(self.high, max(math.floor(hi + 1e-9), int(vals.max())))
    return type(self)(new_low, new_high)


@dataclasses.dataclass(frozen=True)
class IntUniform(_Integer):
  """Integers uniform on low..high inclusive (e.g. units 50..100, layers 2..4)."""

  low: int
  high: int
  kind: ClassVar[str] = 'int'
  scale: ClassVar[str] = 'linear'

  def __post_init__(self) -> None:
    self._check(lambda lo, hi: lo <= hi, 'low <= high', 'IntUniform(2, 4)')
    if self.high - self.low + 1 > _MAX_SPAN:
      raise SpaceError(
        f'IntUniform spans more than {_MAX_SPAN} integers; got '
        f'[{self.low}, {self.high}]; use IntLogUniform for wide ranges'
      )

  def sample(self, key: Any, n: int) -> np.ndarray:
    # An exact index draw: no float rounding near the cell edges of a wide range.
    return uniform_index(key, count(n, 'n', 0), self.high - self.low + 1) + self.low


@dataclasses.dataclass(frozen=True)
class IntLogUniform(_LogScale, _Integer):
  """Integers low..high inclusive, log-uniform (batch sizes).

  Draws r ~ U[log10(low - 0.5), log10(high + 0.5)] and rounds 10**r, so every integer owns
  a cell of positive width on the log scale and both bounds are reachable.
  """

  low: int
  high: int
  kind: ClassVar[str] = 'intlog'

  def __post_init__(self) -> None:
    self._check(lambda lo, hi: 1 <= lo <= hi, '1 <= low <= high', 'IntLogUniform(16, 512)')


@dataclasses.dataclass(frozen=True)
class Choice(Distribution):
  """Uniform over distinct values: all numbers, all strings or all bools."""

  values: tuple[Scalar, ...]
  kind: ClassVar[str] = 'choice'
  scale: ClassVar[str] = 'categorical'

  def __post_init__(self) -> None:
    if isinstance(self.values, str | bytes) or not isinstance(self.values, Iterable):
      raise SpaceError(
        f"Choice takes a tuple of values, e.g. Choice(('adam', 'sgd')); got {self.values!r}"
      )
    vals = tuple(scalar(v, 'a Choice value') for v in self.values)
    if not vals:
      raise SpaceError("Choice needs at least one value, e.g. Choice(('adam', 'sgd'))")
    if len({type_name(v) for v in vals}) > 1:
      raise SpaceError(f'Choice values must be all numbers, all strings or all bools; got {vals!r}')
    if len(set(vals)) < len(vals):
      raise SpaceError(f'Choice values must be distinct; got {vals!r}')
    object.__setattr__(self, 'values', vals)

  def sample(self, key: Any, n: int) -> np.ndarray:
    return pack(self.values)[uniform_index(key, count(n, 'n', 0), len(self.values))]

  def grid(self, num: int) -> tuple[Scalar, ...]:
    count(num, 'grid num', 1)
    return self.values

  def refine(self, values: Any, *, shrink: float = 0.5) -> Choice:
    present = np.asarray(values).ravel().tolist()
    bad = [v for v in present if v not in self.values]
    if not present or bad:
      got = 'nothing' if not present else repr(bad[0])
      raise SpaceError(f'refine needs values from {self.to_spec()}; got {got}')
    return Choice(tuple(v for v in self.values if v in present))

  def to_spec(self) -> str:
    return 'choice:' + '|'.join(map(format_value, self.values))


@dataclasses.dataclass(frozen=True)
class Fixed(Distribution):
  """Always `value` (a number, string or bool)."""

  value: Scalar
  kind: ClassVar[str] = 'fixed'
  scale: ClassVar[str] = 'fixed'

  def __post_init__(self) -> None:
    if isinstance(self.value, list | tuple | set | dict):
      raise SpaceError(
        f'Fixed takes one value; got {self.value!r}; for several values '
        f'use Choice({tuple(self.value)!r})'
      )
    object.__setattr__(self, 'value', scalar(self.value, 'Fixed value'))

  def sample(self, key: Any, n: int) -> np.ndarray:
    check_key(key)
    return pack((self.value,))[np.zeros(count(n, 'n', 0), dtype=np.intp)]

  def grid(self, num: int) -> tuple[Scalar, ...]:
    count(num, 'grid num', 1)
    return (self.value,)

  def refine(self, values: Any, *, shrink: float = 0.5) -> Fixed:
    return self


#: Spec-grammar kind -> distribution class.
KINDS: dict[str, type[Distribution]] = {
  cls.kind: cls
  for cls in (Uniform, LogUniform, OneMinusLogUniform, IntUniform, IntLogUniform, Choice, Fixed)
}

"""Hyperparameter search spaces: distributions sampled on the right scale, and `Space`.

Following the deep-learning course notes: sample a learning rate log-uniformly (each decade
gets equal effort), sample an averaging beta as ``1 - 10**r`` (``beta`` near 1 is where small
changes matter), draw random points rather than a grid, and search coarse-to-fine (`refine`).

Canonical names, their rules and `DEFAULTS` live in `bnjax.space_names` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from bnjax.space_names import (  # noqa: F401  (DEFAULTS, with_defaults, _parse_scalar: re-exported)
  DEFAULTS,
  Scalar,
  SpaceError,
  _check_value,
  _count,
  _fmt,
  _integer,
  _parse_scalar,
  _py,
  _real,
  _rule_for,
  _scalar,
  _to_array,
  _type_of,
  with_defaults,
)

_MAX_SPAN = 2**31  # up to here 53-bit uniforms keep _uniform_index's bias below 2**-22
_MAX_GRID = 1_000_000


# ---------------------------------------------------------------------------------- helpers


def _check_key(key: Any) -> Any:
  if isinstance(_py(key), int) or not hasattr(key, 'shape'):
    raise SpaceError(f'sample needs a jax PRNG key, e.g. jax.random.key(0); got {key!r}')
  return key


_BLOCK = 4096  # draws per jax call: one compiled shape serves every n


@jax.jit
def _block_bits(key: Any, i: Any) -> jax.Array:
  return jax.random.bits(jax.random.fold_in(key, i), (_BLOCK, 2), jnp.uint32)


def _uniform01(key: Any, n: int) -> np.ndarray:
  """`n` float64 uniforms on [0, 1); the first n of a longer draw (more trials only append).

  53 random bits per draw: float32 uniforms cannot reach every integer of a wide intlog range.
  """
  blocks = [np.asarray(_block_bits(_check_key(key), i)) for i in range(-(-n // _BLOCK))]
  bits = np.concatenate([np.zeros((0, 2), np.uint32), *blocks])[:n].astype(np.uint64)
  return ((bits[:, 0] >> 5) * 2**26 + (bits[:, 1] >> 6)).astype(np.float64) * 2.0**-53


def _uniform_index(key: Any, n: int, size: int) -> np.ndarray:
  """`n` ints uniform on 0..size-1 (bias below 2**-22 for size <= 2**31)."""
  return np.minimum(np.floor(_uniform01(key, n) * size), size - 1).astype(np.int64)


def _points(a: float, b: float, num: int) -> np.ndarray:
  return np.array([(a + b) / 2]) if num == 1 else np.linspace(a, b, num)


def _shrunk(a: float, b: float, t: np.ndarray, shrink: Any) -> tuple[float, float]:
  """A window of [a, b] centred on t, `shrink` times as wide (covering all t), kept inside."""
  shrink = _real(shrink, 'shrink')
  if not 0 < shrink <= 1:
    raise SpaceError(f'shrink must lie in (0, 1]; got {shrink!r}')
  width = max(shrink * (b - a), float(t.max() - t.min()))
  lo = min(max((float(t.min() + t.max())) / 2 - width / 2, a), b - width)
  return lo, lo + width


# ---------------------------------------------------------------------------- distributions


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
    """`KIND:ARGS` in the grammar of `bnjax.space_spec.parse_spec`."""
    args = (getattr(self, f.name) for f in dataclasses.fields(self))  # type: ignore[arg-type]
    return ':'.join([self.kind, *map(_fmt, args)])

  def to_json(self) -> dict[str, Any]:
    """`{"kind": KIND, field: value, ...}`, as read by `bnjax.space_spec.load_space`."""
    out: dict[str, Any] = {'kind': self.kind}
    for f in dataclasses.fields(self):  # type: ignore[arg-type]
      v = getattr(self, f.name)
      out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


class _Ranged(Distribution):
  """A numeric [low, high] sampled uniformly in t = _fwd(value)."""

  low: Any
  high: Any

  @staticmethod
  def _fwd(x: Any) -> Any:
    return x

  @staticmethod
  def _inv(t: Any) -> Any:
    return t

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


class _Continuous(_Ranged):
  def _check(self, ok: bool, rule: str, example: str) -> None:
    object.__setattr__(self, 'low', _real(self.low, f'{type(self).__name__} low'))
    object.__setattr__(self, 'high', _real(self.high, f'{type(self).__name__} high'))
    if not ok(self.low, self.high):  # type: ignore[operator]
      raise SpaceError(
        f'{type(self).__name__} needs {rule}; got low={self.low!r}, '
        f'high={self.high!r}; e.g. {example}'
      )

  def sample(self, key: Any, n: int) -> np.ndarray:
    a, b = self._fwd(self.low), self._fwd(self.high)
    u = _uniform01(key, _count(n, 'n', 0))
    return np.clip(self._inv(a + u * (b - a)), self.low, self.high)

  def grid(self, num: int) -> tuple[float, ...]:
    num = _count(num, 'grid num', 1)
    v = np.clip(
      self._inv(_points(self._fwd(self.low), self._fwd(self.high), num)), self.low, self.high
    )
    if num > 1:  # exact ends, free of log/exp round-off
      v[0], v[-1] = self.low, self.high
    return tuple(float(x) for x in v)

  def refine(self, values: Any, *, shrink: float = 0.5) -> _Continuous:
    vals = self._values(values)
    lo, hi = _shrunk(self._fwd(self.low), self._fwd(self.high), self._fwd(vals), shrink)
    new_low = max(self.low, min(float(self._inv(lo)), float(vals.min())))
    new_high = min(self.high, max(float(self._inv(hi)), float(vals.max())))
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
class LogUniform(_Continuous):
  """value = 10**r, r ~ U[log10 low, log10 high]: each decade equally likely."""

  low: float
  high: float
  kind: ClassVar[str] = 'log'
  scale: ClassVar[str] = 'log'
  _fwd = staticmethod(np.log10)

  @staticmethod
  def _inv(t: Any) -> Any:
    return np.power(10.0, t)

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
  def _fwd(x: Any) -> Any:
    return -np.log10(1.0 - np.asarray(x, dtype=np.float64))  # increasing in x

  @staticmethod
  def _inv(t: Any) -> Any:
    return 1.0 - np.power(10.0, -np.asarray(t, dtype=np.float64))

  def __post_init__(self) -> None:
    self._check(
      lambda lo, hi: 0 <= lo < hi < 1, '0 <= low < high < 1', 'OneMinusLogUniform(0.9, 0.999)'
    )


class _Integer(_Ranged):
  def _check(self, minimum: int | None, rule: str, example: str) -> None:
    name = type(self).__name__
    object.__setattr__(self, 'low', _integer(self.low, f'{name} low'))
    object.__setattr__(self, 'high', _integer(self.high, f'{name} high'))
    if not ((minimum is None or minimum <= self.low) and self.low <= self.high):
      raise SpaceError(f'{name} needs {rule}; got low={self.low}, high={self.high}; e.g. {example}')

  def grid(self, num: int) -> tuple[int, ...]:
    num = min(_count(num, 'grid num', 1), self.high - self.low + 1)
    k = np.clip(
      np.floor(self._inv(_points(self._fwd(self.low), self._fwd(self.high), num)) + 0.5).astype(
        np.int64
      ),
      self.low,
      self.high,
    )
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
    # Integer k owns the cell [k - 0.5, k + 0.5]; keep the ints whose centre is in the window.
    lo, hi = _shrunk(self._fwd(self.low - 0.5), self._fwd(self.high + 0.5), self._fwd(vals), shrink)
    new_low = max(self.low, min(math.ceil(float(self._inv(lo)) - 1e-9), int(vals.min())))
    new_high = min(self.high, max(math.floor(float(self._inv(hi)) + 1e-9), int(vals.max())))
    return type(self)(new_low, new_high)


@dataclasses.dataclass(frozen=True)
class IntUniform(_Integer):
  """Integers uniform on low..high inclusive (e.g. units 50..100, layers 2..4)."""

  low: int
  high: int
  kind: ClassVar[str] = 'int'
  scale: ClassVar[str] = 'linear'

  def __post_init__(self) -> None:
    self._check(None, 'low <= high', 'IntUniform(2, 4)')
    if self.high - self.low + 1 > _MAX_SPAN:
      raise SpaceError(
        f'IntUniform spans more than {_MAX_SPAN} integers; got '
        f'[{self.low}, {self.high}]; use IntLogUniform for wide ranges'
      )

  def sample(self, key: Any, n: int) -> np.ndarray:
    return _uniform_index(key, _count(n, 'n', 0), self.high - self.low + 1) + self.low


@dataclasses.dataclass(frozen=True)
class IntLogUniform(_Integer):
  """Integers low..high inclusive, log-uniform (batch sizes).

  Draws r ~ U[log10(low - 0.5), log10(high + 0.5)] and rounds 10**r, so every integer owns
  a cell of positive width on the log scale and both bounds are reachable.
  """

  low: int
  high: int
  kind: ClassVar[str] = 'intlog'
  scale: ClassVar[str] = 'log'
  _fwd = staticmethod(np.log10)

  @staticmethod
  def _inv(t: Any) -> Any:
    return np.power(10.0, t)

  def __post_init__(self) -> None:
    self._check(1, '1 <= low <= high', 'IntLogUniform(16, 512)')

  def sample(self, key: Any, n: int) -> np.ndarray:
    a, b = np.log10(self.low - 0.5), np.log10(self.high + 0.5)
    u = _uniform01(key, _count(n, 'n', 0))
    k = np.floor(np.power(10.0, a + u * (b - a)) + 0.5)
    return np.clip(k, self.low, self.high).astype(np.int64)


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
    vals = tuple(_scalar(v, 'a Choice value') for v in self.values)
    if not vals:
      raise SpaceError("Choice needs at least one value, e.g. Choice(('adam', 'sgd'))")
    if len({_type_of(v) for v in vals}) > 1:
      raise SpaceError(f'Choice values must be all numbers, all strings or all bools; got {vals!r}')
    if len(set(vals)) < len(vals):
      raise SpaceError(f'Choice values must be distinct; got {vals!r}')
    object.__setattr__(self, 'values', vals)

  def sample(self, key: Any, n: int) -> np.ndarray:
    return _to_array(self.values)[_uniform_index(key, _count(n, 'n', 0), len(self.values))]

  def grid(self, num: int) -> tuple[Scalar, ...]:
    _count(num, 'grid num', 1)
    return self.values

  def refine(self, values: Any, *, shrink: float = 0.5) -> Choice:
    present = np.asarray(values).ravel().tolist()
    bad = [v for v in present if v not in self.values]
    if not present or bad:
      got = 'nothing' if not present else repr(bad[0])
      raise SpaceError(f'refine needs values from {self.to_spec()}; got {got}')
    return Choice(tuple(v for v in self.values if v in present))

  def to_spec(self) -> str:
    return 'choice:' + '|'.join(map(_fmt, self.values))


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
    object.__setattr__(self, 'value', _scalar(self.value, 'Fixed value'))

  def sample(self, key: Any, n: int) -> np.ndarray:
    _check_key(key)
    return _to_array((self.value,))[np.zeros(_count(n, 'n', 0), dtype=np.intp)]

  def grid(self, num: int) -> tuple[Scalar, ...]:
    _count(num, 'grid num', 1)
    return (self.value,)

  def refine(self, values: Any, *, shrink: float = 0.5) -> Fixed:
    return self


def _check_entry(name: str, dist: Distribution) -> None:
  """Checks the whole support of `dist` against what `name` allows."""
  rule = _rule_for(name)
  if isinstance(dist, Choice | Fixed):
    for v in dist.values if isinstance(dist, Choice) else (dist.value,):
      _check_value(name, rule, v)
    return
  assert isinstance(dist, _Ranged)
  if rule.kind in ('choice', 'bool'):
    options = '|'.join(rule.choices) if rule.choices else 'true|false'
    raise SpaceError(f'{name} is categorical; got {dist.to_spec()}; use choice:{options}')
  if rule.kind == 'int' and not isinstance(dist, _Integer):
    raise SpaceError(
      f'{name} takes integers; got {dist.to_spec()}; use int:LOW:HIGH or intlog:LOW:HIGH'
    )
  if not (rule.admits(dist.low) and rule.admits(dist.high)):
    raise SpaceError(
      f'{name} must lie in {rule.interval()}; got range '
      f'[{dist.low:g}, {dist.high:g}]; pick bounds inside {rule.interval()}'
    )


# ------------------------------------------------------------------------------------- Space


@dataclasses.dataclass(frozen=True, repr=False)
class Space(Mapping[str, Distribution]):
  """Immutable mapping name -> distribution, validated against the canonical names.

  Build from a dict whose values are distributions or plain values (plain means `Fixed`):
  ``Space({"learning_rate": LogUniform(1e-4, 1.0), "optimizer": "adam"})``.
  """

  dists: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self) -> None:
    if not isinstance(self.dists, Mapping):
      raise SpaceError(f'Space takes a dict name -> distribution; got {self.dists!r}')
    built = {}
    for name, d in self.dists.items():
      dist = d if isinstance(d, Distribution) else Fixed(d)
      _check_entry(name, dist)
      built[name] = dist
    object.__setattr__(self, 'dists', MappingProxyType(built))

  def __getitem__(self, name: str) -> Distribution:
    return self.dists[name]

  def __iter__(self) -> Iterator[str]:
    return iter(self.dists)

  def __len__(self) -> int:
    return len(self.dists)

  def __hash__(self) -> int:
    return hash(tuple(self.dists.items()))

  def __repr__(self) -> str:
    return f'Space({dict(self.dists)!r})'

  @property
  def names(self) -> tuple[str, ...]:
    """The names, in insertion order."""
    return tuple(self.dists)

  def sample(self, key: Any, n: int) -> dict[str, np.ndarray]:
    """Draws `n` rows; name `k` uses key ``fold_in(key, crc32(k))``.

    The per-name key depends only on the name (crc32 is stable across runs, unlike
    ``hash``), so adding a name to a space leaves the other names' samples unchanged.
    """
    _check_key(key)
    n = _count(n, 'n', 0)
    return {
      k: d.sample(jax.random.fold_in(key, zlib.crc32(k.encode())), n) for k, d in self.dists.items()
    }

  def grid(self, points_per_axis: int) -> dict[str, np.ndarray]:
    """The cartesian product of every axis' ``grid(points_per_axis)``, as columns."""
    _count(points_per_axis, 'points_per_axis', 1)
    axes = [_to_array(d.grid(points_per_axis)) for d in self.dists.values()]
    sizes = [len(a) for a in axes]
    if math.prod(sizes) > _MAX_GRID:
      raise SpaceError(
        f'grid would have {math.prod(sizes)} points (> {_MAX_GRID}); '
        f'lower points_per_axis or use sample'
      )
    if not axes:
      return {}
    idx = np.indices(sizes).reshape(len(sizes), -1)
    return {k: a[i] for k, a, i in zip(self.names, axes, idx, strict=True)}

  def refine(self, best_rows: Mapping[str, Any], shrink: float = 0.5) -> Space:
    """Coarse-to-fine: refines every non-fixed axis around its column in `best_rows`."""
    out = {}
    for name, dist in self.dists.items():
      if not isinstance(dist, Fixed) and name not in best_rows:
        raise SpaceError(
          f'best_rows lacks column {name!r}; pass the sampled columns of '
          f'the best runs, e.g. {{k: v[top] for k, v in rows.items()}}'
        )
      out[name] = dist if isinstance(dist, Fixed) else dist.refine(best_rows[name], shrink=shrink)
    return Space(out)

  def to_spec(self) -> str:
    """``name=KIND:ARGS,...`` (round-trips through `bnjax.space_spec.parse_spec`)."""
    return ','.join(f'{k}={d.to_spec()}' for k, d in self.dists.items())

  def to_json(self, indent: int | None = 2) -> str:
    """A JSON object ``{name: {"kind": ..., ...}}`` read back by `load_space`."""
    return json.dumps({k: d.to_json() for k, d in self.dists.items()}, indent=indent)

"""`HyperParameters`: a `Space` recorded through the Keras Tuner API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bnjax.registry import Scalar
from bnjax.space._distributions import (
  Choice,
  Distribution,
  Fixed,
  IntLogUniform,
  IntUniform,
  LogUniform,
  OneMinusLogUniform,
  Uniform,
)
from bnjax.space._scalars import SpaceError
from bnjax.space._space import Space


def _contains(dist: Distribution, v: Any) -> bool:
  if isinstance(dist, Choice):
    return v in dist.values
  if isinstance(dist, Fixed):
    return v == dist.value
  return dist.low <= v <= dist.high  # type: ignore[attr-defined]


class HyperParameters:
  """Records a `Space` through the Keras-Tuner API; instances are conventionally ``hp``.

  Each method registers a distribution and returns a usable value (the default if given,
  else the minimum / first value), so a model-building function can run on it directly::

      def build(hp):
          lr = hp.Float("learning_rate", 1e-4, 1.0, sampling="log")
          ...
      hp = HyperParameters(); build(hp); space = hp.space()

  Names and ranges are validated at the call, so mistakes point at the offending line.
  """

  def __init__(self) -> None:
    self._dists: dict[str, Distribution] = {}

  def _record(self, name: str, dist: Distribution, default: Any, first: Scalar) -> Any:
    Space({name: dist})
    old = self._dists.get(name)
    if old is not None and old != dist:
      raise SpaceError(
        f'hyperparameter {name!r} is already {old.to_spec()}; got '
        f'{dist.to_spec()}; define each name once'
      )
    if default is not None and not _contains(dist, default):
      raise SpaceError(f'default {default!r} of {name!r} is outside {dist.to_spec()}')
    self._dists[name] = dist
    return first if default is None else default

  @staticmethod
  def _sampler(sampling: str, table: dict[str, type[Distribution]]) -> type[Distribution]:
    if sampling not in table:
      raise SpaceError(f'sampling must be one of {", ".join(map(repr, table))}; got {sampling!r}')
    return table[sampling]

  def Int(
    self,
    name: str,
    min_value: int,
    max_value: int,
    sampling: str = 'linear',
    default: int | None = None,
  ) -> int:
    """Integer in [min_value, max_value]; sampling 'linear' or 'log'."""
    cls = self._sampler(sampling, {'linear': IntUniform, 'log': IntLogUniform})
    dist = cls(min_value, max_value)  # type: ignore[call-arg]
    return self._record(name, dist, default, dist.low)  # type: ignore[attr-defined]

  def Float(
    self,
    name: str,
    min_value: float,
    max_value: float,
    sampling: str = 'linear',
    default: float | None = None,
  ) -> float:
    """Float in [min_value, max_value]; sampling 'linear', 'log' or 'reverse_log'."""
    cls = self._sampler(
      sampling, {'linear': Uniform, 'log': LogUniform, 'reverse_log': OneMinusLogUniform}
    )
    dist = cls(min_value, max_value)  # type: ignore[call-arg]
    return self._record(name, dist, default, dist.low)  # type: ignore[attr-defined]

  def Choice(self, name: str, values: Sequence[Scalar], default: Scalar | None = None) -> Any:
    """One of `values` (uniform)."""
    dist = Choice(tuple(values) if isinstance(values, list) else values)
    return self._record(name, dist, default, dist.values[0])

  def Boolean(self, name: str, default: bool = False) -> bool:
    """True or False (uniform)."""
    return self._record(name, Choice((False, True)), default, False)

  def Fixed(self, name: str, value: Scalar) -> Any:
    """Always `value`."""
    dist = Fixed(value)
    return self._record(name, dist, None, dist.value)

  def space(self) -> Space:
    """The `Space` recorded so far."""
    return Space(self._dists)

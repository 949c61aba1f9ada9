"""`Space`: an immutable mapping name -> distribution, checked against the registry."""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

import jax
import numpy as np

from bnjax.space._distributions import Distribution, Fixed
from bnjax.space._names import check_entry
from bnjax.space._sampling import check_key
from bnjax.space._scalars import SpaceError, count, pack

_MAX_GRID = 1_000_000


@dataclasses.dataclass(frozen=True, repr=False)
class Space(Mapping[str, Distribution]):
  """Immutable mapping name -> distribution, validated against `bnjax.registry`.

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
      check_entry(name, dist)
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
    check_key(key)
    n = count(n, 'n', 0)
    return {
      k: d.sample(jax.random.fold_in(key, zlib.crc32(k.encode())), n) for k, d in self.dists.items()
    }

  def grid(self, points_per_axis: int) -> dict[str, np.ndarray]:
    """The cartesian product of every axis' ``grid(points_per_axis)``, as columns."""
    count(points_per_axis, 'points_per_axis', 1)
    axes = [pack(d.grid(points_per_axis)) for d in self.dists.values()]
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
    """``name=KIND:ARGS,...`` (round-trips through `bnjax.space.parse_spec`)."""
    return ','.join(f'{k}={d.to_spec()}' for k, d in self.dists.items())

  def to_json(self, indent: int | None = 2) -> str:
    """A JSON object ``{name: {"kind": ..., ...}}`` read back by `bnjax.space.load_space`."""
    return json.dumps({k: d.to_json() for k, d in self.dists.items()}, indent=indent)

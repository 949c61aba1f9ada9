"""Writing spaces down: the ``--space`` string grammar, JSON files, and a Keras-Tuner facade.

Grammar (`parse_spec`): comma-separated ``NAME=KIND:ARGS`` items, e.g.
``learning_rate=log:1e-4:1,beta1=1mlog:0.9:0.999,hidden_units=int:50:100,num_layers=int:2:4``.

=========  ===================  ============================
kind       distribution         args
=========  ===================  ============================
uniform    `Uniform`            ``uniform:LOW:HIGH``
log        `LogUniform`         ``log:LOW:HIGH``
1mlog      `OneMinusLogUniform` ``1mlog:LOW:HIGH`` (betas)
int        `IntUniform`         ``int:LOW:HIGH`` (inclusive)
intlog     `IntLogUniform`      ``intlog:LOW:HIGH`` (inclusive)
choice     `Choice`             ``choice:A|B|C``
fixed      `Fixed`              ``fixed:V``
=========  ===================  ============================

Values in choice/fixed read as bool (true/false), else int, else float, else string.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from bnjax.space import (
  Choice,
  Distribution,
  Fixed,
  IntLogUniform,
  IntUniform,
  LogUniform,
  OneMinusLogUniform,
  Scalar,
  Space,
  SpaceError,
  Uniform,
  _parse_scalar,
)

KINDS: dict[str, type[Distribution]] = {
  cls.kind: cls
  for cls in (Uniform, LogUniform, OneMinusLogUniform, IntUniform, IntLogUniform, Choice, Fixed)
}
_FORMS = {k: f'{k}:LOW:HIGH' for k in KINDS} | {'choice': 'choice:A|B|C', 'fixed': 'fixed:V'}
_EXAMPLE = 'learning_rate=log:1e-4:1,beta1=1mlog:0.9:0.999'


def _kind_class(kind: Any, where: str) -> type[Distribution]:
  if kind in KINDS:
    return KINDS[kind]
  close = difflib.get_close_matches(str(kind), list(KINDS), n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  raise SpaceError(f'{where} has unknown kind {kind!r}{hint}; kinds: {", ".join(KINDS)}')


def _parse_item(item: str) -> tuple[str, Distribution]:
  name, eq, body = (p.strip() for p in item.partition('='))
  if not eq:
    raise SpaceError(
      f"spec item {item!r} lacks '='; expected NAME=KIND:ARGS, e.g. learning_rate=log:1e-4:1"
    )
  if not name or not body:
    raise SpaceError(
      f"spec item {item!r} needs a name and a KIND:ARGS around '='; e.g. learning_rate=log:1e-4:1"
    )
  kind, *args = (p.strip() for p in body.split(':'))
  cls = _kind_class(kind, f'spec item {item!r}')
  want = 1 if cls in (Choice, Fixed) else 2
  if len(args) != want:
    raise SpaceError(
      f'spec item {item!r} gives {len(args)} argument(s) to {kind!r}; '
      f'expected {name}={_FORMS[kind]}'
    )
  raw = args[0].split('|') if cls is Choice else args
  values = [_parse_scalar(v.strip()) for v in raw]
  if any(v == '' for v in values):
    raise SpaceError(f'spec item {item!r} has an empty value; expected {name}={_FORMS[kind]}')
  if want == 2:
    bad = [a for a, v in zip(args, values, strict=True) if isinstance(v, bool | str)]
    if bad:
      raise SpaceError(
        f'spec item {item!r} has non-numeric bound {bad[0]!r}; expected '
        f'{name}={_FORMS[kind]} with numbers'
      )
  try:
    if cls is Choice:
      return name, Choice(tuple(values))
    return name, cls(*values)
  except SpaceError as e:
    raise SpaceError(f'spec item {item!r}: {e}') from None


def parse_spec(text: str) -> Space:
  """Parses ``NAME=KIND:ARGS,...`` into a validated `Space`.

  Args:
    text: the spec, e.g. ``"learning_rate=log:1e-4:1,num_layers=int:2:4"``.

  Returns:
    The `Space`, names in the order written.

  Raises:
    SpaceError: one line quoting the bad item and the expected form.
  """
  if not isinstance(text, str) or not text.strip():
    raise SpaceError(f'empty space spec {text!r}; expected NAME=KIND:ARGS[,...], e.g. {_EXAMPLE}')
  dists: dict[str, Distribution] = {}
  for raw in text.split(','):
    item = raw.strip()
    if not item:
      raise SpaceError(
        f'spec {text!r} has an empty item (stray comma?); expected NAME=KIND:ARGS[,...]'
      )
    name, dist = _parse_item(item)
    if name in dists:
      raise SpaceError(f'spec item {item!r} repeats name {name!r}; give each name once')
    try:
      Space({name: dist})  # validate here so the message can quote the item
    except SpaceError as e:
      raise SpaceError(f'spec item {item!r}: {e}') from None
    dists[name] = dist
  return Space(dists)


def _dist_from_json(entry: Any) -> Distribution:
  if not isinstance(entry, Mapping):
    if isinstance(entry, list):
      raise SpaceError(
        f'a plain list is ambiguous; got {entry!r}; write '
        f'{{"kind": "choice", "values": {json.dumps(entry)}}}'
      )
    return Fixed(entry)
  fields = dict(entry)
  cls = _kind_class(fields.pop('kind', None), 'entry')
  keys = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
  if set(fields) != set(keys):
    raise SpaceError(
      f"kind {cls.kind!r} takes keys {', '.join(keys)} (plus 'kind'); got "
      f'{", ".join(sorted(fields)) or "none"}'
    )
  return cls(**fields)


def space_from_json(obj: Any) -> Space:
  """Builds a `Space` from a decoded JSON object (see `load_space` for the format)."""
  if not isinstance(obj, Mapping):
    raise SpaceError(f'a JSON space must be an object {{"name": ...}}; got {type(obj).__name__}')
  dists = {}
  for name, entry in obj.items():
    try:
      dists[name] = _dist_from_json(entry)
      Space({name: dists[name]})
    except SpaceError as e:
      raise SpaceError(f'JSON entry {name!r}: {e}') from None
  return Space(dists)


def load_space(path_or_spec: str | os.PathLike) -> Space:
  """Reads a space from a ``.json`` file, or else parses the argument as a spec string.

  The JSON object maps each name to ``{"kind": "log", "low": 1e-4, "high": 1}``,
  ``{"kind": "choice", "values": [...]}``, ``{"kind": "fixed", "value": v}`` or a plain
  value (meaning fixed), as written by `Space.to_json`.
  """
  text = os.fspath(path_or_spec)
  if text.strip().lower().endswith('.json'):
    path = pathlib.Path(text.strip())
    if not path.is_file():
      raise SpaceError(
        f'space file {text!r} does not exist; pass an existing .json file '
        f'or a spec such as {_EXAMPLE}'
      )
    try:
      obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise SpaceError(
        f'space file {text!r} is not valid JSON ({e.msg} at line {e.lineno}); fix the file'
      ) from None
    return space_from_json(obj)
  return parse_spec(text)


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

"""Writing spaces down: the ``--space`` string grammar and JSON files.

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
import re
from collections.abc import Mapping
from typing import Any

from bnjax.space._distributions import KINDS, Choice, Distribution, Fixed
from bnjax.space._scalars import SpaceError, parse_scalar
from bnjax.space._space import Space

_FORMS = {k: f'{k}:LOW:HIGH' for k in KINDS} | {'choice': 'choice:A|B|C', 'fixed': 'fixed:V'}
_EXAMPLE = 'learning_rate=log:1e-4:1,beta1=1mlog:0.9:0.999'


def _kind_class(kind: Any, where: str) -> type[Distribution]:
  if isinstance(kind, str) and kind in KINDS:
    return KINDS[kind]
  close = difflib.get_close_matches(str(kind), list(KINDS), n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  raise SpaceError(f'{where} has unknown kind {kind!r}{hint}; kinds: {", ".join(KINDS)}')


def _validated(where: str, name: str, dist: Distribution) -> Distribution:
  """`dist` if `name` admits it; else a `SpaceError` that quotes `where`."""
  try:
    Space({name: dist})
  except SpaceError as e:
    raise SpaceError(f'{where}: {e}') from None
  return dist


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
  if not re.fullmatch(r'\w+', name):
    raise SpaceError(
      f'spec item {item!r} has name {name!r}; a name is letters, digits and underscores, '
      'e.g. learning_rate'
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
  values = [parse_scalar(v.strip()) for v in raw]
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
    dists[name] = _validated(f'spec item {item!r}', name, dist)
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
    where = f'JSON entry {name!r}'
    try:
      dist = _dist_from_json(entry)
    except SpaceError as e:
      raise SpaceError(f'{where}: {e}') from None
    dists[name] = _validated(where, name, dist)
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
    try:
      exists = path.is_file()
      source = path.read_text(encoding='utf-8') if exists else ''
    except (OSError, UnicodeDecodeError) as e:
      reason = e.strerror if isinstance(e, OSError) else 'not UTF-8 text'
      raise SpaceError(
        f'cannot read space file {text!r} ({reason}); pass a readable .json file'
      ) from None
    if not exists:
      raise SpaceError(
        f'space file {text!r} does not exist; pass an existing .json file '
        f'or a spec such as {_EXAMPLE}'
      )
    try:
      obj = json.loads(source)
    except json.JSONDecodeError as e:
      raise SpaceError(
        f'space file {text!r} is not valid JSON ({e.msg} at line {e.lineno}); fix the file'
      ) from None
    except RecursionError:
      raise SpaceError(
        f'space file {text!r} nests too deeply to be a space; fix the file'
      ) from None
    return space_from_json(obj)
  return parse_spec(text)


def as_space(space: Space | dict | str | os.PathLike) -> Space:
  """A `Space` from a `Space`, a dict, a spec string or a JSON file path."""
  if isinstance(space, Space):
    return space
  if isinstance(space, dict):
    return Space(space)
  return load_space(space)

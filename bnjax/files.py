"""Writing results so that a crash or a full disk never leaves a half-written file.

Every output goes to a temporary file in the same directory and is then moved
into place with `os.replace`, which is atomic on POSIX and Windows: a reader
sees the old file or the new one, never a mix. JSON is written strictly:
NaN and infinities become `null`, which every parser accepts.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import numpy as np


class OutputError(OSError):
  """An output directory that cannot be used (one-line message)."""


def check_output_dir(path: str | os.PathLike) -> str:
  """Creates `path` if needed and checks that files can be written there; returns it.

  Call it before any compute, so that a bad `--output_dir` costs nothing.
  """
  path = os.fspath(path)
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputError(f'output directory {path!r} is a file; choose another --output_dir')
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as error:
    raise OutputError(
      f'cannot write to output directory {path!r} ({error.strerror or error}); '
      'choose another --output_dir'
    ) from None
  return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = 'w', **kwargs) -> Iterator[IO[Any]]:
  """`open(path, mode)` whose file appears at `path` only once it is complete."""
  path = os.fspath(path)
  directory = os.path.dirname(path) or '.'
  fd, temporary = tempfile.mkstemp(dir=directory, prefix=f'.{os.path.basename(path)}.')
  try:
    with os.fdopen(fd, mode, **kwargs) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(temporary)
    raise


def json_safe(value: Any) -> Any:
  """`value` with numpy scalars as Python ones and NaN/inf as None, recursively."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, list | tuple):
    return [json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return json_safe(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def write_json(path: str | os.PathLike, payload: Any) -> str:
  """Writes `payload` as strict JSON (no NaN), atomically; returns the path."""
  with atomic_open(path) as f:
    json.dump(json_safe(payload), f, indent=2, allow_nan=False)
    f.write('\n')
  return os.fspath(path)

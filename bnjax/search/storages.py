"""Where a study is kept: a journal file by default, or any Optuna storage URL.

`open_storage` opens a journal in the output directory (repairing a last
line cut short by a kill), a `.journal` path, or an Optuna storage URL
(PostgreSQL, SQLite; workers that create an empty database's tables at the
same moment retry). Every failure is one `LedgerError` line that names the
fix, with the URL's password left out (`redacted`).
"""

import contextlib
import os
import random
import time

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock

from bnjax.search.ledger import LedgerError

JOURNAL_FILE = 'study.journal'


def open_storage(storage: str | None, output_dir: str | os.PathLike | None):
  """The Optuna storage: a URL, a `.journal` path, None (the output dir's journal, or memory)."""
  if storage is None and output_dir is None:
    return optuna.storages.InMemoryStorage()
  if storage is None or str(storage).endswith('.journal'):
    path = os.fspath(storage or os.path.join(output_dir, JOURNAL_FILE))
    try:
      if storage is None:
        os.makedirs(output_dir, exist_ok=True)
      _repair_journal(path)
      return optuna.storages.JournalStorage(JournalFileBackend(path))
    except OSError as error:
      raise LedgerError(f'cannot open the journal {path!r} ({error.strerror or error})') from None
  if '://' not in str(storage):
    raise LedgerError(
      f'--storage {storage!r} is neither a URL nor a .journal file; e.g. '
      'postgresql+psycopg://user@host/db, sqlite:///study.db or runs/x/study.journal'
    )
  for attempt in range(5):
    try:
      return optuna.storages.RDBStorage(str(storage))
    except ImportError as error:
      raise LedgerError(
        f'--storage {redacted(storage)} needs a driver: {error}; for PostgreSQL: '
        "pip install 'bnjax[postgres]'"
      ) from None
    except Exception as error:  # noqa: BLE001 (sqlalchemy's many errors, one line each)
      # Workers that create the tables of an empty database at the same moment collide
      # on its unique names: the losers retry and find the tables made.
      if attempt < 4 and 'unique' in str(error).lower():
        time.sleep(0.2 + random.random())
        continue
      reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
      raise LedgerError(
        f'cannot open --storage {redacted(storage)}: {reason[:200]}; check the URL and '
        'that the server is up'
      ) from None
  raise AssertionError('unreachable')


def check_storage(storage: str | None) -> None:
  """Opens `storage` (a URL or .journal path) once: a bad one fails here, before any compute."""
  if storage is not None:
    backend = open_storage(storage, None)
    if hasattr(backend, 'engine'):
      backend.engine.dispose()


def redacted(url: str) -> str:
  """`url` without its password."""
  head, sep, tail = str(url).partition('://')
  if '@' in tail and ':' in tail.split('@', 1)[0]:
    user = tail.split('@', 1)[0].split(':', 1)[0]
    tail = f'{user}:***@{tail.split("@", 1)[1]}'
  return head + sep + tail


def _repair_journal(path: str) -> None:
  """Drops a last line cut short (a process killed while appending); the rest stays."""
  if not os.path.exists(path) or os.path.getsize(path) == 0:
    return
  with open(path, 'rb') as f:
    f.seek(-1, os.SEEK_END)
    if f.read(1) == b'\n':
      return
  lock = JournalFileSymlinkLock(path)
  with contextlib.ExitStack() as stack:
    if lock.acquire():
      stack.callback(lock.release)
    with open(path, 'rb+') as f:
      data = f.read()
      f.truncate(data.rfind(b'\n') + 1)

"""The ledger of one population that spans processes: process 0's on disk, a replica elsewhere.

Every process runs the same study driver (`study.run_study`) over the same
ledger, so every decision (which round, which chunk to claim or skip, which
trials Hyperband keeps) is taken the same everywhere without a message. The
ledger on disk is process 0's; the others start from a copy of its journal,
sent over the runtime (`distributed.broadcast_bytes`), and then apply the
same writes to it, since every process sees the same metrics
(`distributed.fetch`). A replica lives in a temporary directory and goes
when its process ends; nothing of it is an output.
"""

import atexit
import json
import os
import shutil
import tempfile

import optuna
from optuna.storages.journal import JournalFileBackend

from bnjax import distributed
from bnjax.search import ledger, storages


def open_storage(storage: str | None, output_dir: str | os.PathLike | None):
  """`storages.open_storage` on process 0; a replica of its journal on every other process.

  Raises:
    LedgerError: a shared storage (`--storage`) with several processes.
  """
  if not distributed.is_multiprocess():
    return storages.open_storage(storage, output_dir)
  if storage is not None:
    raise ledger.LedgerError(
      '--storage with several processes: one population across processes keeps its ledger '
      "in process 0's --output_dir; a shared storage is for independent workers, one process "
      'each (drop --storage, or start the workers without --num_processes)'
    )
  if output_dir is None:
    return optuna.storages.InMemoryStorage()  # every process builds the same one
  if distributed.is_writer():
    backend = storages.open_storage(None, output_dir)
    with open(os.path.join(output_dir, storages.JOURNAL_FILE), 'rb') as f:
      distributed.broadcast_bytes(f.read())
    return backend
  directory = tempfile.mkdtemp(prefix='bnjax-replica-')
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  path = os.path.join(directory, storages.JOURNAL_FILE)
  with open(path, 'wb') as f:
    f.write(distributed.broadcast_bytes(None))
  return optuna.storages.JournalStorage(JournalFileBackend(path))


def check_same_settings(settings: dict) -> None:
  """Every process must search the same data, space and options, or their ledgers would part."""
  text = json.dumps(settings, sort_keys=True, default=str).encode()
  distributed.check_same('search settings (data, space, seed or options)', text)


def output_dir_here(output_dir: str | None) -> str | None:
  """`output_dir` on process 0; None elsewhere, so no other process locks or writes there."""
  return output_dir if distributed.is_writer() else None

"""The top-k candidates on disk, so that the test-once survives a crash and a resume.

Persisting, not retraining: a trial retrained in another chunk shape agrees
with the original only to float32 rounding (XLA sums in another order), so
its test accuracy could move; the saved params give the number the
uninterrupted search would have given, bit for bit, and cost one small
file per trial that ever entered the top k (`trial_<id>.msgpack`: params,
BN statistics, traced hyperparameters and the bucket's `TrainConfig`, via
`flax.serialization`, written atomically).

Order makes it safe: a chunk's new candidates are written before its trials
are told to the ledger, and a file is deleted only once its trial is told
and out of the top k. So every told trial in the top k has its file,
whenever the process dies. A file missing anyway (another worker's, on
another machine; a top k raised on resume) is retrained by the caller.
"""

import json
import os

import jax
import numpy as np
from flax import serialization

from bnjax import files
from bnjax.search.results import rank_key
from bnjax.search.top_k import Candidate
from bnjax.training import TrainConfig


class CandidateStore:
  """The best `k` candidates of a study: in `directory`, or in memory when it is None."""

  def __init__(self, directory: str | None, k: int, *, clean: bool = False):
    self.directory, self.k = directory, k
    self.memory: dict[int, Candidate] = {}
    self.ranks: dict[int, tuple] = {}  # trial id -> rank_key, of the told trials known here
    if directory is not None:
      os.makedirs(directory, exist_ok=True)
      for name in os.listdir(directory) if clean else ():  # a killed process's temporary files
        if name.startswith('.trial_'):
          os.unlink(os.path.join(directory, name))

  def know(self, rows: list[dict]) -> None:
    """Adds told trials' rows (`trial_id`, `status`, `dev_accuracy`, `dev_loss`) to the ranking."""
    for row in rows:
      self.ranks[int(row['trial_id'])] = rank_key(row)

  def top(self, extra: list[dict] = ()) -> list[int]:
    """The ids of the best `k`, of the known rows and `extra`, best first."""
    ranks = {**self.ranks, **{int(row['trial_id']): rank_key(row) for row in extra}}
    return sorted(ranks, key=ranks.__getitem__)[: self.k]

  def add(self, candidates: list[Candidate]) -> None:
    """Keeps the candidates that enter the top k (call before telling their trials)."""
    top = set(self.top([c.row for c in candidates]))
    for candidate in candidates:
      trial_id = int(candidate.row['trial_id'])
      if trial_id in top:
        self._put(trial_id, candidate)

  def prune(self) -> None:
    """Drops the kept candidates of told trials that left the top k."""
    top = set(self.top())
    for trial_id in self.kept():
      if trial_id in self.ranks and trial_id not in top:
        self.memory.pop(trial_id, None)
        if self.directory is not None:
          os.unlink(self._path(trial_id))

  def kept(self) -> list[int]:
    if self.directory is None:
      return list(self.memory)
    names = os.listdir(self.directory)
    return [int(n[6:-8]) for n in names if n.startswith('trial_') and n.endswith('.msgpack')]

  def get(self, trial_id: int) -> Candidate | None:
    if self.directory is None:
      return self.memory.get(trial_id)
    path = self._path(trial_id)
    if not os.path.exists(path):
      return None
    with open(path, 'rb') as f:
      return decode(f.read())

  def _put(self, trial_id: int, candidate: Candidate) -> None:
    if self.directory is None:
      self.memory[trial_id] = candidate
      return
    with files.atomic_open(self._path(trial_id), 'wb') as f:
      f.write(encode(candidate))

  def _path(self, trial_id: int) -> str:
    return os.path.join(self.directory, f'trial_{trial_id}.msgpack')


def encode(candidate: Candidate) -> bytes:
  """A candidate as msgpack bytes (arrays exact; row and config as JSON)."""
  meta = {'row': files.json_safe(candidate.row), 'config': candidate.config._asdict()}
  arrays = jax.tree.map(np.asarray, (candidate.hp, candidate.params, candidate.model_state))
  return serialization.msgpack_serialize(
    {
      'meta': json.dumps(meta),
      'hp': arrays[0],
      'params': serialization.to_state_dict(arrays[1]),
      'model_state': serialization.to_state_dict(arrays[2]),
    }
  )


def decode(data: bytes) -> Candidate:
  """The inverse of `encode`."""
  payload = serialization.msgpack_restore(data)
  meta = json.loads(payload['meta'])
  # JSON gives lists; the config's tuples keep it hashable (a static jit argument).
  config = TrainConfig(
    **{k: tuple(v) if isinstance(v, list) else v for k, v in meta['config'].items()}
  )
  row = {k: np.nan if v is None and k != 'trial_id' else v for k, v in meta['row'].items()}
  return Candidate(
    row, config, payload['hp'], _lists(payload['params']), _lists(payload['model_state'])
  )


def _lists(tree):
  """Undoes `to_state_dict`'s lists as {'0': ..., '1': ...} (params hold no digit-named keys)."""
  if not isinstance(tree, dict):
    return tree
  if tree and all(key.isdigit() for key in tree):
    return [_lists(tree[str(i)]) for i in range(len(tree))]
  return {key: _lists(value) for key, value in tree.items()}

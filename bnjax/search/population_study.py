"""Adaptive searches that survive: the ledger, the population checkpoint and the test once.

Hyperband (`successive_halving.hyperband`) and population-based training
(`pbt.pbt`) train populations in lockstep and decide between segments, so
they cannot run as `study.run_study`'s rounds of independent trials. A
`PopulationStudy` gives them the same guarantees:

* the ledger (`ledger`): a journal in the output directory (or any storage,
  or memory), the search's configuration checked on resume, every trial
  made with its number as its id (`create`), and told as it stops (`tell`):
  COMPLETE, FAIL (diverged) or PRUNED, with its epochs, curves and dev
  accuracy per epoch as intermediate values, and its extra attributes;
* the population checkpoint (`save`, `restore`): the cohorts in flight and
  where the driver stands, one msgpack file in the output directory
  (`CHECKPOINT_FILE`), replaced atomically at each decision (rung,
  generation) and, inside a long rung, at segment boundaries when the time
  trained since the last write is at least `SAVE_RATIO` times what that
  write cost (so checkpoints cost under 1 / SAVE_RATIO of the training time).
  After `kill -9`, rerunning the same search restores it and goes on from
  there; since `k` segments equal one run bitwise and a trial's numbers do
  not depend on its neighbours, the result is the uninterrupted one's;
* the top-k candidates (`candidates.CandidateStore`): a finished trial's
  params are written before it is told and dropped once it leaves the top
  k, and the test split is read once, at the end, for the top k
  (`rounds.test_once`).

Order makes a crash at any point safe: candidates before the tell, the tell
before the checkpoint. A resume replays from the last checkpoint; telling a
trial told before the crash again is a no-op.

`BNJAX_CRASH_AT` (tests only; see `study`): `saved<n>` and `told<n>` kill
the process right after its n-th checkpoint or tell (from 0), `test` before
the test split is read.

One process drives a study: with the default journal the output directory
is locked; with a shared `storage`, run one process per `study_name`. Where
several processes run one population (`bnjax.distributed`), they drive it
together as the engine's studies do (`hosts`): process 0 locks and writes the
output directory, the others keep a replica of its ledger; every process
gathers the same arrays for a checkpoint, process 0 alone writes it, and a
resume sends process 0's file to every process (no shared disk needed).
Inside a rung they checkpoint only at decisions, since a timing-based choice
could differ between processes.
"""

import contextlib
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
from flax import serialization
from optuna.trial import TrialState

from bnjax import distributed, files
from bnjax.data import Splits
from bnjax.search import checkpoints, hosts, ledger
from bnjax.search.candidates import CandidateStore
from bnjax.search.cohorts import Cohort
from bnjax.search.results import Results
from bnjax.search.rounds import crash_point, test_once
from bnjax.search.workers import directory_lock
from bnjax.space import Space

CHECKPOINT_FILE = 'population.msgpack'
# Checkpoints inside a rung wait until training since the last one took this
# many times what the last one cost: they stay under 5% of the training time.
SAVE_RATIO = 20
DONE = 'bnjax_done'  # study user attribute: every trial is told


class PopulationStudy:
  """One adaptive search's ledger, checkpoint and candidates (use as a context manager).

  Args:
    space: the searched space.
    splits: the data (its fingerprint joins the configuration).
    config: the strategy's settings; a resume must match them.
    output_dir: the journal, the checkpoint and the candidates; None: memory only.
    storage, study_name: an Optuna storage instead of the output directory's journal.
    top_k: how many candidates to keep for the test.
    report: called with one-line messages (resume).
  """

  def __init__(
    self,
    space: Space,
    splits: Splits,
    *,
    config: dict,
    output_dir: str | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    top_k: int = 5,
    report: Callable[[str], None] | None = None,
  ):
    self.space, self.splits, self.top_k = space, splits, top_k
    self.output_dir = None if output_dir is None else os.fspath(output_dir)
    # Process 0's directory; None on the others, which write nothing.
    self.written = hosts.output_dir_here(self.output_dir)
    self.storage_url, self.study_name = storage, study_name
    self.config = {**config, **ledger.fingerprint(splits), 'space': space.to_spec()}
    self.say = report or (lambda message: None)
    self.checkpoint_seconds, self.checkpoints, self.tells = 0.0, 0, 0
    self._last_save, self._last_cost, self._last_members = time.perf_counter(), None, 1
    self._stack = contextlib.ExitStack()

  def __enter__(self) -> 'PopulationStudy':
    if self.written is not None and self.storage_url is None:
      self._stack.enter_context(directory_lock(self.written))
    backend = hosts.open_storage(self.storage_url, self.output_dir)
    hosts.check_same_settings(self.config)
    self.study, created = ledger.open_study(backend, self.study_name, self.config)
    self.storage = self.study._storage  # RDB storages come wrapped in Optuna's cache
    where = None if self.written is None else os.path.join(self.written, 'candidates')
    self.store = CandidateStore(where, self.top_k, clean=self.written is not None)
    told = [t for t in ledger.ours(self.study.get_trials(deepcopy=False)) if ledger.metrics(t)]
    self.store.know([{'trial_id': t.number, **ledger.metrics(t)} for t in told])
    self.resumed = None if created else self._checkpoint_meta()
    if not created:
      stage = 'done' if self.done else f'from {self._describe(self.resumed)}'
      self.say(f'resuming study {self.study.study_name!r}: {len(told)} trials told, {stage}')
    return self

  def __exit__(self, *exc) -> None:
    self._stack.close()

  @property
  def done(self) -> bool:
    return bool(self.study.user_attrs.get(DONE))

  # ---------------------------------------------------------------------------- trials

  def create(self, table: dict, trial_ids: np.ndarray, round_index: int) -> None:
    """Makes trials `trial_ids` (contiguous, next in line) of `table`'s rows, RUNNING.

    Trials that exist already (a resume) are kept as they are.
    """
    trial_ids = np.asarray(trial_ids)
    have = len(self.study.get_trials(deepcopy=False))
    first = int(trial_ids[0])
    if have < first:
      raise AssertionError(f'trials {have}..{first - 1} were never made')
    rows = [{name: column[i] for name, column in table.items()} for i in range(len(trial_ids))]
    ledger.enqueue(self.study, self.space, rows[have - first :], round_index, max(have, first))
    numbers = ledger.trial_ids(self.storage, self.study._study_id, trial_ids.tolist())
    for number in trial_ids.tolist():
      if self.storage.get_trial(numbers[number]).state == TrialState.WAITING:
        self.storage.set_trial_state_values(numbers[number], TrialState.RUNNING)

  def tell(
    self, rows: Sequence[dict], curves: Sequence[dict], attrs: Sequence[dict], candidates=()
  ):
    """Tells stopped trials (rows from `cohorts.row_of`), their finished candidates first."""
    self.store.add(list(candidates))
    numbers = ledger.trial_ids(self.storage, self.study._study_id, [r['trial_id'] for r in rows])
    for row, curve, extra in zip(rows, curves, attrs, strict=True):
      number = row['trial_id']
      ledger.record(
        self.study,
        self.storage,
        numbers[number],
        number,
        row,
        curve,
        attrs=extra,
        intermediate=True,
      )
    self.store.know(list(rows))
    self.store.prune()
    crash_point(f'told{self.tells}')
    self.tells += 1

  def set_attrs(self, trial_attrs: dict[int, dict]) -> None:
    """Sets user attributes of running trials (e.g. lineage at each exploit)."""
    numbers = ledger.trial_ids(self.storage, self.study._study_id, list(trial_attrs))
    for number, attrs in trial_attrs.items():
      for name, value in attrs.items():
        self.storage.set_trial_user_attr(numbers[number], name, value)

  # ---------------------------------------------------------------------------- checkpoints

  @property
  def checkpoint_path(self) -> str | None:
    return None if self.output_dir is None else os.path.join(self.output_dir, CHECKPOINT_FILE)

  def save(self, cohorts: Sequence[Cohort], meta: dict, *, decision: bool = True) -> None:
    """Checkpoints the cohorts in flight and `meta`, atomically (nothing without an output dir).

    `decision` False (a segment boundary inside a rung): only when training
    since the last checkpoint took `SAVE_RATIO` times its estimated cost.
    """
    if self.checkpoint_path is None or (not decision and distributed.is_multiprocess()):
      return
    members = max(1, sum(len(c.trial_ids) for c in cohorts))
    if not decision and self._last_cost is not None:
      estimate = self._last_cost * members / self._last_members
      if time.perf_counter() - self._last_save < SAVE_RATIO * estimate:
        return
    start = time.perf_counter()
    tree = [
      {'ids': c.trial_ids, 'filler': c.filler, 'hp': c.hp, 'state': c.state, 'curves': c.curves}
      for c in cohorts
    ]
    meta = {**meta, 'buckets': [int(c.bucket) for c in cohorts]}
    blob = checkpoints.population_bytes(tree, meta)  # every process gathers; process 0 writes
    if distributed.is_writer():
      with files.atomic_open(self.checkpoint_path, 'wb') as f:
        f.write(blob)
    end = time.perf_counter()
    self._last_cost, self._last_members, self._last_save = end - start, members, end
    self.checkpoint_seconds += end - start
    self.checkpoints += 1
    crash_point(f'saved{self.checkpoints - 1}')

  def restore(self, templates: Sequence[Cohort], sharding=None) -> list[Cohort]:
    """The checkpoint's cohorts, each shaped like `templates`' first cohort of its bucket."""
    by_bucket = {}
    for cohort in templates:
      by_bucket.setdefault(cohort.bucket, cohort)
    like = [
      {'ids': c.trial_ids, 'filler': c.filler, 'hp': c.hp, 'state': c.state, 'curves': c.curves}
      for c in (by_bucket[b] for b in self.resumed['buckets'])
    ]
    tree, _ = checkpoints.read_population(self._checkpoint_bytes(), like, name=self.checkpoint_path)
    out = []
    for bucket, saved in zip(self.resumed['buckets'], tree, strict=True):
      hp, state = saved['hp'], saved['state']
      if sharding is not None:
        hp, state = distributed.put((hp, state), sharding)
      curves = {name: np.asarray(curve, np.float32) for name, curve in saved['curves'].items()}
      out.append(
        Cohort(
          bucket,
          by_bucket[bucket].config,
          np.asarray(saved['ids'], np.int64),
          np.asarray(saved['filler'], bool),
          hp,
          state,
          curves,
        )
      )
    return out

  def _checkpoint_bytes(self) -> bytes:
    """Process 0's checkpoint file on every process; empty where it has none."""
    blob = None
    if distributed.is_writer():
      path = self.checkpoint_path
      blob = b''
      if path is not None and os.path.exists(path):
        with open(path, 'rb') as f:
          blob = f.read()
    return distributed.broadcast_bytes(blob)

  def _checkpoint_meta(self) -> dict | None:
    if self.checkpoint_path is None or self.done:
      return None
    blob = self._checkpoint_bytes()
    return serialization.msgpack_restore(blob)['meta'] if blob else None

  @staticmethod
  def _describe(meta: dict | None) -> str:
    if meta is None:
      return 'the start (no checkpoint)'
    return 'the last checkpoint: ' + ', '.join(
      f'{k} {v}' for k, v in meta.items() if isinstance(v, int | np.integer)
    )

  # ---------------------------------------------------------------------------- the end

  def finish(self, *, test: bool) -> None:
    """Marks the study done, drops the checkpoint, tests the top k once (if `test`)."""
    if not self.done:
      self.study.set_user_attr(DONE, True)
    if self.written is not None and os.path.exists(self.checkpoint_path):
      os.unlink(self.checkpoint_path)
    if test and distributed.is_writer():  # on its own devices, as the engine's studies do
      test_once(self.study, self.splits, self.store, self.top_k)

  def results(self, info: dict) -> Results:
    results = Results.from_study(self.study)
    results.info = {
      **info,
      'checkpoints': self.checkpoints,
      'checkpoint_seconds': self.checkpoint_seconds,
      'study': self.study.study_name,
    }
    return results

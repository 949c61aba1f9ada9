"""One process's work on a study's rounds, and the test at the end.

A strategy says what its next round is (`Round`); `study.run_study` drives
the rounds and hands each to a `StudyRun`, which creates the round's trials
in the ledger (enqueued from a table, or asked of the study's sampler),
trains them as one `run_trials` call with their trial numbers as ids,
claiming each chunk before it runs and telling its trials right after, and
keeps the top-k candidates on disk. `test_once` tests the top k once and
records it in the study.

`crash_point` kills the process at a named point when `BNJAX_CRASH_AT` says
so: `chunk<n>:claimed`, `chunk<n>:segment<m>` (once segment m's checkpoint
is saved), `chunk<n>:told` (the n-th chunk this process runs, from 0) or
`test`, so that tests can crash a search where they choose.
"""

import math
import os
import signal
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np
from optuna.trial import FrozenTrial, TrialState

from bnjax.data import Splits
from bnjax.search import ledger
from bnjax.search.candidates import CandidateStore
from bnjax.search.engine import run_trials
from bnjax.search.planning import plan_options, round_configs
from bnjax.search.results import Results
from bnjax.search.segments import InFlight
from bnjax.search.top_k import test_top_k
from bnjax.search.workers import Worker
from bnjax.training import TrainConfig

# A study's `bucket_plan` where each round may take the programs its earlier
# rounds compiled (`StudyRun.reusable`); a study planned round by round on its
# own cannot be resumed with it (`ledger.PLANS`).
REUSE_ROUNDS = 'reuse_earlier_rounds'


class Round(NamedTuple):
  """What a strategy adds next: a table to enqueue, or trials to ask the sampler for."""

  table: dict[str, np.ndarray] | None = None  # name -> [trials] user-facing values
  first_row: int = 0  # the table's first row in the strategy's stream (keys duplicates)
  ask: int = 0


class StudyRun:
  """One process's work on a study: rounds created and trained, the test once."""

  def __init__(self, study, space, splits, *, engine, store, progress):
    self.study, self.space, self.splits, self.engine = study, space, splits, engine
    self.store, self.progress = store, progress
    self.worker: Worker | None = None
    self.in_flight: InFlight | None = None
    self.info = {'buckets': 0, 'compiles': 0, 'chunks': 0, 'devices': 0, 'segments': 0}
    # Chunks run here: claimed, told, and claimed before this round's (crash-point
    # names: with chunks side by side the next is claimed before the last is told).
    self.chunks_claimed = self.chunks_run = self.chunks_before = 0
    self.done = 0
    self.to_do = 0
    # Per round from 0: the bucket configs it and the rounds before it planned.
    self.planned: list[tuple[TrainConfig, ...]] = []

  def create(self, step: Round, round_index: int) -> list[int]:
    """Adds the round's trials; returns the numbers of those asked of the sampler."""
    if step.table is not None:
      names = list(step.table)
      rows = [
        {name: step.table[name][i] for name in names}
        for i in range(len(next(iter(step.table.values()))))
      ]
      ledger.enqueue(self.study, self.space, rows, round_index, step.first_row)
      return []
    dists, asked = ledger.distributions(self.space), []
    for _ in range(step.ask):
      trial = self.study.ask(dists)
      asked.append(trial.number)
      self.worker.hold([trial.number])
      if ledger.ROUND not in trial.user_attrs:
        for name, value in self._exact(trial.params).items():
          trial.set_user_attr(name, value)
        trial.set_user_attr(ledger.ROUND, round_index)
    return asked

  def drop(self, trials: Sequence[FrozenTrial]) -> None:
    """Fails waiting duplicates (rows two workers both made), so that none runs."""
    for trial in trials:
      if trial.state == TrialState.WAITING and self.worker.claim([trial.number]):
        trial_id = self.worker.trial_id(trial.number)
        self.worker.storage.set_trial_user_attr(trial_id, 'duplicate', True)
        self.study.tell(trial.number, state=TrialState.FAIL)
        self.worker.done([trial.number])

  def _exact(self, params: dict) -> dict:
    """The user-facing value of each 1mlog name from its `one_minus_` parameter."""
    return {
      name: 1.0 - params[ledger.optuna_name(name, self.space)]
      for name, dist in self.space.items()
      if dist.kind == '1mlog'
    }

  def _table(self, trials: Sequence[FrozenTrial]) -> dict[str, np.ndarray]:
    values = [ledger.values(self.space, t) for t in trials]
    return {name: np.asarray([v[name] for v in values]) for name in self.space}

  def reusable(self, round_index: int) -> tuple[TrainConfig, ...]:
    """The bucket configs that the study's rounds before `round_index` planned.

    Replanned from the ledger, round after round, each with the configs
    before it (`planning.round_configs`), not read off what this process
    compiled: a study resumed in another process plans a round as the
    uninterrupted one did, and so trains it to the same numbers.
    """
    # The ledger is read only where a round is still to be replanned.
    to_plan = len(self.planned) < round_index
    trials = ledger.ours(self.study.get_trials(deepcopy=False)) if to_plan else []
    for made_in in range(len(self.planned), round_index):
      earlier = self.planned[-1] if self.planned else ()
      made = [t for t in trials if t.user_attrs[ledger.ROUND] == made_in]
      if made:
        options = plan_options(self.engine)
        earlier = round_configs(self._table(made), self.splits, reuse=earlier, **options)
      self.planned.append(earlier)
    return self.planned[round_index - 1] if round_index else ()

  def train(self, trials: Sequence[FrozenTrial]) -> None:
    """Trains a round's trials that are free, planned as the whole round."""
    numbers = [t.number for t in trials]
    table = self._table(trials)
    held: set[int] = set()
    self.chunks_before = self.chunks_claimed

    def claim(ids: np.ndarray) -> bool:
      got = self.worker.claim([int(i) for i in ids])
      held.update(got)
      crash_point(f'chunk{self.chunks_claimed}:claimed')
      self.chunks_claimed += bool(got)
      return bool(got)

    def on_chunk(rows: list[dict], curves: list[dict], best: list) -> None:
      mine = [
        (row, curve) for row, curve in zip(rows, curves, strict=True) if row['trial_id'] in held
      ]
      ids = {row['trial_id'] for row, _ in mine}
      self.store.add([c for c in best if c.row['trial_id'] in ids])
      for row, curve in mine:
        number = row['trial_id']
        self.worker.storage.set_trial_user_attr(
          self.worker.trial_id(number), 'chunk_size', row['chunk_size']
        )
        ledger.record(
          self.study, self.worker.storage, self.worker.trial_id(number), number, row, curve
        )
      self.worker.done(ids)
      self.store.know([row for row, _ in mine])
      self.store.prune()
      self.done += len(mine)
      if self.progress:
        self.progress(self.done, max(self.to_do, self.done))
      crash_point(f'chunk{self.chunks_run}:told')
      self.chunks_run += 1

    results = run_trials(
      table,
      self.splits,
      space=self.space,
      trial_ids=np.asarray(numbers),
      claim=claim,
      on_chunk=on_chunk,
      in_flight=self.in_flight,
      test=False,
      reuse=self.reusable(trials[0].user_attrs[ledger.ROUND]),
      **self.engine,
    )
    for key in ('buckets', 'compiles'):
      self.info[key] += results.info[key]
    self.info['chunks'] = self.chunks_run  # run here; chunks done already or by others skipped
    self.info['devices'] = results.info['devices']
    self.info['segments'] = results.info['segments']  # per chunk

  def test_once(self) -> None:
    """Tests the top k on the test split, unless this set of trials was tested already."""
    test_once(self.study, self.splits, self.store, self.engine['top_k'], self._retrain)

  def _retrain(self, numbers: list[int]) -> list:
    """Candidates whose params no file holds, trained again from their trial ids."""
    if not numbers:
      return []
    trials = [self.worker.storage.get_trial(self.worker.trial_id(n)) for n in numbers]
    table = self._table(trials)
    # Process 0 tests alone (`run_study`), so it retrains on its own devices.
    options = {
      **self.engine,
      'top_k': len(numbers),
      'devices': self.engine['devices'] or jax.local_devices(),
    }
    results = run_trials(
      table, self.splits, space=self.space, trial_ids=np.asarray(numbers), test=False, **options
    )
    return results.candidates


def test_once(
  study,
  splits: Splits,
  store: CandidateStore,
  k: int,
  retrain: Callable[[list[int]], list] | None = None,
) -> None:
  """Tests the study's top `k` finished trials once, and records it in the study (`TESTED`).

  Nothing happens if this set of trials was tested already (a resume after
  the test). The candidates' params come from `store`; those it lacks from
  `retrain(trial_numbers)` (None: they go untested). `BNJAX_CRASH_AT=test`
  kills the process just before the test split is read.
  """
  view = Results.from_study(study)
  tested = study.user_attrs.get(ledger.TESTED)
  if tested is not None and tested.get('trials') == len(view.rows):
    return
  best = [row['trial_id'] for row in view.ranked() if row['status'] == 'ok'][:k]
  found = {n: store.get(n) for n in best}
  missing = [n for n in best if found[n] is None]
  view.candidates = [c for c in found.values() if c is not None]
  if missing and retrain is not None:
    view.candidates += retrain(missing)
  crash_point('test')
  view = test_top_k(view, splits, k)
  accuracy = {
    str(row['trial_id']): row['test_accuracy']
    for row in view.rows
    if math.isfinite(row['test_accuracy'])
  }
  study.set_user_attr(ledger.TESTED, {'trials': len(view.rows), 'test_accuracy': accuracy})


def crash_point(name: str) -> None:
  """SIGKILLs this process at `name` when `BNJAX_CRASH_AT` says so (tests only)."""
  if os.environ.get('BNJAX_CRASH_AT') == name:
    os.kill(os.getpid(), signal.SIGKILL)

"""Searches that survive: rounds of trials through the ledger, resumed after any crash.

`run_study` drives any strategy. A strategy only says what the next round
is (`Round`: a table of configurations to enqueue, or how many to ask the
study's sampler for); the driver creates the round's trials in the ledger
(`ledger`), trains them as one `run_trials` call with their trial numbers as
ids, claiming each chunk before it runs and telling its trials right after
(`workers`), keeps the top-k candidates on disk (`candidates`), and, once
every trial is told, tests the top k once and records it. Results are a view
of the ledger (`Results.from_study`).

Resume: a round is always planned from all its trials, so its chunks have
the shapes of the first attempt and a chunk whose trials are all told is
skipped. Trials that were RUNNING when their process died go back to
WAITING with their number, and run again with the same key: the same
numbers, bit for bit, on the same machine. Ctrl-C puts the chunks in flight
(two at once on a single CPU device, `overlap`) back to WAITING at once.

With an output directory, a chunk in flight is also saved at each boundary
between its segments of epochs (`segments.InFlight`, in `in_flight/`), so a
`kill -9` loses at most a segment of each: the rerun claims the same chunks
and goes on from their last checkpoints, with the same numbers bit for bit.

`BNJAX_CRASH_AT` (for tests only): `chunk<n>:claimed`, `chunk<n>:segment<m>`
(once segment m's checkpoint is saved), `chunk<n>:told` (the n-th chunk
this process runs, from 0) or `test` makes the process SIGKILL itself there,
so tests can crash a search at a chosen point.
"""

import contextlib
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np
from optuna.trial import FrozenTrial, TrialState

from bnjax import distributed
from bnjax.data import Splits
from bnjax.search import hosts, ledger
from bnjax.search.candidates import CandidateStore
from bnjax.search.engine import run_trials
from bnjax.search.results import Results
from bnjax.search.segments import InFlight
from bnjax.search.top_k import test_top_k
from bnjax.search.workers import Worker, directory_lock
from bnjax.space import Space

IN_FLIGHT = 'in_flight'  # the output directory's folder of chunks in flight (`segments.InFlight`)
WAIT = 'wait'  # a strategy's answer when its next round needs other workers' trials told
POLL_SECONDS = 2.0


class Round(NamedTuple):
  """What a strategy adds next: a table to enqueue, or trials to ask the sampler for."""

  table: dict[str, np.ndarray] | None = None  # name -> [trials] user-facing values
  first_row: int = 0  # the table's first row in the strategy's stream (keys duplicates)
  ask: int = 0


# next_round(study, trials) -> Round | WAIT | None (done): `trials` are the study's, by number.
NextRound = Callable[..., Round | str | None]


def run_study(
  space: Space,
  splits: Splits,
  next_round: NextRound,
  *,
  config: dict,
  budget: int | None = None,
  storage: str | None = None,
  study_name: str | None = None,
  output_dir: str | None = None,
  sampler=None,
  seed: int = 0,
  epochs: int = 20,
  executions_per_trial: int = 1,
  select: str = 'final',
  top_k: int = 5,
  test: bool = True,
  chunk_size: int | None = None,
  devices=None,
  eval_batch_size: int = 1024,
  width_ratio: float | str | None = 'cost',
  segment_epochs: int | None = None,
  concurrent_chunks: int | None = None,
  progress: Callable[[int, int], None] | None = None,
  report: Callable[[str], None] | None = None,
  stale_after: float = 120.0,
) -> Results:
  """Runs a strategy's rounds through the study, resuming whatever is there.

  Args:
    space: the searched space.
    splits: the data.
    next_round: the strategy (see `NextRound`).
    config: the strategy's settings; with the data's fingerprint and the
      engine's settings they are the study's configuration, which a resume
      must match (`ledger.check_config`).
    budget: trials the strategy will make in all (for messages and progress).
    storage: an Optuna storage URL or `.journal` path shared by workers;
      None: `output_dir`'s journal file (one process at a time), or memory.
    study_name: the study in `storage` (default 'bnjax').
    output_dir: where the journal and the top-k candidates live.
    sampler: the study's Optuna sampler (strategies that ask).
    chunk_size: runs per program; None: the study's (a new study records
      None: each bucket's `sizing.chunk_runs`, from the bucket and the devices).
      Each trial records the size of the chunk it ran in (`chunk_size`).
    segment_epochs: epochs between a chunk's checkpoints (`run_trials`); not
      part of the study's configuration: the numbers do not depend on it.
    concurrent_chunks: chunks trained at once (`run_trials`); not part of
      the configuration either.
    progress: `progress(trials_done, trials_to_do)` after each chunk.
    report: called with one-line messages (resume, stop, waiting).
    stale_after: seconds without a heartbeat after which a shared storage's
      worker counts as dead and its trials run again.
    The rest are `run_trials`' options.
  """
  # The default journal is one process's at a time; shared storages have workers.
  exclusive = storage is None
  # Where several processes run one search, process 0 alone locks and writes the directory.
  written = hosts.output_dir_here(output_dir)
  alone = exclusive and written is not None
  with directory_lock(os.fspath(output_dir)) if alone else contextlib.nullcontext():
    say = report or (lambda message: None)
    backend = hosts.open_storage(storage, output_dir)
    settings = dict(
      **config,
      **ledger.fingerprint(splits),
      space=space.to_spec(),
      epochs=epochs,
      executions_per_trial=executions_per_trial,
      select=select,
      seed=seed,
      width_ratio=width_ratio,
      eval_batch_size=eval_batch_size,
      chunk_size=chunk_size,
    )
    hosts.check_same_settings(settings)
    study, created = ledger.open_study(backend, study_name, settings, sampler=sampler)
    stored_chunk = study.user_attrs[ledger.CONFIG].get('chunk_size')
    if chunk_size is not None and stored_chunk not in (None, chunk_size):
      raise ledger.mismatch(study.study_name, 'chunk_size', stored_chunk, chunk_size)
    run = _Run(
      study,
      space,
      splits,
      engine=dict(
        seed=seed,
        epochs=epochs,
        executions_per_trial=executions_per_trial,
        select=select,
        top_k=top_k,
        chunk_size=stored_chunk,
        devices=devices,
        eval_batch_size=eval_batch_size,
        width_ratio=width_ratio,
        segment_epochs=segment_epochs,
        concurrent_chunks=concurrent_chunks,
      ),
      store=CandidateStore(
        os.path.join(written, 'candidates') if written is not None else None,
        top_k,
        clean=alone,
      ),
      progress=progress,
    )
    # Chunks in flight are saved by one process (a population spread over
    # several processes' devices is not: those lose the chunk in flight).
    if written is not None and not distributed.is_multiprocess():
      run.in_flight = InFlight(
        os.path.join(written, IN_FLIGHT),
        on_save=lambda chunk, segment: crash_point(
          f'chunk{run.chunks_before + chunk}:segment{segment}'
        ),
        on_restore=lambda done, epochs: say(
          f'a chunk cut off by a crash goes on from its checkpoint at epoch {done} of {epochs}'
        ),
      )
    worker = Worker(study, exclusive=exclusive, stale_after=stale_after)
    start = time.perf_counter()
    with worker:
      run.worker = worker
      again = worker.recover()
      trials = ledger.ours(study.get_trials(deepcopy=False))
      told = [t for t in trials if t.state.is_finished()]
      run.store.know([_rank_row(t) for t in told])
      if not created:
        waiting = sum(t.state == TrialState.WAITING for t in trials)
        say(
          f'resuming study {study.study_name!r} ({_where(storage, output_dir)}): {len(told)} '
          f'trials done, {waiting} to run ({len(again)} of them cut off by a crash)'
        )
      if budget is not None:
        run.to_do = max(budget - len(told), 0)
        if len(told) > budget:
          say(
            f'the study already has {len(told)} trials, more than the {budget} asked for: '
            'nothing new to run (ask for more to go on)'
          )
      while True:
        everything = study.get_trials(deepcopy=False)
        run.drop(ledger.duplicates(everything))
        trials = ledger.ours(everything)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if waiting:
          round_index = min(t.user_attrs[ledger.ROUND] for t in waiting)
          if not worker.made(round_index) and not worker.may_make(round_index):
            time.sleep(POLL_SECONDS)  # its maker is still adding trials: plan it whole
            continue
          run.train([t for t in trials if t.user_attrs[ledger.ROUND] == round_index])
          continue
        step = next_round(study, trials)
        if step is None:
          if worker.recover():  # a dead worker's trials, back to WAITING: run them
            continue
          break
        if step == WAIT:
          if not worker.others_running():
            break
          time.sleep(POLL_SECONDS)
          worker.recover()
          continue
        round_index = 1 + max((t.user_attrs[ledger.ROUND] for t in trials), default=-1)
        if step.table is not None and not worker.may_make(round_index):
          time.sleep(POLL_SECONDS)  # another worker makes this round: its trials will show
          worker.recover()
          continue
        asked = run.create(step, round_index)
        worker.made(round_index, True)
        trials = ledger.ours(study.get_trials(deepcopy=False))
        # A round asked of the sampler is this worker's own; another's may share its index.
        if asked:
          run.train([t for t in trials if t.number in asked])
        else:
          run.train([t for t in trials if t.user_attrs[ledger.ROUND] == round_index])
      trials = ledger.ours(study.get_trials(deepcopy=False))
      if run.in_flight is not None and alone and all(t.state.is_finished() for t in trials):
        run.in_flight.clear()  # a checkpoint left by a crash after its trials were told
      if test and all(t.state.is_finished() for t in trials) and not worker.others_running():
        if distributed.is_writer():  # on its own devices: the others may have gone
          run.test_once()
      elif test:
        say('trials of other workers are still running: the last worker to finish tests the top k')
    results = Results.from_study(study)
    results.info = {**run.info, 'seconds': time.perf_counter() - start, 'study': study.study_name}
    return results


class _Run:
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

  def train(self, trials: Sequence[FrozenTrial]) -> None:
    """Trains a round's trials that are free, planned as the whole round."""
    numbers = [t.number for t in trials]
    values = [ledger.values(self.space, t) for t in trials]
    table = {name: np.asarray([v[name] for v in values]) for name in self.space}
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
    values = [ledger.values(self.space, t) for t in trials]
    table = {name: np.asarray([v[name] for v in values]) for name in self.space}
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


def _rank_row(trial: FrozenTrial) -> dict:
  return {'trial_id': trial.number, **(ledger.metrics(trial) or _failed())}


def _failed() -> dict:
  return {'status': 'diverged', 'dev_accuracy': math.nan, 'dev_loss': math.nan}


def _where(storage, output_dir) -> str:
  if storage is not None:
    return ledger.redacted(storage)
  return os.path.join(output_dir, ledger.JOURNAL_FILE) if output_dir else 'memory'


def crash_point(name: str) -> None:
  """SIGKILLs this process at `name` when `BNJAX_CRASH_AT` says so (tests only)."""
  if os.environ.get('BNJAX_CRASH_AT') == name:
    os.kill(os.getpid(), signal.SIGKILL)

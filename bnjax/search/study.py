"""Searches that survive: rounds of trials through the ledger, resumed after any crash.

`run_study` drives any strategy. A strategy only says what the next round
is (`Round`: a table of configurations to enqueue, or how many to ask the
study's sampler for); the driver hands each round to a `rounds.StudyRun`,
which creates the round's trials in the ledger (`ledger`), trains them as
one `run_trials` call with their trial numbers as ids, claiming each chunk
before it runs and telling its trials right after (`workers`), and keeps the
top-k candidates on disk (`candidates`); once every trial is told, the
driver tests the top k once and records it (`rounds.test_once`). Results
are a view of the ledger (`Results.from_study`).

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

`BNJAX_CRASH_AT` (for tests only) makes the process SIGKILL itself at a
named point (`rounds.crash_point`), so tests can crash a search anywhere.
"""

import contextlib
import math
import os
import time
from collections.abc import Callable

from optuna.trial import FrozenTrial, TrialState

from bnjax import distributed
from bnjax.data import Splits
from bnjax.search import hosts, ledger, storages
from bnjax.search.candidates import CandidateStore
from bnjax.search.results import Results
from bnjax.search.rounds import Round, StudyRun, crash_point
from bnjax.search.segments import InFlight
from bnjax.search.workers import Worker, directory_lock
from bnjax.space import Space

IN_FLIGHT = 'in_flight'  # the output directory's folder of chunks in flight (`segments.InFlight`)
WAIT = 'wait'  # a strategy's answer when its next round needs other workers' trials told
POLL_SECONDS = 2.0


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
    run = StudyRun(
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


def _rank_row(trial: FrozenTrial) -> dict:
  return {'trial_id': trial.number, **(ledger.metrics(trial) or _failed())}


def _failed() -> dict:
  return {'status': 'diverged', 'dev_accuracy': math.nan, 'dev_loss': math.nan}


def _where(storage, output_dir) -> str:
  if storage is not None:
    return storages.redacted(storage)
  return os.path.join(output_dir, storages.JOURNAL_FILE) if output_dir else 'memory'

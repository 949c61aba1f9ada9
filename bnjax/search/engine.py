"""Many trials in one program: `run_trials` from a table of hyperparameters to `Results`.

`run_trials` groups the table into buckets (`buckets`: one compile each),
cuts each bucket into chunks (`chunks`: runs that fit memory, the trial axis
sharded over the devices), trains chunk after chunk in segments of epochs
(`segments`: saved at each boundary inside a study), summarizes each trial's
executions into its row (`rows`), and keeps the best trials' params for the
test split (`top_k`), which only they see, once, at the end.
"""

import contextlib
import functools
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from numpy.typing import ArrayLike

from bnjax import distributed
from bnjax.data import Splits
from bnjax.registry import to_python
from bnjax.search import buckets, checks, chunks, folds, overlap, rows, segments
from bnjax.search.checks import SearchError, check_options
from bnjax.search.planning import plan_buckets
from bnjax.search.results import METRIC_COLUMNS, Results
from bnjax.search.top_k import (
  Candidate,
  Finished,
  chunk_candidates,
  keep_best,
  test_top_k,
)
from bnjax.space import Space, with_defaults
from bnjax.training import TrainConfig


def run_trials(
  table: Mapping[str, ArrayLike],
  splits: Splits,
  *,
  seed: int = 0,
  epochs: int = 20,
  executions_per_trial: int = 1,
  select: str = 'final',
  top_k: int = 5,
  test: bool = True,
  chunk_size: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  eval_batch_size: int = 1024,
  width_ratio: float | str | None = 'cost',
  first_trial_id: int = 0,
  space: Space | None = None,
  extra_columns: Mapping[str, ArrayLike] | None = None,
  progress: Callable[[int, int], None] | None = None,
  trial_ids: ArrayLike | None = None,
  claim: Callable[[np.ndarray], bool] | None = None,
  on_chunk: Callable[[list[dict], list[dict], list[Candidate]], None] | None = None,
  cv: int | None = None,
  segment_epochs: int | None = None,
  in_flight: segments.InFlight | None = None,
  concurrent_chunks: int | None = None,
  reuse: Sequence[TrainConfig] = (),
) -> Results:
  """Trains every row of `table` and returns the `Results`.

  Args:
    table: hyperparameter name -> `[trials]` array (e.g. `Space.sample`);
      missing names take their defaults.
    splits: the data; only train and dev are used for training and selection.
    seed: the search's seed; trial `i` uses `fold_in(seed, first_trial_id + i)`.
    epochs: epochs per trial.
    executions_per_trial: seeds per configuration (runs side by side); rows
      report their mean and spread.
    select: rank by the 'final' epoch's dev metrics or each run's 'best' epoch's.
    top_k: how many of the best configurations are evaluated on test.
    test: evaluate them now; False keeps their params in `candidates` for a
      later `test_top_k` (a search in rounds tests once, at the end).
    chunk_size: runs per program call; default: each bucket's `sizing.chunk_runs`
      (from the bucket and the devices, never from the number of trials).
    devices: where to shard the trial axis; default all local devices, or every
      process's where several run one search (`bnjax.distributed`).
    eval_batch_size: examples per evaluation batch.
    width_ratio: 'cost' splits buckets the way `sizing.bucket_cost` prices
      lowest (compiles, chunks' filler and padding; `buckets.make_buckets`);
      a number splits them so no trial is padded wider than this times its
      own width; None: one bucket per static setting.
    first_trial_id: id of the first row (so later rounds get fresh keys).
    space: the `Space` the table was drawn from: its names are the searched
      ones, its distributions the plots' scales. Default: the table's names.
    extra_columns: name -> `[trials]` values shown beside the hyperparameters
      (rows, CSV, summary) but not plotted, e.g. `{'round': ...}`.
    progress: called as `progress(trials_done, trials_total)` after each chunk.
    trial_ids: `[trials]` distinct ids of the rows (a study's trial numbers),
      in place of `first_trial_id + row`.
    claim: called with a chunk's trial ids before it runs; False skips the
      chunk (a ledger's trials that are done, or taken by another worker).
      The chunks are planned from the whole table either way, so a chunk
      that runs has the shape it would have had in a run without skips.
    on_chunk: called after each chunk with its trials' rows (`trial_id`,
      `bucket`, `chunk_size` and the metric columns), their curves and the chunk's best
      `top_k.Candidate`s, before the next chunk starts.
    cv: K-fold cross-validated selection (`bnjax.search.folds`): train and dev
      pooled into K stratified folds, each trial trained on every fold (K
      runs per execution, one more vmapped axis), ranked by the mean dev
      accuracy over them; the top k tested once by the fold ensemble.
      None: the dev split selects.
    segment_epochs: a chunk trains in segments of this many epochs (the
      last may be shorter); None: `segments.segment_lengths`' default. The
      numbers do not depend on it (bitwise, on one machine).
    in_flight: saves each chunk at its segment boundaries, so that a rerun
      after a crash goes on from its last segment (a study's output
      directory); None: nothing is saved.
    concurrent_chunks: chunks trained at once, each in a thread of its own
      (`bnjax.search.overlap`); what follows a chunk (`on_chunk`, `progress`,
      removing its checkpoint) still happens in plan order. Default: 2 on a
      single CPU device, where the second fills the cores the first leaves
      idle, else 1. The numbers do not depend on it.
    reuse: bucket configs whose programs an earlier round of the same search
      compiled (`planning.round_configs`): with `width_ratio='cost'` a bucket
      may take one of them, padded wider, where the compile it saves is
      worth more than the padding.
  """
  start = time.perf_counter()
  check_options(
    seed=seed,
    epochs=epochs,
    executions_per_trial=executions_per_trial,
    select=select,
    top_k=top_k,
    test=test,
    chunk_size=chunk_size,
    devices=devices,
    eval_batch_size=eval_batch_size,
    width_ratio=width_ratio,
    first_trial_id=first_trial_id,
    progress=progress,
    segment_epochs=segment_epochs,
    concurrent_chunks=concurrent_chunks,
  )
  folds.check_cv(cv, splits)
  num_trials = checks.check_table(table, first_trial_id, executions_per_trial * (cv or 1))
  searched = space.names if space is not None else tuple(table)
  ids_of_rows = checks.trial_ids_of(trial_ids, first_trial_id, num_trials)
  table = with_defaults(table, num_trials)
  extra = _extra_columns(extra_columns, table, num_trials)
  devices = list(devices or distributed.devices())
  folded = folds.make_folds(splits, cv) if cv else None
  fit_splits = folded.splits if cv else splits  # the shapes one run trains on
  runs_per_trial = executions_per_trial * (cv or 1)
  planned = plan_buckets(
    table,
    fit_splits,
    epochs=epochs,
    select=select,
    eval_batch_size=eval_batch_size,
    width_ratio=width_ratio,
    devices=devices,
    executions=runs_per_trial,
    chunk_size=chunk_size,
    reuse=reuse,
  )
  hps = [buckets.traced_hparams(table, b.trial_ids, len(b.config.hidden_sizes)) for b in planned]
  plan = chunks.plan_chunks(
    planned, fit_splits, devices, executions=runs_per_trial, chunk_size=chunk_size
  )
  lengths = segments.segment_lengths(epochs, segment_epochs)
  info = {
    'buckets': len(planned),
    'compiles': 0,  # segment programs this search traced: new ones only (`segments.programs`)
    'chunks': len(plan),
    'devices': len(devices),
    'segments': len(lengths),
  }
  if cv:
    info |= {'cv': cv, 'cv_dropped': folded.dropped}

  data, sharding = chunks.data_on(devices, splits, folded.data if cv else None)
  programs = [segments.programs(bucket.config, sharding, folds=bool(cv)) for bucket in planned]
  traces_before = segments.segment_traces()
  digest = segments.data_digest(splits[:4]) if in_flight is not None else ''
  summaries, curves, pool = {}, {}, []  # by table row; the best candidates so far
  skipped = 0

  def tasks():
    """Each chunk's training as an `overlap` task, or None where `claim` skips it."""
    number = 0
    for chunk in plan:
      bucket, hp = planned[chunk.bucket], hps[chunk.bucket]
      ids = ids_of_rows[bucket.trial_ids]
      if claim is not None and not claim(np.unique(ids[chunk.rows[: chunk.real]])):
        yield None
        continue
      yield functools.partial(
        chunks.run_chunk,
        programs[chunk.bucket],
        chunk,
        hp,
        ids,
        data,
        sharding,
        seed=seed,
        lengths=lengths,
        in_flight=in_flight,
        data_digest=digest,
        folds=cv,
        number=number,
      )
      number += 1

  workers = concurrent_chunks or overlap.default_workers(devices)
  # Closed on the way out, whatever raised, so the chunks still running stop before it returns.
  with contextlib.closing(overlap.in_order(tasks(), workers)) as trained_chunks:
    for chunk, trained in zip(plan, trained_chunks, strict=True):
      bucket, hp = planned[chunk.bucket], hps[chunk.bucket]
      ids = ids_of_rows[bucket.trial_ids]
      if trained is None:
        skipped += len(chunks.trials_of(chunk))
        continue
      finished = []
      for local, positions in chunks.trials_of(chunk):
        trial = int(bucket.trial_ids[local])
        runs = [trained.runs[p] for p in positions]
        summaries[trial] = rows.summarize(runs, select)
        curves[trial] = rows.mean_curves(runs)
        row = {'trial_id': int(ids[local]), **summaries[trial]}
        finished.append(Finished(row, local, positions))
      best = chunk_candidates(finished, trained.result, bucket.config, hp, top_k, folds=cv)
      pool = keep_best(pool, best, top_k)
      if on_chunk:
        on_chunk(
          [{**trial.row, 'bucket': chunk.bucket, 'chunk_size': chunk.size} for trial in finished],
          [curves[int(bucket.trial_ids[trial.position])] for trial in finished],
          best,
        )
      if in_flight is not None:
        in_flight.finished(trained.identity)  # its trials are told: nothing of it is in flight
      if progress:
        progress(len(summaries) + skipped, num_trials)
  info['compiles'] = segments.segment_traces() - traces_before
  results = Results(
    rows=_rows(table, extra, planned, summaries, ids_of_rows),
    curves={
      name: np.asarray([curves[t][name] for t in sorted(curves)]).reshape(len(curves), epochs)
      for name in rows.CURVES
    },
    hyperparameters=(*searched, *(name for name in table if name not in searched)),
    select=select,
    searched=searched,
    space=space,
    extra_columns=tuple(extra),
    info={**info, 'seconds': time.perf_counter() - start},
    candidates=pool,
  )
  if not test:
    return results
  return test_top_k(results, splits, top_k)


def _rows(
  table: dict, extra: dict, planned: list[buckets.Bucket], summaries: dict, ids: np.ndarray
) -> list[dict]:
  """One row per trained trial, in table order: id, hyperparameters, extras, bucket, metrics."""
  bucket_of = {int(trial): i for i, bucket in enumerate(planned) for trial in bucket.trial_ids}
  return [
    {
      'trial_id': int(ids[trial]),
      **{name: to_python(table[name][trial]) for name in table},
      **{name: to_python(values[trial]) for name, values in extra.items()},
      'bucket': bucket_of[trial],
      **summaries[trial],
    }
    for trial in sorted(summaries)
  ]


def _extra_columns(
  extra_columns: Mapping[str, ArrayLike] | None, table: dict, num_trials: int
) -> dict[str, np.ndarray]:
  """The extra columns as `[trials]` arrays, checked against the table's names and length."""
  extra = {name: np.asarray(values) for name, values in (extra_columns or {}).items()}
  for name, values in extra.items():
    if name in table or name in ('trial_id', 'bucket', *METRIC_COLUMNS):
      raise SearchError(f'extra column {name!r} would hide a column of that name; rename it.')
    if values.shape != (num_trials,):
      raise SearchError(
        f'extra column {name!r} needs one value per trial ({num_trials}); got shape {values.shape}.'
      )
  return extra

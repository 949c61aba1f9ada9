"""Successive halving and Hyperband on populations: rungs decided on the whole rung at once.

A bracket trains many trials for a few epochs, keeps the top `1 / eta` by dev
accuracy, trains those on, and so on up to the most epochs (Li et al.,
"Hyperband", JMLR 2018). Here the trials of a rung sit in cohorts
(`bnjax.search.cohorts`): chunks of one bucket each, every one a population
with a trial axis. A rung:

1. trains every cohort to the rung's epochs, in segments of one fixed length
   (so one program per bucket config, whatever the rung);
2. ranks every real member across all buckets at once (`rank`): dev accuracy,
   then dev loss, then trial id; diverged last. The answer does not depend on
   the order trials arrive in, unlike an asynchronous pruner's;
3. keeps the top `n // eta` (`rung`); diverged trials never go on, since
   their state stopped changing when they diverged;
4. gathers the survivors along the trial axis (`regroup`), bitwise, and
   packs them into cohorts of the bucket's own chunk size, the last one padded
   with copies of a survivor marked as filler. Same shapes, same programs: a
   rung compiles nothing new. Survivors go on from their state; nothing is
   retrained.

The pruned trials leave as `TrialRecord`s with the epochs they reached and
their curves, for the ledger. Since a trial's numbers do not depend on its
neighbours (equal shapes) nor on the segment length (see `population`), a
survivor's curve is bitwise the curve it would have had trained straight to
its epochs in a chunk of that size.
"""

import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from bnjax import distributed
from bnjax.data import Splits
from bnjax.registry import to_python
from bnjax.search import chunks
from bnjax.search import population as pop
from bnjax.search.checks import SearchError, check_count, check_options
from bnjax.search.cohorts import (
  Cohort,
  TrialRecord,
  candidates,
  cohorts_from_buckets,
  default_chunk_size,
  members,
  records,
  regroup,
  row_of,
  sampling_key,
  train_to,
)
from bnjax.search.planning import plan_brackets
from bnjax.search.population_study import PopulationStudy
from bnjax.search.results import Results
from bnjax.space import as_space, with_defaults
from bnjax.training import TrainData


class Rung(NamedTuple):
  """A rung of a bracket: `trials` configurations trained to `epochs`."""

  trials: int
  epochs: int


class Bracket(NamedTuple):
  index: int  # s in Li et al.: s_max for the most aggressive bracket, 0 for plain random search
  rungs: tuple[Rung, ...]


def hyperband_brackets(min_epochs: int, max_epochs: int, eta: int = 3) -> list[Bracket]:
  """Hyperband's brackets (Li et al. 2018, Algorithm 1), most aggressive first.

  With `R = max_epochs / min_epochs` and `s_max = floor(log_eta R)`, bracket
  `s` starts `n = ceil((s_max + 1) / (s + 1) * eta**s)` trials at `R / eta**s`
  units of `min_epochs`; rung `i` keeps `n // eta**i` of them for
  `max_epochs / eta**(s - i)` epochs (rounded). For `(1, 81, 3)` this is the
  paper's Table 1: 81x1, 27x3, 9x9, 3x27, 1x81, then 34x3 ... down to 5x81.
  """
  check_count('min_epochs', min_epochs)
  check_count('max_epochs', max_epochs, min_epochs)
  check_count('eta', eta, 2)
  s_max = 0
  while min_epochs * eta ** (s_max + 1) <= max_epochs:
    s_max += 1
  brackets = []
  for s in range(s_max, -1, -1):
    n = math.ceil((s_max + 1) * eta**s / (s + 1))
    rungs = tuple(
      Rung(n // eta**i, max(min_epochs, round(max_epochs / eta ** (s - i)))) for i in range(s + 1)
    )
    brackets.append(Bracket(s, rungs))
  return brackets


def segment_length(brackets: Sequence[Bracket]) -> int:
  """The longest segment that every rung's epochs are a whole number of: one program serves all."""
  return math.gcd(*(rung.epochs for bracket in brackets for rung in bracket.rungs))


def rank(
  trial_ids: np.ndarray, dev_accuracy: np.ndarray, dev_loss: np.ndarray | None = None
) -> np.ndarray:
  """Positions of the trials, best first: dev accuracy, dev loss, trial id; NaN (diverged) last.

  A total order on distinct trial ids, so it does not depend on the order the
  trials are given in.
  """
  ids = np.asarray(trial_ids, np.int64)
  accuracy = np.asarray(dev_accuracy, np.float64)
  loss = np.full(ids.shape, np.nan) if dev_loss is None else np.asarray(dev_loss, np.float64)
  if len(np.unique(ids)) != len(ids):
    raise SearchError('rank needs distinct trial ids; drop the fillers first.')
  diverged = np.isnan(accuracy)
  # np.lexsort sorts by its last key first.
  return np.lexsort(
    (ids, np.nan_to_num(loss, nan=np.inf), np.where(diverged, 0.0, -accuracy), diverged)
  )


class Decision(NamedTuple):
  survivors: np.ndarray  # trial ids, best first
  pruned: np.ndarray  # trial ids, best first (diverged last)


def rung(
  trial_ids: np.ndarray,
  dev_accuracy: np.ndarray,
  *,
  eta: int = 3,
  dev_loss: np.ndarray | None = None,
  keep: int | None = None,
) -> Decision:
  """The top `keep` (default `len // eta`, at least 1) trials go on; diverged ones never do."""
  check_count('eta', eta, 2)
  ids = np.asarray(trial_ids, np.int64)
  order = rank(ids, dev_accuracy, dev_loss)
  keep = max(1, len(ids) // eta) if keep is None else keep
  healthy = ~np.isnan(np.asarray(dev_accuracy, np.float64))[order]
  going_on = (np.arange(len(ids)) < keep) & healthy
  return Decision(ids[order][going_on], ids[order][~going_on])


def successive_halving(
  cohorts: Sequence[Cohort],
  data: TrainData,
  rungs: Sequence[Rung],
  *,
  eta: int = 3,
  segment_epochs: int = 1,
  sharding: jax.sharding.Sharding | None = None,
  first_rung: int = 0,
  on_rung: Callable[[int, list[TrialRecord], list[Cohort]], None] | None = None,
  on_segment: Callable[[int, list[Cohort]], None] | None = None,
) -> tuple[list[Cohort], list[TrialRecord]]:
  """One bracket: train to each rung's epochs, keep the top `rung.trials` of the next rung.

  Returns the finalists' cohorts and a `TrialRecord` of every real trial:
  pruned at their rung, diverged, or 'ok' for those that reached the last
  rung. `first_rung` > 0 goes on from cohorts of that rung (a checkpoint's).
  `on_rung(index, stopped, cohorts)` runs once rung `index` is decided, with
  the records of the trials that stopped there and the cohorts that go on
  (the regrouped survivors; at the last rung, the finalists).
  `on_segment(index, cohorts)` runs after each segment inside rung `index`.
  """
  out = []
  for index in range(first_rung, len(rungs)):
    step = rungs[index]
    during = None if on_segment is None else functools.partial(on_segment, index)
    cohorts = train_to(cohorts, data, step.epochs, segment_epochs=segment_epochs, on_segment=during)
    seen = members(cohorts)
    if index == len(rungs) - 1:
      stopped = records(cohorts, seen['trial_id'], status='ok', rung_index=index)
      out += stopped
      if on_rung:
        on_rung(index, stopped, cohorts)
      break
    decision = rung(
      seen['trial_id'],
      seen['dev_accuracy'],
      eta=eta,
      dev_loss=seen['dev_loss'],
      keep=rungs[index + 1].trials,
    )
    stopped = records(cohorts, decision.pruned, status='pruned', rung_index=index)
    out += stopped
    cohorts = regroup(cohorts, decision.survivors, sharding=sharding)
    if on_rung:
      on_rung(index, stopped, cohorts)
    if not cohorts:
      break
  return cohorts, sorted(out, key=lambda record: record.trial_id)


def mean_epochs(bracket: Bracket) -> float:
  """The epochs a trial of `bracket` trains on average: every rung's survivors go on."""
  first = bracket.rungs[0].trials
  trained, before = 0, 0
  for rung in bracket.rungs:
    trained += rung.trials * (rung.epochs - before)
    before = rung.epochs
  return trained / first


def hyperband(
  space,
  splits: Splits,
  *,
  min_epochs: int = 1,
  max_epochs: int = 27,
  eta: int = 3,
  seed: int = 0,
  top_k: int = 5,
  test: bool = True,
  chunk_size: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  eval_batch_size: int = 1024,
  width_ratio: float | str | None = 'cost',
  output_dir: str | None = None,
  storage: str | None = None,
  study_name: str | None = None,
  report: Callable[[str], None] | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> Results:
  """Hyperband (Li et al. 2018): brackets of successive halving over configurations from `space`.

  Bracket `s` draws its configurations with `sampling_key(seed, s)`; trial
  ids run on from 0 across the brackets. The buckets are planned over every
  bracket's trials at once (`plan_brackets`), and every rung's epochs are a
  multiple of one segment length (`segment_length`), so each bucket compiles
  its init and one segment program, whatever the bracket and the rung. The search runs through a
  study (`population_study`): in `output_dir` (or `storage`), checkpointed
  at every rung, resumed by calling again with the same arguments; in memory
  without one. The top `top_k` trials that reached `max_epochs` are tested
  once, at the end (`test=False`: never).

  Returns:
    `Results` with one row per trial: 'ok' for those that reached
    `max_epochs`, 'pruned' (with the epochs they reached, column `epochs`)
    or 'diverged'; dev metrics at the last epoch each reached; curves
    `[trials, max_epochs]`, NaN past a pruned trial's last epoch; the extra
    columns `bracket` and `epochs`. `info` counts brackets, compiles,
    trial-epochs and checkpoints (and their seconds).
  """
  start_time = time.perf_counter()
  space = as_space(space)
  brackets = hyperband_brackets(min_epochs, max_epochs, eta)
  segment = segment_length(brackets)
  check_options(seed=seed, top_k=top_k, test=test, chunk_size=chunk_size, devices=devices)
  check_options(eval_batch_size=eval_batch_size, width_ratio=width_ratio)
  config = {
    'strategy': 'hyperband',
    'min_epochs': min_epochs,
    'max_epochs': max_epochs,
    'eta': eta,
    'chunk': chunk_size,
    'epochs': max_epochs,
    'select': 'final',
    'seed': seed,
    'eval_batch_size': eval_batch_size,
    'width_ratio': width_ratio,
    'extra_columns': ['bracket', 'epochs'],
    'bucket_plan': 'all_brackets',  # `plan_brackets`; a study bucketed bracket by bracket differs
  }
  devices = list(devices or distributed.devices())
  data, sharding = chunks.data_on(devices, splits)
  counts = [bracket.rungs[0].trials for bracket in brackets]
  first_ids = np.cumsum([0, *counts])  # trial ids run on from 0 across the brackets
  tables = [
    with_defaults(space.sample(sampling_key(seed, bracket.index), n), n)
    for bracket, n in zip(brackets, counts, strict=True)
  ]
  per_bracket, sizes = plan_brackets(
    tables,
    default_chunk_size(splits, devices, chunk_size),
    splits=splits,
    mean_epochs=[mean_epochs(bracket) for bracket in brackets],
    epochs=max_epochs,
    num_classes=splits.num_classes,
    eval_batch_size=eval_batch_size,
    width_ratio=width_ratio,
    input_shape=splits.input_shape,
  )
  total = sum(counts)
  keeper = PopulationStudy(
    space,
    splits,
    config=config,
    output_dir=output_dir,
    storage=storage,
    study_name=study_name,
    top_k=top_k,
    report=report,
  )
  with keeper, pop.count_lowerings() as lowered:
    at = keeper.resumed or {'bracket': 0, 'rung': 0}
    cohort_count = 0
    for position in range(at['bracket'], 0 if keeper.done else len(brackets)):
      bracket, table = brackets[position], tables[position]
      ids = first_ids[position] + np.arange(counts[position])
      keeper.create(table, ids, position)
      cohorts = cohorts_from_buckets(
        table, ids, data, per_bracket[position], sizes, seed=seed, sharding=sharding
      )
      cohort_count += len(cohorts)
      first_rung = 0
      if keeper.resumed and position == at['bracket'] and keeper.resumed['buckets']:
        first_rung = at['rung']  # the checkpoint's cohorts, on from where they stopped
        cohorts = keeper.restore(cohorts, sharding)

      def on_rung(index, stopped, going_on, position=position, table=table, ids=ids):
        values = {int(t): {k: to_python(c[i]) for k, c in table.items()} for i, t in enumerate(ids)}
        rows = [
          row_of(r, values[r.trial_id], {'bracket': brackets[position].index}) for r in stopped
        ]
        finished = {row['trial_id']: row for row in rows if row['status'] == 'ok'}
        keeper.tell(
          rows,
          [r.curves for r in stopped],
          [{'bracket': row['bracket'], 'epochs': row['epochs']} for row in rows],
          candidates(going_on, finished) if finished else (),
        )
        if progress:
          progress(len(keeper.store.ranks), total)
        if index == len(brackets[position].rungs) - 1:
          keeper.save([], {'bracket': position + 1, 'rung': 0})
        else:
          keeper.save(going_on, {'bracket': position, 'rung': index + 1})

      def on_segment(index, now, position=position):
        keeper.save(now, {'bracket': position, 'rung': index}, decision=False)

      successive_halving(
        cohorts,
        data,
        bracket.rungs,
        eta=eta,
        segment_epochs=segment,
        sharding=sharding,
        first_rung=first_rung,
        on_rung=on_rung,
        on_segment=on_segment,
      )
    keeper.finish(test=test)
    results = keeper.results({})
  results.info.update(
    brackets=len(brackets),
    buckets=len({(row['bucket']) for row in results.rows}),
    chunks=cohort_count,
    compiles=lowered.value,
    trial_epochs=int(sum(row['epochs'] for row in results.rows)),
    devices=len(devices),
    seconds=time.perf_counter() - start_time,
  )
  return results

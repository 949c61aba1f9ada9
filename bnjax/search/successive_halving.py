"""Successive halving and Hyperband on populations: rungs decided on the whole rung at once.

A bracket trains many trials for a few epochs, keeps the top `1 / eta` by dev
accuracy, trains those on, and so on up to the most epochs (Li et al.,
"Hyperband", JMLR 2018). Here the trials of a rung sit in *cohorts*: chunks of
one bucket each, every one a population (`bnjax.search.population`) with a
trial axis. A rung:

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

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from bnjax.search import buckets, chunks
from bnjax.search import population as pop
from bnjax.search.checks import SearchError, check_count
from bnjax.training import TrainConfig, TrainData, TrialState

CURVES = ('train_loss', 'dev_loss', 'dev_accuracy')


class Cohort(NamedTuple):
  """One bucket's chunk in flight: a population and what the host knows of it."""

  bucket: int  # which bucket (its config below)
  config: TrainConfig
  trial_ids: np.ndarray  # [size] int; a filler carries the id of the member it copies
  filler: np.ndarray  # [size] bool: a copy that pads the chunk; its results are dropped
  hp: dict  # [size, ...] traced hyperparameters
  state: TrialState  # [size, ...]
  curves: dict  # name -> [size, epochs done] float32, on the host


class Rung(NamedTuple):
  """A rung of a bracket: `trials` configurations trained to `epochs`."""

  trials: int
  epochs: int


class Bracket(NamedTuple):
  index: int  # s in Li et al.: s_max for the most aggressive bracket, 0 for plain random search
  rungs: tuple[Rung, ...]


class TrialRecord(NamedTuple):
  """What the ledger keeps of a trial that stopped: pruned, diverged, or done."""

  trial_id: int
  bucket: int
  status: str  # 'pruned', 'diverged' or 'ok' (trained to the bracket's last rung)
  epochs: int  # epochs it reached
  curves: dict  # name -> [epochs] float32
  diverged_step: int  # -1 if none
  rung: int  # the rung it stopped at


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


def start(
  config: TrainConfig,
  bucket: int,
  trial_ids: np.ndarray,
  hp: dict,
  keys: jax.Array,
  data: TrainData,
  *,
  chunk_size: int,
  sharding: jax.sharding.Sharding | None = None,
) -> list[Cohort]:
  """A bucket's trials as cohorts of `chunk_size` members, initialized; fillers pad the last one.

  `hp` and `keys` are `[trials, ...]` in the order of `trial_ids`.
  """
  cohorts = []
  for rows, filler in _chunks(len(trial_ids), chunk_size):
    take = lambda tree, rows=rows: _put(pop.take(tree, rows), sharding)
    members_hp = take(hp)
    state = pop.init_population(config, members_hp, take(keys), data)
    curves = {name: np.zeros((len(rows), 0), np.float32) for name in CURVES}
    cohorts.append(
      Cohort(bucket, config, np.asarray(trial_ids)[rows], filler, members_hp, state, curves)
    )
  return cohorts


def cohorts_from_table(
  table: dict[str, np.ndarray],
  trial_ids: np.ndarray,
  data: TrainData,
  *,
  num_classes: int,
  seed: int,
  chunk_size: int,
  epochs: int,
  first_bucket: int = 0,
  sharding: jax.sharding.Sharding | None = None,
  **bucket_options,
) -> list[Cohort]:
  """A trial table (every registry name filled in) bucketed, chunked and initialized.

  Trial `trial_ids[i]` gets the key `fold_in(fold_in(seed, trial_id), 0)`,
  as in `run_trials`. `bucket_options` go to `buckets.make_buckets`
  (`eval_batch_size`, `width_ratio`, `select`).
  """
  trial_ids = np.asarray(trial_ids, np.int64)
  out = []
  planned = buckets.make_buckets(table, epochs=epochs, num_classes=num_classes, **bucket_options)
  for index, bucket in enumerate(planned):
    depth = len(bucket.config.hidden_sizes)
    hp = buckets.traced_hparams(table, bucket.trial_ids, depth)
    ids = trial_ids[bucket.trial_ids]
    keys = chunks.trial_keys(seed, ids, np.zeros(len(ids), np.int64))
    out += start(
      bucket.config,
      first_bucket + index,
      ids,
      hp,
      keys,
      data,
      chunk_size=chunk_size,
      sharding=sharding,
    )
  return out


def _chunks(count: int, size: int):
  """(rows, filler) of each chunk: `size` rows, the last chunk padded with its first row."""
  for begin in range(0, count, size):
    real = min(size, count - begin)
    rows = np.concatenate([np.arange(begin, begin + real), np.full(size - real, begin)])
    yield rows, np.arange(size) >= real


def _put(tree, sharding):
  return tree if sharding is None else jax.device_put(tree, sharding)


def train_to(
  cohorts: Sequence[Cohort], data: TrainData, epochs: int, *, segment_epochs: int
) -> list[Cohort]:
  """Every cohort trained on to `epochs` epochs, in segments of `segment_epochs`."""
  out = []
  for cohort in cohorts:
    done = cohort.curves[CURVES[0]].shape[1]
    if (epochs - done) % segment_epochs or epochs < done:
      raise SearchError(
        f'cannot go from {done} to {epochs} epochs in segments of {segment_epochs}; '
        'make every rung a multiple of the segment length.'
      )
    state, parts = cohort.state, [cohort.curves]
    for _ in range((epochs - done) // segment_epochs):
      state, metrics = pop.run_segment(cohort.config, cohort.hp, state, data, segment_epochs)
      parts.append(jax.device_get(metrics))
    curves = {name: np.concatenate([p[name] for p in parts], axis=1) for name in CURVES}
    out.append(cohort._replace(state=state, curves=curves))
  return out


def members(cohorts: Sequence[Cohort]) -> dict[str, np.ndarray]:
  """The real members' trial ids and last-epoch dev accuracy and loss, cohort by cohort."""
  real = lambda cohort, values: np.asarray(values)[~cohort.filler]
  return {
    'trial_id': np.concatenate([real(c, c.trial_ids) for c in cohorts]),
    'dev_accuracy': np.concatenate([real(c, c.curves['dev_accuracy'][:, -1]) for c in cohorts]),
    'dev_loss': np.concatenate([real(c, c.curves['dev_loss'][:, -1]) for c in cohorts]),
  }


def regroup(
  cohorts: Sequence[Cohort],
  survivors: np.ndarray,
  *,
  sharding: jax.sharding.Sharding | None = None,
) -> list[Cohort]:
  """The survivors, gathered along the trial axis into cohorts of their bucket's chunk size.

  Each bucket keeps its chunk size (its cohorts' size), so the programs that
  trained it serve again; its survivors are ordered by trial id (the result
  does not depend on the order of `survivors`), and the last cohort is padded
  with copies of its first member, marked as filler. A bucket without
  survivors ends. The gather runs on the host: it copies rows bitwise and
  compiles nothing.
  """
  going_on = set(np.asarray(survivors).tolist())
  out = []
  for bucket in dict.fromkeys(c.bucket for c in cohorts):
    mine = [c for c in cohorts if c.bucket == bucket]
    joined = pop.concatenate([(c.trial_ids, c.hp, c.state, c.curves) for c in mine])
    real = np.concatenate([~c.filler for c in mine])
    ids = joined[0]
    rows = np.flatnonzero(real & np.isin(ids, list(going_on)))
    rows = rows[np.argsort(ids[rows], kind='stable')]
    size = len(mine[0].trial_ids)
    for chunk, filler in _chunks(len(rows), size):
      ids_, hp, state, curves = pop.take(joined, rows[chunk])
      hp, state = _put((hp, state), sharding)
      out.append(Cohort(bucket, mine[0].config, ids_, filler, hp, state, curves))
  return out


def records(cohorts: Sequence[Cohort], trial_ids: np.ndarray, *, status: str, rung_index: int):
  """`TrialRecord`s of the real members `trial_ids` (a diverged one says so, whatever `status`)."""
  wanted = set(np.asarray(trial_ids).tolist())
  out = []
  for cohort in cohorts:
    diverged_step = np.asarray(jax.device_get(cohort.state.diverged_step))
    for row in np.flatnonzero(~cohort.filler):
      trial = int(cohort.trial_ids[row])
      if trial in wanted:
        out.append(
          TrialRecord(
            trial,
            cohort.bucket,
            'diverged' if diverged_step[row] >= 0 else status,
            int(cohort.curves[CURVES[0]].shape[1]),
            {name: cohort.curves[name][row] for name in CURVES},
            int(diverged_step[row]),
            rung_index,
          )
        )
  return sorted(out, key=lambda record: record.trial_id)


def successive_halving(
  cohorts: Sequence[Cohort],
  data: TrainData,
  rungs: Sequence[Rung],
  *,
  eta: int = 3,
  segment_epochs: int = 1,
  sharding: jax.sharding.Sharding | None = None,
  on_rung: Callable[[int, list[Cohort], Decision | None], None] | None = None,
) -> tuple[list[Cohort], list[TrialRecord]]:
  """One bracket: train to each rung's epochs, keep the top `rung.trials` of the next rung.

  Returns the finalists' cohorts and a `TrialRecord` of every real trial:
  pruned at their rung, diverged, or 'ok' for those that reached the last
  rung. `on_rung(index, cohorts, decision)` runs after each rung is trained
  (decision None at the last), e.g. to checkpoint or to tell the ledger.
  """
  out = []
  for index, step in enumerate(rungs):
    cohorts = train_to(cohorts, data, step.epochs, segment_epochs=segment_epochs)
    seen = members(cohorts)
    if index == len(rungs) - 1:
      if on_rung:
        on_rung(index, cohorts, None)
      out += records(cohorts, seen['trial_id'], status='ok', rung_index=index)
      break
    decision = rung(
      seen['trial_id'],
      seen['dev_accuracy'],
      eta=eta,
      dev_loss=seen['dev_loss'],
      keep=rungs[index + 1].trials,
    )
    if on_rung:
      on_rung(index, cohorts, decision)
    out += records(cohorts, decision.pruned, status='pruned', rung_index=index)
    cohorts = regroup(cohorts, decision.survivors, sharding=sharding)
    if not cohorts:
      break
  return cohorts, sorted(out, key=lambda record: record.trial_id)

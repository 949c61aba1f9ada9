"""Cohorts: a bucket's chunk of trials in flight, as adaptive searches move it.

A cohort is a population (`bnjax.search.population`: one `TrialState` with a
trial axis) with what the host knows of it: its bucket and config, each
member's trial id, which members are fillers (copies that pad the chunk to
its fixed shape, whose results are dropped), the hyperparameters and the
curves so far. Successive halving (`successive_halving`) and population-based
training (`pbt`) build cohorts from a trial table (`cohorts_from_table`, or
`cohorts_from_buckets` where the buckets were planned beforehand),
train them on in segments (`train_to`), gather survivors into cohorts of the
same shapes (`regroup`: no new program), and turn the trials that stopped
into `TrialRecord`s, rows and test candidates (`records`, `row_of`,
`candidates`).
"""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from bnjax import distributed
from bnjax.data import Splits
from bnjax.search import buckets, chunks, sizing
from bnjax.search import population as pop
from bnjax.search.checks import SearchError
from bnjax.search.top_k import Candidate
from bnjax.training import TrainConfig, TrainData, TrialState

# Sampling keys fold in ids from the top of the uint32 range; trial keys fold in
# trial ids from 0 up, so the two streams never meet.
SAMPLING_STREAM = 2**32 - 1

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


class TrialRecord(NamedTuple):
  """What the ledger keeps of a trial that stopped: pruned, diverged, or done."""

  trial_id: int
  bucket: int
  status: str  # 'pruned', 'diverged' or 'ok' (trained to the bracket's last rung)
  epochs: int  # epochs it reached
  curves: dict  # name -> [epochs] float32
  diverged_step: int  # -1 if none
  rung: int  # the rung it stopped at


def sampling_key(seed: int, round_index: int) -> jax.Array:
  """The key that draws round `round_index`'s configurations, for every strategy."""
  return jax.random.fold_in(chunks.seed_key(seed), SAMPLING_STREAM - round_index)


def default_chunk_size(
  splits: Splits, devices: Sequence[jax.Device], chunk_size: int | None
) -> Callable[[TrainConfig], int]:
  """A bucket's chunk size, from its config and the devices only: `sizing.chunk_runs`'.

  (`cohorts_from_table` lowers it to a bucket's trials where they are fewer,
  and Hyperband to the most trials one bracket puts in the bucket, so a
  small search does not train fillers; a rung keeps it.)
  """
  return lambda config: sizing.chunk_runs(config, splits, devices, chunk_size=chunk_size)


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
  chunk_size: int | Callable[[TrainConfig], int],
  epochs: int,
  first_bucket: int = 0,
  sharding: jax.sharding.Sharding | None = None,
  **bucket_options,
) -> list[Cohort]:
  """A trial table (every registry name filled in) bucketed, chunked and initialized.

  Trial `trial_ids[i]` gets the key `fold_in(fold_in(seed, trial_id), 0)`,
  as in `run_trials`. A bucket's chunk size is `chunk_size` (or
  `chunk_size(config)`), no more than its trials need, rounded up to a
  multiple of the devices `sharding` spans; every later rung keeps it.
  `bucket_options` go to `buckets.make_buckets` (`eval_batch_size`,
  `width_ratio`, `select`).
  """
  planned = buckets.make_buckets(table, epochs=epochs, num_classes=num_classes, **bucket_options)
  sizes = [chunk_size(bucket.config) if callable(chunk_size) else chunk_size for bucket in planned]
  sizes = [min(size, len(b.trial_ids)) for size, b in zip(sizes, planned, strict=True)]
  return cohorts_from_buckets(
    table,
    trial_ids,
    data,
    planned,
    sizes,
    seed=seed,
    first_bucket=first_bucket,
    sharding=sharding,
  )


def cohorts_from_buckets(
  table: dict[str, np.ndarray],
  trial_ids: np.ndarray,
  data: TrainData,
  planned: Sequence[buckets.Bucket],
  sizes: Sequence[int],
  *,
  seed: int,
  first_bucket: int = 0,
  sharding: jax.sharding.Sharding | None = None,
) -> list[Cohort]:
  """The table's trials in the buckets `planned` (positions in `table`), chunked and initialized.

  Bucket `i` is numbered `first_bucket + i` and chunked by `sizes[i]`
  (rounded up to a multiple of the devices `sharding` spans); a bucket
  without trials here makes no cohort. Keys as in `cohorts_from_table`.
  """
  trial_ids = np.asarray(trial_ids, np.int64)
  unit = sharding.mesh.size if isinstance(sharding, jax.sharding.NamedSharding) else 1
  out = []
  for index, (bucket, size) in enumerate(zip(planned, sizes, strict=True)):
    if not len(bucket.trial_ids):
      continue
    depth = len(bucket.config.hidden_sizes)
    hp = buckets.traced_hparams(table, bucket.trial_ids, depth)
    ids = trial_ids[bucket.trial_ids]
    keys = chunks.trial_keys(seed, ids, np.zeros(len(ids), np.int64))
    size = -(-size // unit) * unit
    out += start(
      bucket.config, first_bucket + index, ids, hp, keys, data, chunk_size=size, sharding=sharding
    )
  return out


def _chunks(count: int, size: int):
  """(rows, filler) of each chunk: `size` rows, the last chunk padded with its first row."""
  for begin in range(0, count, size):
    real = min(size, count - begin)
    rows = np.concatenate([np.arange(begin, begin + real), np.full(size - real, begin)])
    yield rows, np.arange(size) >= real


def _put(tree, sharding):
  return tree if sharding is None else distributed.put(tree, sharding)


def train_to(
  cohorts: Sequence[Cohort],
  data: TrainData,
  epochs: int,
  *,
  segment_epochs: int,
  on_segment: Callable[[list[Cohort]], None] | None = None,
) -> list[Cohort]:
  """Every cohort trained on to `epochs` epochs, in segments of `segment_epochs`.

  Each cohort goes on from the epochs it has done (cohorts may differ: a
  checkpoint taken mid-rung holds some trained further than others).
  `on_segment(cohorts)` runs after each segment with every cohort as it
  stands then (e.g. to checkpoint).
  """
  out = list(cohorts)
  for index, cohort in enumerate(cohorts):
    done = cohort.curves[CURVES[0]].shape[1]
    if (epochs - done) % segment_epochs or epochs < done:
      raise SearchError(
        f'cannot go from {done} to {epochs} epochs in segments of {segment_epochs}; '
        'make every rung a multiple of the segment length.'
      )
    for _ in range((epochs - done) // segment_epochs):
      state, metrics = pop.run_segment_checked_at_end(
        cohort.config, cohort.hp, cohort.state, data, segment_epochs
      )
      curves = {
        name: np.concatenate([cohort.curves[name], metrics[name]], axis=1) for name in CURVES
      }
      cohort = out[index] = cohort._replace(state=state, curves=curves)
      if on_segment:
        on_segment(list(out))
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
    diverged_step = np.asarray(distributed.fetch(cohort.state.diverged_step))
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


def candidates(cohorts: Sequence[Cohort], rows: dict[int, dict]) -> list[Candidate]:
  """The members `rows` names (trial id -> its row) as `top_k.Candidate`s, params on the host.

  Each holds its final params (an executions axis of one), as `test_top_k` takes them.
  """
  out = []
  for cohort in cohorts:
    wanted = [i for i in np.flatnonzero(~cohort.filler) if int(cohort.trial_ids[i]) in rows]
    if not wanted:
      continue
    # One host gather per cohort (compiles nothing, whatever the rows), not a
    # device gather and transfer per member; each candidate copies its rows
    # out, so a dropped one frees its memory.
    hp, params, model_state = pop.take(
      (cohort.hp, cohort.state.params, cohort.state.model_state), np.asarray(wanted)
    )
    for j, index in enumerate(wanted):
      one = lambda tree, j=j: jax.tree.map(lambda leaf: leaf[j : j + 1].copy(), tree)
      out.append(
        Candidate(
          rows[int(cohort.trial_ids[index])],
          cohort.config,
          {name: np.asarray(value)[j].copy() for name, value in hp.items()},
          one(params),
          one(model_state),
        )
      )
  return out


def row_of(record: TrialRecord, values: dict, extra: dict) -> dict:
  """A stopped trial's row: its hyperparameter `values`, `extra` columns, epochs and metrics.

  Its dev metrics are its last epoch's; `best_epoch` is the first epoch of
  its highest dev accuracy (-1 if it diverged before one ended).
  """
  accuracy = record.curves['dev_accuracy']
  finite = ~np.isnan(accuracy)
  healthy = record.status != 'diverged'
  last = lambda name: float(record.curves[name][-1]) if healthy else math.nan
  return {
    'trial_id': record.trial_id,
    **values,
    **extra,
    'epochs': record.epochs,
    'bucket': record.bucket,
    'status': record.status,
    'dev_accuracy': last('dev_accuracy'),
    'dev_accuracy_std': 0.0 if healthy else math.nan,
    'dev_loss': last('dev_loss'),
    'best_epoch': int(np.argmax(np.where(finite, accuracy, -np.inf))) if finite.any() else -1,
    'train_loss': last('train_loss'),
    'diverged_step': record.diverged_step,
    'test_accuracy': math.nan,
  }

"""Chunks: a bucket's trials cut into program calls that fit memory, sharded over devices.

A chunk is one call of a bucket's `jit(vmap(train))`: `size` runs (a run is
one execution of one trial), a multiple of the device count, so the trial
axis splits evenly over the devices, and of the executions per trial, so a
trial's runs always share a chunk. A run's key is
`fold_in(fold_in(seed, trial_id), execution)`, so which numbers it draws
depends on neither its chunk nor its neighbours.

A bucket's chunks all have one size, `sizing.chunk_runs`: a function of the
bucket's program, the data's shapes and the devices only, never of how many
trials a search has, so a trial id gives the same numbers bit for bit however
many trials run beside it (see `sizing`). The last chunk of a bucket (or a
bucket smaller than one chunk) is padded by repeating its first run, and the
padding's results are dropped.
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnjax import distributed
from bnjax.data import Splits
from bnjax.search import segments, sizing
from bnjax.search.buckets import Bucket
from bnjax.search.checks import check_seed
from bnjax.search.folds import folds_of_runs
from bnjax.training import TrainData, TrainResult


class Chunk(NamedTuple):
  """One program call: runs of one bucket's trials, padding last."""

  bucket: int  # index into the bucket list
  rows: np.ndarray  # [size] int: each run's position in `Bucket.trial_ids`
  executions: np.ndarray  # [size] int: each run's execution index
  real: int  # the first `real` runs are real; the rest repeat the first run

  @property
  def size(self) -> int:
    return len(self.rows)


class Trained(NamedTuple):
  """What `run_chunk` hands back."""

  runs: list['Run']  # the real runs, in chunk order
  result: TrainResult  # the whole chunk's, on the devices
  identity: str | None  # its checkpoint's name in `segments.InFlight`; None without one


class Run(NamedTuple):
  """One execution of one trial, as the host sees it after its chunk."""

  metrics: dict[str, np.ndarray]  # 'train_loss', 'dev_loss', 'dev_accuracy': [epochs]
  diverged_step: int  # -1 if it never diverged
  best_epoch: int  # the device's `TrainResult.best_epoch`


def seed_key(seed: int) -> jax.Array:
  """The key of a seed in [0, 2**64), every bit of it counted.

  `jax.random.key` keeps 32 bits where 64-bit types are off (seed 2**32 would
  draw seed 0's numbers) and overflows past 2**63; the high word is folded in
  instead, so seeds below 2**32 keep the key `jax.random.key` gives them.
  """
  check_seed(seed)
  seed = int(seed)
  key = jax.random.key(seed & 0xFFFFFFFF)
  return jax.random.fold_in(key, seed >> 32) if seed >> 32 else key


def trial_keys(seed: int, trial_ids: np.ndarray, executions: np.ndarray) -> jax.Array:
  """Key of each (trial, execution): independent of chunking and neighbours."""
  base = seed_key(seed)
  return jax.vmap(lambda t, e: jax.random.fold_in(jax.random.fold_in(base, t), e))(
    jnp.asarray(trial_ids, jnp.uint32), jnp.asarray(executions, jnp.uint32)
  )


def plan_chunks(
  buckets: Sequence[Bucket],
  splits: Splits,
  devices: Sequence[jax.Device],
  *,
  executions: int,
  chunk_size: int | None,
) -> list[Chunk]:
  """Every bucket's runs, trial by trial, cut into chunks of its `sizing.chunk_runs`.

  Args:
    buckets: from `buckets.make_buckets`.
    splits: the data (its sizes bound a run's memory).
    devices: the devices the trial axis is sharded over.
    executions: runs per trial.
    chunk_size: runs per chunk; None: `sizing.chunk_runs`' default. Either way
      rounded up to a multiple of the device count and of `executions`, and
      capped by what fits memory; a bucket with fewer runs is padded to it.

  Raises:
    SearchError: a bucket's smallest chunk does not fit memory (before any
      chunk is planned, so before any compute).
  """
  sizes = [
    sizing.chunk_runs(b.config, splits, devices, executions=executions, chunk_size=chunk_size)
    for b in buckets
  ]
  plan = []
  for index, bucket in enumerate(buckets):
    runs = len(bucket.trial_ids) * executions
    size = sizes[index]
    rows = np.repeat(np.arange(len(bucket.trial_ids)), executions)
    execution = np.tile(np.arange(executions), len(bucket.trial_ids))
    for begin in range(0, runs, size):
      real = min(size, runs - begin)
      pad = size - real
      plan.append(
        Chunk(
          index,
          np.concatenate([rows[begin : begin + real], np.full(pad, rows[begin])]),
          np.concatenate([execution[begin : begin + real], np.zeros(pad, np.int64)]),
          real,
        )
      )
  return plan


def data_on(
  devices: Sequence[jax.Device], splits: Splits, folds: TrainData | None = None
) -> tuple[TrainData, NamedSharding]:
  """Train and dev splits (or `folds`' stacked ones) replicated on `devices` once, and the
  trial-axis sharding."""
  mesh = Mesh(np.asarray(devices), ('trials',))
  data = distributed.put(
    folds or TrainData(splits.x_train, splits.y_train, splits.x_dev, splits.y_dev),
    NamedSharding(mesh, PartitionSpec()),
  )
  return data, NamedSharding(mesh, PartitionSpec('trials'))


def run_chunk(
  programs: segments.Programs,
  chunk: Chunk,
  hp: dict[str, jax.Array],
  trial_ids: np.ndarray,
  data: TrainData,
  sharding: NamedSharding,
  *,
  seed: int,
  lengths: tuple[int, ...],
  in_flight: segments.InFlight | None = None,
  data_digest: str = '',
  folds: int | None = None,
  number: int = 0,
  stopping: Callable[[], bool] | None = None,
) -> Trained:
  """Trains one chunk, in segments (`segments.train`).

  Args:
    programs: the bucket's `segments.programs`.
    chunk: which runs.
    hp: the bucket's traced hyperparameters, `[bucket trials, ...]`.
    trial_ids: `[bucket trials]` ids that key the bucket's trials.
    data: `data_on`'s data; sharding: its trial-axis sharding.
    seed: the search's seed.
    lengths: the epochs of each segment (`segments.segment_lengths`).
    in_flight: where the chunk is saved at segment boundaries, and from
      where a rerun of it goes on; None: nowhere.
    data_digest: what names the data in the chunk's checkpoint.
    folds: K with cross-validation: run `r` of a trial trains on fold `r % K`.
    number: the chunk's place among those its search trains (`segments.train`).
    stopping: polled between segments (`segments.train`).

  Returns:
    The real runs' metrics on the host, the whole `TrainResult` (params
    still on the devices, for the top-k), and the chunk's checkpoint identity.
  """
  keys = trial_keys(seed, trial_ids[chunk.rows], chunk.executions)
  hp = {name: value[chunk.rows] for name, value in hp.items()}
  fold = None
  if folds:
    fold = folds_of_runs(chunk.executions, folds)
  identity = None
  if in_flight is not None:
    devices = sharding.mesh.size
    identity = segments.chunk_identity(programs.config, hp, keys, lengths, devices, data_digest)
  hp, keys, fold = distributed.put((hp, keys, fold), sharding)
  result = segments.train(
    programs,
    hp,
    keys,
    data,
    lengths,
    fold=fold,
    in_flight=in_flight,
    identity=identity,
    number=number,
    stopping=stopping,
  )
  metrics, diverged_step, best_epoch = distributed.fetch(
    (result.metrics, result.diverged_step, result.best_epoch)
  )
  runs = [
    Run(
      {name: curve[j] for name, curve in metrics.items()},
      int(diverged_step[j]),
      int(best_epoch[j]),
    )
    for j in range(chunk.real)
  ]
  return Trained(runs, result, identity)


def trials_of(chunk: Chunk) -> list[tuple[int, np.ndarray]]:
  """(position in the bucket, positions of its runs in the chunk) of each trial in `chunk`."""
  rows = chunk.rows[: chunk.real]
  return [(local, np.flatnonzero(rows == local)) for local in dict.fromkeys(rows.tolist())]

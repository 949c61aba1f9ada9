"""Chunks: a bucket's trials cut into program calls that fit memory, sharded over devices.

A chunk is one call of a bucket's `jit(vmap(train))`: `size` runs (a run is
one execution of one trial), a multiple of the device count, so the trial
axis splits evenly over the devices, and of the executions per trial, so a
trial's runs always share a chunk. The last chunk of a bucket is padded by
repeating its first run; padded results are dropped. A run's key is
`fold_in(fold_in(seed, trial_id), execution)`, so its numbers depend on
neither its chunk nor its neighbours.
"""

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnjax.data import Splits
from bnjax.search.buckets import Bucket
from bnjax.training import TrainConfig, TrainData, TrainResult, make_train

# Bytes a chunk may use where the device does not report its memory (CPU).
HOST_MEMORY_BUDGET = 2 << 30
# Chunks per bucket that `progress_chunk_size` aims at on a CPU.
PROGRESS_CHUNKS = 8


class Chunk(NamedTuple):
  """One program call: runs of one bucket's trials, padding last."""

  bucket: int  # index into the bucket list
  rows: np.ndarray  # [size] int: each run's position in `Bucket.trial_ids`
  executions: np.ndarray  # [size] int: each run's execution index
  real: int  # the first `real` runs are real; the rest repeat the first run

  @property
  def size(self) -> int:
    return len(self.rows)


class Run(NamedTuple):
  """One execution of one trial, as the host sees it after its chunk."""

  metrics: dict[str, np.ndarray]  # 'train_loss', 'dev_loss', 'dev_accuracy': [epochs]
  diverged_step: int  # -1 if it never diverged
  best_epoch: int  # the device's `TrainResult.best_epoch`


def trial_bytes(config: TrainConfig, in_features: int, n_train: int, n_dev: int) -> int:
  """A rough upper bound of one run's memory inside a chunk, in bytes.

  Params live up to five times (params, gradients, two optimizer moments, the
  best snapshot); activations of a training step are kept for the backward
  pass (about six arrays per layer); evaluation holds one chunk's activations.
  """
  width, depth = max(config.hidden_sizes), len(config.hidden_sizes)
  num_params = in_features * width + (depth - 1) * width * width + width * config.num_classes
  train_activations = 6 * config.batch_size * width * depth
  eval_activations = 3 * min(n_dev, config.eval_batch_size) * width * depth
  return 4 * (5 * num_params + train_activations + eval_activations + n_train)


def memory_budget(devices: Sequence[jax.Device]) -> int:
  """Half of what the devices report free, or `HOST_MEMORY_BUDGET` on the CPU."""
  stats = devices[0].memory_stats() if hasattr(devices[0], 'memory_stats') else None
  if not stats or 'bytes_limit' not in stats:
    return HOST_MEMORY_BUDGET
  free = stats['bytes_limit'] - stats.get('bytes_in_use', 0)
  return len(devices) * free // 2


def progress_chunk_size(num_trials: int, devices: Sequence[jax.Device] | None = None) -> int | None:
  """On a CPU, chunks of about `num_trials / 8`; elsewhere None (memory decides).

  A CPU is as busy with 8 trials at once as with 800 (and fastest near 8,
  where a trial's parameters stay in cache), so small chunks cost nothing
  there and let a progress report move; an accelerator needs big ones.
  """
  devices = list(devices or jax.devices())
  if devices[0].platform != 'cpu':
    return None
  return max(len(devices), math.ceil(num_trials / PROGRESS_CHUNKS))


def trial_keys(seed: int, trial_ids: np.ndarray, executions: np.ndarray) -> jax.Array:
  """Key of each (trial, execution): independent of chunking and neighbours."""
  base = jax.random.key(seed)
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
  """Every bucket's runs, trial by trial, cut into chunks.

  Args:
    buckets: from `buckets.make_buckets`.
    splits: the data (its sizes bound a run's memory).
    devices: the devices the trial axis is sharded over.
    executions: runs per trial.
    chunk_size: runs per chunk; None: as many as half the devices' free
      memory holds (`trial_bytes`). Rounded up to a multiple of the device
      count and of `executions`, and down to what the bucket needs.
  """
  unit = math.lcm(len(devices), executions)
  plan = []
  for index, bucket in enumerate(buckets):
    runs = len(bucket.trial_ids) * executions
    size = chunk_size or max(
      1,
      memory_budget(devices)
      // trial_bytes(bucket.config, splits.num_features, len(splits.y_train), len(splits.y_dev)),
    )
    size = -(-min(size, runs) // unit) * unit
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


def data_on(devices: Sequence[jax.Device], splits: Splits) -> tuple[TrainData, NamedSharding]:
  """Train and dev splits replicated on `devices` once, and the trial-axis sharding."""
  mesh = Mesh(np.asarray(devices), ('trials',))
  data = jax.device_put(
    TrainData(splits.x_train, splits.y_train, splits.x_dev, splits.y_dev),
    NamedSharding(mesh, PartitionSpec()),
  )
  return data, NamedSharding(mesh, PartitionSpec('trials'))


def bucket_program(config: TrainConfig, on_trace: Callable[[], None] | None = None):
  """`jit(vmap(train))` of one bucket; `on_trace()` runs each time it traces (compiles)."""
  train = make_train(config)

  def program(hp: dict, keys: jax.Array, data: TrainData) -> TrainResult:
    if on_trace is not None:
      on_trace()
    return jax.vmap(train, in_axes=(0, 0, None))(hp, keys, data)

  return jax.jit(program)


def run_chunk(
  program,
  chunk: Chunk,
  hp: dict[str, jax.Array],
  trial_ids: np.ndarray,
  data: TrainData,
  sharding: NamedSharding,
  *,
  seed: int,
) -> tuple[list[Run], TrainResult]:
  """Trains one chunk.

  Args:
    program: the bucket's `bucket_program`.
    chunk: which runs.
    hp: the bucket's traced hyperparameters, `[bucket trials, ...]`.
    trial_ids: `[bucket trials]` ids that key the bucket's trials.
    data: `data_on`'s data; sharding: its trial-axis sharding.
    seed: the search's seed.

  Returns:
    The real runs' metrics on the host, and the whole `TrainResult` (params
    still on the devices, for the top-k).
  """
  keys = trial_keys(seed, trial_ids[chunk.rows], chunk.executions)
  hp = {name: value[chunk.rows] for name, value in hp.items()}
  result = program(jax.device_put(hp, sharding), jax.device_put(keys, sharding), data)
  metrics, diverged_step, best_epoch = jax.device_get(
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
  return runs, result


def trials_of(chunk: Chunk) -> list[tuple[int, np.ndarray]]:
  """(position in the bucket, positions of its runs in the chunk) of each trial in `chunk`."""
  rows = chunk.rows[: chunk.real]
  return [(local, np.flatnonzero(rows == local)) for local in dict.fromkeys(rows.tolist())]

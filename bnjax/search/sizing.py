"""Sizing: how many runs a chunk holds, and what a bucket costs.

A chunk (`chunks.Chunk`) is one call of a bucket's `jit(vmap(train))`. Its
size is a function of the bucket's program, the data's shapes and the devices
only (`chunk_runs`), never of how many trials a search has: XLA picks its
kernels by shape, and a batch of another size may sum in another order, so a
trial trained in chunks of 3 and of 8 differs in the last bits, and after 40
epochs by points of accuracy. With one size for every chunk of a bucket, a
trial id gives the same numbers bit for bit whether the search has 3 trials
or 3,000, and whether a study runs it first or on resume.

On a CPU a chunk holds as many runs as keep their training state in the
last-level cache (`cpu_chunk`); elsewhere `ACCELERATOR_CHUNK` per device.
Either way it is rounded up to a multiple of the device count and of the
executions per trial, and capped by what fits memory (`runs_that_fit`,
from `trial_bytes`, `data_bytes` and `memory_budget`). `bucket_cost` prices
a bucket in multiply-adds, its compile included, for
`buckets.make_buckets(width_ratio='cost')`.
"""

import math
import os
from collections.abc import Sequence

import jax
import numpy as np

from bnjax.data import Splits
from bnjax.search.checks import SearchError
from bnjax.training import TrainConfig

# Bytes a chunk aims at where the device does not report its memory (CPU).
HOST_MEMORY_BUDGET = 2 << 30
# Runs per chunk on a CPU: the largest power of two whose training state
# (parameters, gradients, two optimizer moments) fits the last-level cache,
# at most `CPU_CHUNK_MAX`. Past that each run slows down as its state falls
# out of cache (`benchmarks/step_costs.py`, 32 MiB L3, with dropout: 3 x 448
# is fastest at 2 to 4 runs and 16 costs 30% more; 3 x 256 runs 2 to 8 within
# the noise), and small chunks pad a small search with few runs.
CPU_CHUNK_MAX = 8
# The last-level cache where the machine does not say (a common server L3).
DEFAULT_CACHE_BYTES = 32 << 20
# The most cache a chunk counts on. A virtual machine sees its host's whole L3
# but shares it with the host's other cores: an Intel Xeon of this project
# reports 480 MiB for its 2 cores, yet 3 x 448 runs 11-12% slower per trial
# at 8 runs than at 4, and 3 x 256 12-14% slower at 16 than at 8
# (`benchmarks/step_costs.py`), as a 32 MiB cache predicts.
CACHE_BYTES_MAX = 32 << 20
# What one compile costs, in multiply-adds of training, so that `bucket_cost`
# can set it against padding: one of the default search's buckets compiles
# in about 6 s on the 2-core CPU, which trains at about 47 GMAC/s (its
# 3 x 448 chunks: 9.5 GFLOP per run-epoch in about 100 ms, docs/performance.md).
COMPILE_MACS = 3e11
# Runs per chunk and device at most elsewhere: enough to keep an accelerator
# busy with small networks, few enough that a small search pads no more.
ACCELERATOR_CHUNK = 1024


def trial_bytes(config: TrainConfig, in_features: int, n_train: int, n_dev: int) -> int:
  """A rough upper bound of one run's memory inside a chunk, in bytes (the data set aside).

  Params live up to five times (params, gradients, two optimizer moments, the
  best snapshot); activations of a training step are kept for the backward
  pass (about six arrays per layer); evaluation holds one chunk's activations;
  a run also holds its permutation of the training split and its curves.
  Python integers: a width of 10**6 must not overflow.
  """
  if config.model == 'cnn':
    return cnn_trial_bytes(config, in_features, n_train, n_dev)
  width, depth = max(config.hidden_sizes), len(config.hidden_sizes)
  train_activations = 6 * config.batch_size * width * depth
  eval_activations = 3 * min(n_dev, config.eval_batch_size) * width * depth
  curves = 4 * config.epochs
  params = num_params(config, in_features)
  return 4 * (5 * params + train_activations + eval_activations + n_train + curves)


def num_params(config: TrainConfig, in_features: int) -> int:
  """Parameters of one run of `config` at its bucket's widest (an upper bound for the CNN)."""
  width, depth = max(config.hidden_sizes), len(config.hidden_sizes)
  if config.model == 'cnn':
    shape = config.input_shape or (in_features, 1)
    positions, in_channels = math.prod(shape[:-1]), shape[-1]
    taps = config.kernel_size ** (len(shape) - 1)
    head = width * positions if config.head == 'flatten' else width
    return taps * (in_channels + (depth - 1) * width) * width + head * config.num_classes
  return in_features * width + (depth - 1) * width * width + width * config.num_classes


def bucket_cost(
  config: TrainConfig,
  depths: np.ndarray,
  splits: Splits,
  chunk: int,
  *,
  executions: int = 1,
  compiled: bool = False,
  epochs: float | None = None,
) -> float:
  """What a bucket of MLP trials of real `depths` at `config` costs, in multiply-adds.

  Its compile (`COMPILE_MACS`; none where the search `compiled` it already),
  plus every run its chunks of `chunk` runs (its `chunk_runs`) hold, the
  filler of the last one included, at the bucket's widest and at the chunk's
  deepest (a chunk skips the layers none of its runs has, `model.vmap_chunk`;
  `depths` in the bucket's order, shallowest first): a forward and the
  backward's two matmuls per training example, a forward per dev example,
  every epoch: `config.epochs` of them, or `epochs` (what a run trains on
  average where runs stop early, as Hyperband's do).
  `buckets.make_buckets(width_ratio='cost')` splits by it. The matmuls stand
  for the whole step: BN, dropout and the optimizer grow with the same
  widths (`benchmarks/step_costs.py`).
  """
  runs = np.repeat(np.asarray(depths, np.int64), executions)
  deepest = np.maximum.reduceat(runs, np.arange(0, len(runs), chunk))
  width = max(config.hidden_sizes)
  at = lambda depth: num_params(config._replace(hidden_sizes=(width,) * depth), splits.num_features)
  chunk_depths, counts = np.unique(deepest, return_counts=True)
  runs_params = sum(int(n) * chunk * at(int(d)) for d, n in zip(chunk_depths, counts, strict=True))
  examples = (config.epochs if epochs is None else epochs) * (
    3 * len(splits.y_train) + len(splits.y_dev)
  )
  return (0.0 if compiled else COMPILE_MACS) + examples * runs_params


def cache_bytes(root: str = '/sys/devices/system/cpu/cpu0/cache') -> int:
  """The CPU's largest data cache in bytes (Linux sysfs `root`), at most `CACHE_BYTES_MAX`.

  `DEFAULT_CACHE_BYTES` where sysfs cannot say. Only the `index*` entries
  are caches (the folder also holds a `uevent` file).
  """
  best = 0
  try:
    for index in sorted(os.listdir(root)):
      if not index.startswith('index'):
        continue
      path = os.path.join(root, index)
      if os.path.exists(os.path.join(path, 'type')):
        with open(os.path.join(path, 'type')) as f:
          if f.read().strip() == 'Instruction':
            continue
      with open(os.path.join(path, 'size')) as f:
        size = f.read().strip().upper()
      scale = {'K': 1 << 10, 'M': 1 << 20}.get(size[-1:], 1)
      best = max(best, int(size.rstrip('KM')) * scale)
  except (OSError, ValueError):
    best = 0
  return min(best, CACHE_BYTES_MAX) if best else DEFAULT_CACHE_BYTES


def cpu_chunk(config: TrainConfig, in_features: int) -> int:
  """Runs per chunk on a CPU: a power of two, 1 to `CPU_CHUNK_MAX`, whose state fits the cache."""
  state = 4 * 4 * num_params(config, in_features)  # float32 params, grads, two moments
  runs = max(1, min(CPU_CHUNK_MAX, cache_bytes() // state))
  return 1 << (runs.bit_length() - 1)


def cnn_trial_bytes(config: TrainConfig, in_features: int, n_train: int, n_dev: int) -> int:
  """`trial_bytes` for `model='cnn'`: activations per position, and the im2col patches.

  A block keeps about six arrays of its output (`batch * positions * channels`)
  for the backward pass, plus its patches (`kernel taps` copies of its
  input). Every block is counted at the input's resolution, an upper bound
  whatever the pooling.
  """
  shape = config.input_shape or (in_features, 1)
  positions, in_channels = math.prod(shape[:-1]), shape[-1]
  width, depth = max(config.hidden_sizes), len(config.hidden_sizes)
  taps = config.kernel_size ** (len(shape) - 1)
  per_example = positions * (6 * width + taps * max(width, in_channels)) * depth
  train_activations = config.batch_size * per_example
  eval_activations = min(n_dev, config.eval_batch_size) * per_example // 2
  curves = 4 * config.epochs
  params = num_params(config, in_features)
  return 4 * (5 * params + train_activations + eval_activations + n_train + curves)


def data_bytes(splits: Splits) -> int:
  """The train and dev splits as one device holds them: float32 features, int32 labels."""
  rows = len(splits.y_train) + len(splits.y_dev)
  return 4 * rows * (splits.num_features + 1)


def memory_budget(devices: Sequence[jax.Device]) -> int:
  """What a chunk aims at: half the devices' total memory, or `HOST_MEMORY_BUDGET` on a CPU.

  Total, not free: the memory in use changes from one moment to the next, and
  the chunk size must not (see the module docstring).
  """
  stats = _memory_stats(devices)
  if stats is None:
    return HOST_MEMORY_BUDGET
  return len(devices) * stats['bytes_limit'] // 2


def memory_available(devices: Sequence[jax.Device]) -> int:
  """What a chunk can use at most: the devices' free memory, or the host's available memory."""
  stats = _memory_stats(devices)
  if stats is not None:
    return len(devices) * (stats['bytes_limit'] - stats.get('bytes_in_use', 0))
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (AttributeError, OSError, ValueError):
    return 2 * HOST_MEMORY_BUDGET


def _memory_stats(devices: Sequence[jax.Device]) -> dict | None:
  # Another process's devices are not this process's to ask (several processes, one search).
  here = jax.process_index()
  mine = [device for device in devices if getattr(device, 'process_index', here) == here]
  device = (mine or devices)[0]
  stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
  return stats if stats and 'bytes_limit' in stats else None


def runs_that_fit(
  config: TrainConfig, splits: Splits, devices: Sequence[jax.Device], *, executions: int = 1
) -> int:
  """Runs of `config` one chunk may hold, a multiple of the smallest chunk.

  The smallest chunk holds `lcm(devices, executions)` runs: the trial axis
  splits evenly over the devices and a trial's runs share a chunk. A chunk
  aims at `memory_budget`, the data set counted once per device; where not
  even the smallest chunk fits the budget it is planned alone if it fits the
  memory available, and otherwise a `SearchError` says what it needs.
  """
  unit = math.lcm(len(devices), executions)
  per_run = trial_bytes(config, splits.num_features, len(splits.y_train), len(splits.y_dev))
  data = len(devices) * data_bytes(splits)
  fits = max(0, memory_budget(devices) - data) // per_run // unit * unit
  if fits:
    return fits
  available = memory_available(devices)
  if data + unit * per_run <= available:
    return unit
  shape = (
    f'{len(config.hidden_sizes)} x {max(config.hidden_sizes):,} units, '
    f'batch size {config.batch_size}'
  )
  what = f'one trial ({shape})' if executions == 1 else f'one trial ({shape}) x {executions} runs'
  needs = f'needs about {_gib(executions * per_run)} GiB of memory'
  if unit > executions:  # the trial axis splits evenly over the devices
    at_once = f'{unit // executions} at once on {len(devices)} devices'
    needs += f' ({at_once}: {_gib(unit * per_run)} GiB)'
  fix = ', or lower executions_per_trial' if executions > 1 else ''
  raise SearchError(
    f'{what} {needs} and the data set {_gib(data)} GiB, but {_gib(available)} GiB is '
    f'available; use fewer or narrower hidden layers or a smaller batch_size{fix}.'
  )


def _gib(size: int) -> str:
  return f'{size / 2**30:,.1f}'


def chunk_runs(
  config: TrainConfig,
  splits: Splits,
  devices: Sequence[jax.Device],
  *,
  executions: int = 1,
  chunk_size: int | None = None,
) -> int:
  """Runs per chunk of a bucket: from its program, the data's shapes and the devices only.

  `chunk_size` if given, else `cpu_chunk` on a CPU and `ACCELERATOR_CHUNK`
  per device elsewhere; rounded up to a multiple of the device count and of
  `executions`, and capped by what fits memory (`runs_that_fit`). Never a
  function of how many trials there are (see the module docstring).
  """
  unit = math.lcm(len(devices), executions)
  fits = runs_that_fit(config, splits, devices, executions=executions)
  if chunk_size is None:
    on_cpu = devices[0].platform == 'cpu'
    if on_cpu:
      chunk_size = cpu_chunk(config, splits.num_features)
    else:
      chunk_size = ACCELERATOR_CHUNK * len(devices)
  return min(-(-chunk_size // unit) * unit, fits)

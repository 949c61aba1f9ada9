"""Throughput at one fixed shape: the BN-MLP 3 x 256, batch 128, Adam, on MNIST-1D.

Every runner trains the same network on the same splits and reports ms per
trial-epoch (one pass over the training split plus the dev evaluation that
every epoch ends with), GFLOP/s from the matmul work that takes, and the
share of the machine's matmul peak measured in the same run.
"""

import functools

import jax
import jax.numpy as jnp

import bnjax
from benchmarks import timing
from bnjax import distributed, model
from bnjax.search import chunks, overlap, segments

HIDDEN = (256, 256, 256)
BATCH_SIZE = 128


def config(epochs: int, num_classes: int, **options) -> bnjax.TrainConfig:
  """The fixed shape; dropout off unless `options` turn it on (the peers train without it).

  `options` may also change `hidden_sizes` (`benchmarks/step_costs.py` does).
  """
  options = {'dropout': False, 'hidden_sizes': HIDDEN, **options}
  return bnjax.TrainConfig(epochs=epochs, batch_size=BATCH_SIZE, num_classes=num_classes, **options)


def train_data(splits) -> bnjax.TrainData:
  return bnjax.TrainData(*(jnp.asarray(a) for a in splits[:4]))


def flops_per_trial_epoch(splits, hidden=HIDDEN, batch_size=BATCH_SIZE) -> float:
  """Matmul FLOPs of one epoch: forward, and the backward's two matmuls, per step; dev forward."""
  sizes = [splits.x_train.shape[1], *hidden, splits.num_classes]
  macs = sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False))
  steps = len(splits.y_train) // batch_size
  return 2.0 * macs * (3 * steps * batch_size + len(splits.y_dev))


def matmul_peak(repeats: int = 5, size: int = 1024) -> dict:
  """GFLOP/s of `jit(jnp.dot)` on `size^2` float32: the best of `4 * repeats` timings of 10 calls.

  The best, not the median: on a shared machine the fastest timing is the
  closest to what the machine can do, so shares of it are conservative.
  """
  a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
  dot = jax.jit(jnp.dot)
  dot(a, a).block_until_ready()

  def ten():
    out = a
    for _ in range(10):
      out = dot(a, a)
    out.block_until_ready()

  measured = timing.repeat(ten, 4 * repeats)
  gflops = 10 * 2 * size**3 / 1e9
  return {
    'gflops': gflops / measured['min'],
    'gflops_median': gflops / measured['median'],
    'load': measured['load'],
  }


def vectorized(
  splits,
  num_trials: int,
  epochs: int,
  repeats: int,
  hp_values=None,
  compiler_options=None,
  skip_layers=False,
  **options,
) -> dict:
  """`jit(vmap(train))` over `num_trials` Adam trials: seconds per call and the compile.

  `hp_values` overrides hyperparameters (`keep_prob`, `widths` and `depth`,
  ...); `options` the `TrainConfig`; `compiler_options` go to XLA
  (`jax.stages.Lowered.compile`). With `skip_layers` the trials are vmapped
  as the engine's chunks are (`model.vmap_chunk`), so that layers no
  trial has are skipped rather than selected away.
  """
  one = bnjax.make_train(config(epochs, splits.num_classes, **options))
  vmap = model.vmap_chunk if skip_layers else jax.vmap

  def chunk(hp, keys, data):
    return vmap(lambda hp, key: one(hp, key, data))(hp, keys)

  train = jax.jit(chunk)
  hp = bnjax.hparams(**(hp_values or {}))
  hp = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_trials, *jnp.shape(v))), hp)
  keys = jax.random.split(jax.random.key(0), num_trials)
  data = train_data(splits)
  compiled, compile_seconds = timing.timed(
    lambda: train.lower(hp, keys, data).compile(compiler_options=compiler_options)
  )
  run = lambda: jax.block_until_ready(compiled(hp, keys, data))
  run()
  measured = timing.repeat(run, repeats)
  return dict(measured, trial_epochs=num_trials * epochs, compile_seconds=compile_seconds)


def engine(splits, num_trials: int, epochs: int, repeats: int, hp_values=None, **options) -> dict:
  """Chunks of `num_trials` Adam runs trained the way `bnjax.search.run_trials` trains them.

  The engine's own code: its data placement (`chunks.data_on`), its
  programs (`segments.programs`) and `segments.train` of one segment of
  `epochs`, whose steps run unchecked and are checked once at its end, with
  `overlap.default_workers` chunks at once (two on one CPU device, where the
  second fills the cores the first leaves idle; one elsewhere). One timed
  call trains every worker's chunk, each with its own keys, so
  `trial_epochs` counts them all. The first call compiles, and
  `compile_seconds` is its excess over the median call. `hp_values` and
  `options` as `vectorized` takes them; as in a search's bucket, the trials
  carry their widths and depth as traced masks (`buckets.traced_hparams`).
  """
  devices = distributed.devices()
  data, sharding = chunks.data_on(devices, splits)
  hidden = list(options.get('hidden_sizes', HIDDEN))
  hp = bnjax.hparams(**{'widths': hidden, 'depth': len(hidden), **(hp_values or {})})
  # As a bucket of these trials would be: without the L2 term where l2 = 0.
  options = {'l2_penalty': bool(jnp.any(hp['l2'] != 0)), **options}
  programs = segments.programs(config(epochs, splits.num_classes, **options), sharding)
  workers = overlap.default_workers(devices)
  hp = jax.tree.map(lambda v: jnp.broadcast_to(v, (num_trials, *jnp.shape(v))), hp)
  keys = [jax.random.split(jax.random.key(i), num_trials) for i in range(workers)]
  hp, keys = distributed.put((hp, keys), sharding)

  def chunk(keys, stopping=None):
    return segments.train(programs, hp, keys, data, (epochs,), stopping=stopping)

  def run():
    tasks = [functools.partial(chunk, chunk_keys) for chunk_keys in keys]
    jax.block_until_ready(list(overlap.in_order(tasks, workers)))

  _, first = timing.timed(run)
  measured = timing.repeat(run, repeats)
  return dict(
    measured,
    trial_epochs=workers * num_trials * epochs,
    compile_seconds=max(0.0, first - measured['median']),
    workers=workers,
  )


def loop(splits, num_trials: int, epochs: int, repeats: int, **options) -> dict:
  """The jitted single-trial `train`, called `num_trials` times in a row."""
  train = jax.jit(bnjax.make_train(config(epochs, splits.num_classes, **options)))
  hp = bnjax.hparams(learning_rate=1e-3)
  keys = jax.random.split(jax.random.key(0), num_trials)
  data = train_data(splits)
  compiled, compile_seconds = timing.timed(lambda: train.lower(hp, keys[0], data).compile())

  def run():
    for key in keys:
      out = compiled(hp, key, data)
    jax.block_until_ready(out)

  run()
  measured = timing.repeat(run, repeats)
  return dict(measured, trial_epochs=num_trials * epochs, compile_seconds=compile_seconds)


def rates(measured: dict, flops: float, peak: float) -> dict:
  """ms per trial-epoch (median, min, max), GFLOP/s and share of `peak` at the median."""
  per = lambda seconds: 1e3 * seconds / measured['trial_epochs']
  gflops = flops * measured['trial_epochs'] / measured['median'] / 1e9
  return {
    'ms_per_trial_epoch': per(measured['median']),
    'ms_min': per(measured['min']),
    'ms_max': per(measured['max']),
    'gflops': gflops,
    'peak_fraction': gflops / peak,
    'load': measured['load'],
    'compile_seconds': measured.get('compile_seconds'),
  }

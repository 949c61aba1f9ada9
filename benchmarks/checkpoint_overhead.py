r"""What a chunk's checkpoint costs against the segment of epochs it follows.

  python benchmarks/checkpoint_overhead.py                  # the default search's widest chunk
  python benchmarks/checkpoint_overhead.py --search         # and the default search, timed

Part 1 builds one chunk of the launcher's default search on `--dataset`: its
widest bucket (`--hidden_units` x `--num_layers`, Adam, select 'final', so
params and two moments), `sizing.chunk_runs` runs, and times, after a
compile, `--repeats` segments of `--segment_epochs` epochs, then as many
saves of the chunk (`segments.InFlight.save`: msgpack, written atomically
with fsync) and restores. The share is save / segment.

Part 2 (`--search`) runs the launcher's default search (`--num_trials` x
`--epochs`) through a study in a temporary directory, the default segments
saved at each boundary, and sums the time spent in saves against the whole.

Timings move with the machine's load: the load average is printed beside them.
"""

import logging
import os
import sys
import tempfile
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
from absl import app, flags

import bnjax.data
from benchmarks import timing
from bnjax import search
from bnjax.search import buckets, chunks, segments, sizing
from bnjax.space import with_defaults

DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')
HIDDEN_UNITS = flags.DEFINE_integer('hidden_units', 448, 'Width (the default space at its widest).')
NUM_LAYERS = flags.DEFINE_integer('num_layers', 3, 'Depth (the default space at its deepest).')
SEGMENT_EPOCHS = flags.DEFINE_integer(
  'segment_epochs', segments.SEGMENT_EPOCHS, 'Epochs per timed segment.'
)
REPEATS = flags.DEFINE_integer('repeats', 3, 'Segments, saves and restores timed.')
SEARCH = flags.DEFINE_bool('search', False, 'Also time the default search (part 2).')
NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Part 2: trials (as random_search.py).')
EPOCHS = flags.DEFINE_integer('epochs', 40, 'Part 2: epochs per trial (as random_search.py).')

logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def spread(measured: dict) -> str:
  """A `timing.repeat` summary: median, range and the 1-minute load beside them."""
  return (
    f'{measured["median"]:.3f} s (range {measured["min"]:.3f} to {measured["max"]:.3f}; '
    f'load {measured["load"]:.1f})'
  )


def one_chunk(splits, directory: str) -> None:
  """Part 1: one save against one segment, for the default search's widest chunk."""
  devices = jax.local_devices()
  size = 64
  table = search.as_space(search.DEFAULT_SPACE).sample(jax.random.key(0), size)
  table['hidden_units'] = np.full(size, HIDDEN_UNITS.value)
  table['num_layers'] = np.full(size, NUM_LAYERS.value)
  table = with_defaults(table, size)
  (bucket,) = buckets.make_buckets(table, epochs=SEGMENT_EPOCHS.value, num_classes=10)
  runs = sizing.chunk_runs(bucket.config, splits, devices)
  data, sharding = chunks.data_on(devices, splits)
  hp = buckets.traced_hparams(table, np.arange(runs), NUM_LAYERS.value)
  keys = chunks.trial_keys(0, np.arange(runs), np.zeros(runs, np.int64))
  hp, keys = jax.device_put((hp, keys), sharding)
  programs = segments.programs(bucket.config, sharding)
  population = programs.init(hp, keys, data, None)
  epochs = SEGMENT_EPOCHS.value
  population, metrics, _ = programs.segment(hp, population, data, None, epochs, False)  # compiles
  jax.block_until_ready(population)

  def segment():  # each timed segment goes on from the last, as in a search
    nonlocal population, metrics
    population, metrics, _ = programs.segment(hp, population, data, None, epochs, False)
    jax.block_until_ready((population, metrics))

  trained = timing.repeat(segment, REPEATS.value)
  curves = {name: np.asarray(metrics[name]) for name in segments.CURVES}
  in_flight = segments.InFlight(directory)
  tree = (population, curves)
  saves = timing.repeat(lambda: in_flight.save('benchmark', tree, epochs, 0, 0), REPEATS.value)
  restored = lambda: in_flight.restore('benchmark', tree, epochs, sharding)[0][0]
  restores = timing.repeat(lambda: jax.block_until_ready(restored()), REPEATS.value)
  size_mb = os.path.getsize(in_flight.path('benchmark')) / 1e6
  print(
    f'one chunk: {runs} runs of {NUM_LAYERS.value} x {HIDDEN_UNITS.value} units (Adam) on '
    f'{DATASET.value}, {len(devices)} {devices[0].platform} device(s)'
  )
  print(f'  segment of {epochs} epochs   {spread(trained)}')
  print(f'  save ({size_mb:.1f} MB)         {spread(saves)}')
  print(f'  restore               {spread(restores)}')
  share = saves['median'] / trained['median']
  per_epoch = trained['median'] / epochs
  print(
    f'  save / segment        {100 * share:.2f}%  '
    f'(segments of 1 epoch: {100 * saves["median"] / per_epoch:.1f}%)'
  )


def whole_search(splits, directory: str) -> None:
  """Part 2: the saves' share of the default search through a study."""
  seconds, count = [0.0], [0]
  save = segments.InFlight.save

  def timed(self, *args, **kwargs):
    start = time.perf_counter()
    try:
      return save(self, *args, **kwargs)
    finally:
      seconds[0] += time.perf_counter() - start
      count[0] += 1

  segments.InFlight.save = timed
  start = time.perf_counter()
  results = search.run(
    'random',
    search.DEFAULT_SPACE,
    splits,
    num_trials=NUM_TRIALS.value,
    epochs=EPOCHS.value,
    top_k=10,
    output_dir=os.path.join(directory, 'search'),
  )
  total = time.perf_counter() - start
  segments.InFlight.save = save
  info = results.info
  print(
    f'default search: {NUM_TRIALS.value} trials x {EPOCHS.value} epochs, {info["chunks"]} '
    f'chunks, {info["segments"]} segments each: {total:.1f} s in all; '
    f'load {timing.load_average():.1f}'
  )
  share = 100 * seconds[0] / total
  print(f'  {count[0]} saves       {seconds[0]:.2f} s  ({share:.2f}% of the search)')


def main(argv):
  del argv
  splits = bnjax.data.load(DATASET.value)
  with tempfile.TemporaryDirectory() as directory:
    one_chunk(splits, directory)
    if SEARCH.value:
      whole_search(splits, directory)


if __name__ == '__main__':
  app.run(main)

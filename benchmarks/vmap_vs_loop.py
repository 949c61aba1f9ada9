r"""The same trials, vectorized in one program against one after another.

  python benchmarks/vmap_vs_loop.py --num_trials=32 --epochs=5

Vectorized: `bnjax.search.run_trials` (buckets, masking, `jit(vmap(train))`).
Loop: each trial alone with the jitted single-trial `train` at its own
(unpadded) width and depth; a compiled program is reused whenever a later
trial has the same shapes. Compile time counts on both sides: a user pays it.
Both sides see the same trials, keys and data; the dev accuracies are
compared to show they trained the same thing.
"""

import os
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
from absl import app, flags

import bnjax
from bnjax import data as bn_data
from bnjax.search import DEFAULT_SPACE, engine, strategies
from bnjax.search import buckets
from bnjax.space import with_defaults

NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Trials on each side.')
EPOCHS = flags.DEFINE_integer('epochs', 5, 'Epochs per trial.')
DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')
SPACE = flags.DEFINE_string('space', DEFAULT_SPACE, 'Search space (widths and depths vary).')
SEED = flags.DEFINE_integer('seed', 0, 'Seed.')


def loop(table, splits, seed, epochs):
  """Trains each trial alone; returns (seconds, dev accuracies, programs compiled)."""
  table = with_defaults(table, len(table['learning_rate']))
  widths = buckets.layer_widths(table)
  data = bnjax.TrainData(splits.x_train, splits.y_train, splits.x_dev, splits.y_dev)
  programs = {}
  accuracies = []
  start = time.perf_counter()
  for trial in range(len(table['learning_rate'])):
    depth = int(table['num_layers'][trial])
    config = bnjax.TrainConfig(
      epochs=epochs,
      batch_size=int(table['batch_size'][trial]),
      hidden_sizes=tuple(int(w) for w in widths[trial, :depth]),
      num_classes=splits.num_classes,
      activation=str(table['activation'][trial]),
      batch_norm=bool(table['batch_norm'][trial]),
      bn_placement=str(table['bn_placement'][trial]),
    )
    if config not in programs:
      programs[config] = jax.jit(bnjax.make_train(config))
    hp = buckets.traced_hparams(table, np.asarray([trial]), depth)
    hp = {name: value[0] for name, value in hp.items() if name not in ('widths', 'depth')}
    key = engine.trial_keys(seed, np.asarray([trial]), np.asarray([0]))[0]
    result = programs[config](hp, key, data)
    accuracies.append(float(result.metrics['dev_accuracy'][-1]))
  return time.perf_counter() - start, np.asarray(accuracies), len(programs)


def main(argv):
  del argv
  splits = bn_data.load(DATASET.value)
  space = strategies.as_space(SPACE.value)
  table = space.sample(jax.random.key(SEED.value), NUM_TRIALS.value)
  print(
    f'{NUM_TRIALS.value} trials x {EPOCHS.value} epochs on {splits.name}, '
    f'{len(jax.devices())} {jax.default_backend()} device(s)'
  )

  start = time.perf_counter()
  results = engine.run_trials(
    table,
    splits,
    seed=SEED.value,
    epochs=EPOCHS.value,
    top_k=0,
    test=False,
    devices=jax.devices()[:1],
  )
  vectorized = time.perf_counter() - start
  looped, loop_accuracy, programs = loop(table, splits, SEED.value, EPOCHS.value)

  vmap_accuracy = results.column('dev_accuracy')
  print(f'{"":12s}{"seconds":>10s}{"trials/s":>10s}{"compiles":>10s}')
  print(
    f'{"vectorized":12s}{vectorized:10.1f}{NUM_TRIALS.value / vectorized:10.2f}'
    f'{results.info["compiles"]:10d}'
  )
  print(f'{"loop":12s}{looped:10.1f}{NUM_TRIALS.value / looped:10.2f}{programs:10d}')
  print(f'speed-up (loop / vectorized): {looped / vectorized:.2f}x')
  print(
    f'largest dev-accuracy difference between the two: '
    f'{np.max(np.abs(vmap_accuracy - loop_accuracy)):.4f}'
  )


if __name__ == '__main__':
  app.run(main)

r"""The same trials, vectorized in one program against one after another.

  python benchmarks/vmap_vs_loop.py --num_trials=24 --epochs=5

Both sides train exactly the trials that `experiments/random_search.py
--seed=S` draws. The vectorized side is `bnjax.search.random_search` itself
(the same space, seed and sampling key as the launcher; buckets, masking,
`jit(vmap(train))`). The loop reads each trial's configuration back from its
results row and trains it alone with the jitted single-trial `train` at its
own (unpadded) width and depth, with the trial's own key
(`bnjax.search.trial_keys`); a compiled program is reused whenever a later
trial has the same static settings. Both sides skip dropout's random numbers
where no trial drops out: the engine decides per bucket, the loop per trial.

Compile time counts on both sides: a user pays it. The dev accuracies are
compared to show that both trained the same thing; they agree to float
rounding, not bitwise, since the two sides run different shapes.
"""

import logging
import os
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
from absl import app, flags

import bnjax
import bnjax.data
from bnjax import search

NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Trials on each side.')
EPOCHS = flags.DEFINE_integer('epochs', 5, 'Epochs per trial.')
DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')
SPACE = flags.DEFINE_string(
  'space', search.DEFAULT_SPACE, "Search space, as random_search.py's --space."
)
SEED = flags.DEFINE_integer('seed', 0, "Seed, as random_search.py's --seed.")
CHUNK_SIZE = flags.DEFINE_integer(
  'chunk_size', 0, 'Trials per vectorized program; 0: as many as memory holds.'
)

# JAX's search for absent TPU/GPU plugins is noise here.
logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def trial_setup(row: dict, num_classes: int, epochs: int) -> tuple[bnjax.TrainConfig, dict]:
  """A results row -> the trial's static config at its own shapes, and its traced hparams."""
  depth = int(row['num_layers'])
  widths = tuple(
    int(row.get(f'hidden_units_{k}', row['hidden_units'])) for k in range(1, depth + 1)
  )
  config = bnjax.TrainConfig(
    epochs=epochs,
    batch_size=int(row['batch_size']),
    hidden_sizes=widths,
    num_classes=num_classes,
    activation=row['activation'],
    batch_norm=bool(row['batch_norm']),
    bn_placement=row['bn_placement'],
    dropout=row['keep_prob'] < 1,
    l2_penalty=row['l2'] != 0,
  )
  traced = bnjax.hparams()  # every traced name, with its default
  hp = bnjax.hparams(**{name: row[name] for name in traced if name in row})
  return config, hp


def loop(results: search.Results, splits, seed: int, epochs: int):
  """Trains each trial of `results` alone; returns (seconds, dev accuracies, compiles)."""
  train_data = bnjax.TrainData(splits.x_train, splits.y_train, splits.x_dev, splits.y_dev)
  ids = np.asarray([row['trial_id'] for row in results.rows])
  keys = search.trial_keys(seed, ids, np.zeros_like(ids))
  programs = {}
  accuracies = []
  start = time.perf_counter()
  for row, key in zip(results.rows, keys, strict=True):
    config, hp = trial_setup(row, splits.num_classes, epochs)
    if config not in programs:
      programs[config] = jax.jit(bnjax.make_train(config))
    result = programs[config](hp, key, train_data)
    accuracies.append(float(result.metrics['dev_accuracy'][-1]))
  return time.perf_counter() - start, np.asarray(accuracies), len(programs)


def main(argv):
  del argv
  splits = bnjax.data.load(DATASET.value)
  print(
    f'{NUM_TRIALS.value} trials x {EPOCHS.value} epochs on {splits.name} '
    f'(random_search.py --seed={SEED.value}), {jax.default_backend()} device'
  )

  start = time.perf_counter()
  results = search.random_search(
    SPACE.value,
    splits,
    NUM_TRIALS.value,
    seed=SEED.value,
    epochs=EPOCHS.value,
    top_k=0,
    test=False,
    chunk_size=CHUNK_SIZE.value or None,
    devices=jax.devices()[:1],
  )
  vectorized = time.perf_counter() - start
  looped, loop_accuracy, programs = loop(results, splits, SEED.value, EPOCHS.value)

  vmap_accuracy = results.column('dev_accuracy')
  print(f'{"":12s}{"seconds":>10s}{"trials/s":>10s}{"compiles":>10s}')
  print(
    f'{"vectorized":12s}{vectorized:10.1f}{NUM_TRIALS.value / vectorized:10.2f}'
    f'{results.info["compiles"]:10d}'
  )
  print(f'{"loop":12s}{looped:10.1f}{NUM_TRIALS.value / looped:10.2f}{programs:10d}')
  print(f'speed-up (loop / vectorized): {looped / vectorized:.2f}x')
  print(
    'largest dev-accuracy difference between the two (float rounding): '
    f'{np.nanmax(np.abs(vmap_accuracy - loop_accuracy)):.4f}'
  )


if __name__ == '__main__':
  app.run(main)

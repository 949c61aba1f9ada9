r"""The obvious alternative: Optuna (TPE) chooses, PyTorch eager trains, one trial at a time.

  python -m benchmarks.optuna_peer --seed=0              # 24 trials x 40 epochs, the default space

Same space (bnjax's default, through the ledger's Optuna distributions),
budget and splits as `experiments/random_search.py`; the dev split selects
(final epoch's accuracy), the winner sees the test split once. Prints one
JSON line: wall seconds (imports aside, data loading included), the
winner's dev and test accuracy, and its configuration.
"""

import json
import logging
import os
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import optuna
import torch
from absl import app, flags

import bnjax.data
from benchmarks import peer_torch
from bnjax import search
from bnjax.search import ledger
from bnjax.space import DEFAULTS

SEED = flags.DEFINE_integer('seed', 0, 'Seed of the sampler and of every trial.')
NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Trials.')
EPOCHS = flags.DEFINE_integer('epochs', 40, 'Epochs per trial.')
SPACE = flags.DEFINE_string('space', search.DEFAULT_SPACE, "As random_search.py's --space.")
DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')
TORCH_THREADS = flags.DEFINE_integer(
  'torch_threads',
  0,
  "PyTorch's intra-op threads; 0: its default (one per core). On a machine shared with other "
  'jobs, 1 thread can be several times faster than 2 (spinning threads wait on each other).',
)


def main(argv):
  del argv
  start = time.perf_counter()
  if TORCH_THREADS.value:
    torch.set_num_threads(TORCH_THREADS.value)
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  splits = bnjax.data.load(DATASET.value)
  space = search.as_space(SPACE.value)
  study = optuna.create_study(
    direction='maximize', sampler=optuna.samplers.TPESampler(seed=SEED.value)
  )
  distributions = ledger.distributions(space)
  trials = {}
  for number in range(NUM_TRIALS.value):
    ask = study.ask(distributions)
    hp = {**DEFAULTS, **ledger.values(space, ask)}
    trial = peer_torch.Trial(hp, splits, seed=SEED.value * 100_003 + number)
    accuracy = float('nan')
    for _ in range(EPOCHS.value):
      accuracy = trial.epoch()
    trials[number] = (trial, hp)
    study.tell(ask, accuracy)
  best = study.best_trial
  winner, hp = trials[best.number]
  test_accuracy = winner.accuracy(splits.x_test, splits.y_test)
  print(
    json.dumps(
      {
        'seconds': time.perf_counter() - start,
        'dev_accuracy': best.value,
        'test_accuracy': test_accuracy,
        'torch_threads': torch.get_num_threads(),
        'winner': {name: hp[name] for name in space.names},
      }
    )
  )


if __name__ == '__main__':
  app.run(main)

r"""Random search against Bayesian search (TPE) at an equal budget, over several search seeds.

  python benchmarks/strategies.py                       # 48 trials x 40 epochs, seeds 0..4
  python benchmarks/strategies.py --num_trials=16 --epochs=10 --seeds=2 --trials_per_round=8

Both sides search `search.DEFAULT_SPACE` (the launcher's) on the same data
with the same engine settings and the same budget of trials, and each tests
its dev-selected winner once. For each strategy the script reports the
median and spread (min..max over search seeds) of the winner's test accuracy
and dev accuracy, and wall time; it draws the best dev accuracy so far
against trials spent (median over seeds, in trial-number order, which is the
order both strategies made their trials in) into
<output_dir>/strategies.png, and writes every number to strategies.json.

Each run keeps its study under <output_dir>/<strategy>_seed<S>, so a rerun
resumes what is there instead of starting again: remove the directory for
fresh timings.
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

import bnjax.data
from bnjax import files, search

NUM_TRIALS = flags.DEFINE_integer('num_trials', 48, 'Trials per search (the budget).')
EPOCHS = flags.DEFINE_integer('epochs', 40, 'Epochs per trial.')
SEEDS = flags.DEFINE_integer('seeds', 5, 'Search seeds 0..seeds-1 per strategy.')
TRIALS_PER_ROUND = flags.DEFINE_integer(
  'trials_per_round', 0, 'bayes: trials per round; 0: the default (8 on a CPU).'
)
SAMPLER = flags.DEFINE_string('sampler', 'tpe', 'bayes: the sampler.')
DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')
SPACE = flags.DEFINE_string('space', search.DEFAULT_SPACE, 'The space both search.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs/strategies', 'Studies, JSON and the figure.')

logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
STRATEGIES = ('random', 'bayes')


def one_search(strategy: str, seed: int, splits) -> dict:
  """One search; its winner's numbers and its best-so-far curve."""
  options = dict(num_trials=NUM_TRIALS.value, seed=seed, epochs=EPOCHS.value, top_k=1)
  if strategy == 'bayes':
    options |= dict(trials_per_round=TRIALS_PER_ROUND.value or None, sampler=SAMPLER.value)
  output_dir = os.path.join(OUTPUT_DIR.value, f'{strategy}_seed{seed}')
  start = time.perf_counter()
  results = search.run(strategy, SPACE.value, splits, output_dir=output_dir, **options)
  seconds = time.perf_counter() - start
  winner = results.best(1)[0]
  dev = np.nan_to_num(results.column('dev_accuracy'), nan=0.0)
  return {
    'strategy': strategy,
    'seed': seed,
    'seconds': seconds,
    'winner_trial': winner['trial_id'],
    'winner_dev_accuracy': winner['dev_accuracy'],
    'winner_test_accuracy': winner['test_accuracy'],
    'best_so_far': np.maximum.accumulate(dev).tolist(),
  }


def summary(runs: list[dict], key: str) -> str:
  values = np.asarray([run[key] for run in runs], np.float64)
  return f'{np.median(values):.4f} ({values.min():.4f}..{values.max():.4f})'


def plot(runs: list[dict], path: str) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for strategy in STRATEGIES:
    curves = np.asarray([run['best_so_far'] for run in runs if run['strategy'] == strategy])
    trials = np.arange(1, curves.shape[1] + 1)
    ax.plot(trials, np.median(curves, axis=0), label=f'{strategy} (median)')
    ax.fill_between(trials, curves.min(axis=0), curves.max(axis=0), alpha=0.2)
  ax.set_xlabel('trials spent')
  ax.set_ylabel('best dev accuracy so far')
  ax.set_title(f'{DATASET.value}: {NUM_TRIALS.value} trials x {EPOCHS.value} epochs')
  ax.legend()
  fig.tight_layout()
  with files.atomic_open(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  splits = bnjax.data.load(DATASET.value)
  print(
    f'{DATASET.value}: {NUM_TRIALS.value} trials x {EPOCHS.value} epochs per search, '
    f'seeds 0..{SEEDS.value - 1}, on {len(jax.devices())} {jax.default_backend()} device(s)'
  )
  runs = []
  for seed in range(SEEDS.value):
    for strategy in STRATEGIES:
      run = one_search(strategy, seed, splits)
      runs.append(run)
      print(
        f'  {strategy:>6} seed {seed}: winner trial {run["winner_trial"]:>3}  '
        f'dev {run["winner_dev_accuracy"]:.4f}  test {run["winner_test_accuracy"]:.4f}  '
        f'{run["seconds"]:.0f} s'
      )
  os.makedirs(OUTPUT_DIR.value, exist_ok=True)
  print('strategy  winner test accuracy, median (min..max)  winner dev accuracy  seconds')
  for strategy in STRATEGIES:
    mine = [run for run in runs if run['strategy'] == strategy]
    print(
      f'{strategy:>8}  {summary(mine, "winner_test_accuracy"):>38}  '
      f'{summary(mine, "winner_dev_accuracy")}  {summary(mine, "seconds")}'
    )
  plot(runs, os.path.join(OUTPUT_DIR.value, 'strategies.png'))
  files.write_json(os.path.join(OUTPUT_DIR.value, 'strategies.json'), runs)
  print(f'wrote {OUTPUT_DIR.value}/strategies.png, strategies.json')


if __name__ == '__main__':
  app.run(main)

"""Holdout against 5-fold selection of the default search's winner on MNIST-1D.

For each search seed, the same configurations (the launcher's default space,
sampled by that seed) are ranked twice: by the 400-example dev split
(holdout), and by the mean dev accuracy over 5 stratified folds of train+dev
(`cv=5`). Each winner is tested once: the holdout winner's model, and the cv
winner's fold ensemble. The optimism gap is the winner's selecting dev
accuracy minus its test accuracy.
"""

import numpy as np
from matplotlib.figure import Figure

from bnjax import search
from experiments.claims import common

CLAIM = (
  'k-fold cross-validated selection picks winners whose dev accuracy is less optimistic '
  '(and whose test accuracy is at least as good) than a single 400-example dev split'
)

QUICK_SPACE = 'learning_rate=log:5e-3:5e-2,hidden_units=int:16:24,num_layers=int:1:1'


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  seeds = 1 if quick else 3
  num_trials, epochs, folds = (2, 1, 2) if quick else (6, 20, 5)
  spec = QUICK_SPACE if quick else search.DEFAULT_SPACE
  space = search.as_space(spec)
  per_seed = []
  for seed in range(seeds):
    options = dict(seed=seed, epochs=epochs, top_k=1)
    holdout = search.random_search(space, splits, num_trials, **options).best(1)[0]
    crossed = search.random_search(space, splits, num_trials, cv=folds, **options).best(1)[0]
    per_seed.append(
      {
        'seed': seed,
        'holdout': _winner(holdout),
        'cv': _winner(crossed),
      }
    )
  numbers = {
    'claim': CLAIM,
    'settings': dict(space=spec, num_trials=num_trials, epochs=epochs, cv=folds, seeds=seeds),
    'per_seed': per_seed,
  }
  for method in ('holdout', 'cv'):
    numbers[method] = {
      name: common.interval([s[method][name] for s in per_seed])
      for name in ('test_accuracy', 'dev_accuracy', 'optimism_gap')
    }
  return numbers, _figure(per_seed)


def _winner(row: dict) -> dict:
  return {
    'trial_id': row['trial_id'],
    'dev_accuracy': row['dev_accuracy'],
    'dev_accuracy_std': row['dev_accuracy_std'],
    'test_accuracy': row['test_accuracy'],
    'optimism_gap': row['dev_accuracy'] - row['test_accuracy'],
  }


def _figure(per_seed: list[dict]) -> Figure:
  figure = Figure(figsize=(9, 3.6))
  left, right = figure.subplots(1, 2)
  seeds = np.arange(len(per_seed))
  for offset, method, label in (
    (-0.15, 'holdout', 'holdout (dev split)'),
    (0.15, 'cv', '5-fold cv'),
  ):
    test = [100 * s[method]['test_accuracy'] for s in per_seed]
    gap = [100 * s[method]['optimism_gap'] for s in per_seed]
    left.bar(seeds + offset, test, width=0.3, label=label)
    right.bar(seeds + offset, gap, width=0.3, label=label)
  left.set(xlabel='search seed', ylabel="winner's test accuracy (%)", title='Winner on test')
  lows = [100 * min(s['holdout']['test_accuracy'], s['cv']['test_accuracy']) for s in per_seed]
  left.set_ylim(min(lows) - 5, 100)
  right.set(xlabel='search seed', ylabel='dev - test (points)', title='Optimism gap')
  right.axhline(0, color='black', linewidth=0.8)
  for axes in (left, right):
    axes.set_xticks(seeds)
    axes.legend()
  return figure

"""Claim 1: random search beats a grid at equal budget when few hyperparameters matter.

A two-dimensional space where the learning rate matters and Adam's epsilon
(1e-10 .. 1e-6) barely does: a 5 x 5 grid against 25 random trials, for
several search seeds (the grid's values are fixed; its runs' seeds change).
Each search's winner is picked on dev and tested once.
"""

import jax
import numpy as np
from matplotlib.figure import Figure

from bnjax.space import as_space
from experiments.claims import common

CLAIM = (
  'In a grid, you try only a few values of the one hyperparameter that matters; sampling '
  'at random tries as many values as there are trials, so it finds a good value more often '
  '(Bergstra & Bengio 2012).'
)
SPACE = 'learning_rate=log:1e-4:1,eps=log:1e-10:1e-6'
FIXED = dict(optimizer='adam', hidden_units=64, num_layers=2, batch_size=128)


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  points, seeds, epochs = (2, 1, 1) if quick else (5, 4, 6)
  budget = points * points
  space = as_space(SPACE)
  grid = space.grid(points)
  tables, method, search_seed = [], [], []
  for seed in range(seeds):
    sampled = space.sample(jax.random.key(1000 + seed), budget)
    for name, table in (('grid', grid), ('random', sampled)):
      tables.append(table)
      method += [name] * budget
      search_seed += [seed] * budget
  table = {
    name: np.concatenate([np.asarray(t[name], np.float64) for t in tables]) for name in space.names
  }
  table |= {name: np.asarray([value] * len(method)) for name, value in FIXED.items()}
  results, kept = common.train(table, splits, epochs=epochs)
  method, search_seed = np.asarray(method), np.asarray(search_seed)
  dev = results.column('dev_accuracy')
  per_method, summary = {}, []
  for name in ('grid', 'random'):
    best_dev, best_test, distinct = [], [], []
    for seed in range(seeds):
      rows = np.flatnonzero((method == name) & (search_seed == seed))
      winner = rows[np.nanargmax(np.where(np.isfinite(dev[rows]), dev[rows], -1))]
      best_dev.append(dev[winner])
      best_test.append(common.test_accuracy(kept[int(results.rows[winner]['trial_id'])], splits))
      distinct.append(len(np.unique(table['learning_rate'][rows])))
    per_method[name] = {
      'distinct_learning_rates': distinct,
      'best_dev_accuracy': common.interval(best_dev),
      'winner_test_accuracy': common.interval(best_test),
      'per_seed_best_dev': best_dev,
      'per_seed_winner_test': best_test,
    }
    summary.append(
      f'{name}: {int(np.mean(distinct))} distinct learning rates; best dev '
      f'{common.show(per_method[name]["best_dev_accuracy"])}; winner test '
      f'{common.show(per_method[name]["winner_test_accuracy"])}'
    )
  numbers = {
    'claim': CLAIM,
    'settings': dict(space=SPACE, fixed=FIXED, budget=budget, seeds=seeds, epochs=epochs),
    'methods': per_method,
    'summary': summary,
  }
  first = search_seed == 0
  return numbers, _figure(table, dev, method, first, per_method)


def _figure(table, dev, method, first, per_method) -> Figure:
  figure = Figure(figsize=(10, 4))
  left, right = figure.subplots(1, 2)
  for name, marker in (('grid', 's'), ('random', 'o')):
    rows = first & (method == name)
    left.scatter(
      table['learning_rate'][rows], 100 * dev[rows], marker=marker, label=name, alpha=0.7
    )
  left.set_xscale('log')
  left.set(
    xlabel='learning rate (Adam)', ylabel='dev accuracy (%)', title='Search seed 0: 25 trials each'
  )
  left.legend()
  for x, name in enumerate(('grid', 'random')):
    values = 100 * np.asarray(per_method[name]['per_seed_winner_test'])
    right.scatter(
      np.full(len(values), x) + np.linspace(-0.08, 0.08, len(values)), values, alpha=0.6
    )
    summary = per_method[name]['winner_test_accuracy']
    lo, hi = summary['ci95']
    right.errorbar(
      [x + 0.2],
      [100 * summary['mean']],
      yerr=[[100 * (summary['mean'] - lo)], [100 * (hi - summary['mean'])]],
      fmt='k_',
      capsize=4,
    )
  right.set_xticks([0, 1], ['5 x 5 grid', '25 random'])
  right.set(ylabel="winner's test accuracy (%)", title='Each search seed (dots), mean and 95% CI')
  return figure

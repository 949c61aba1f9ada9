"""Claim 3: coarse to fine against random search at equal total budget.

Coarse to fine (`bnjax.search.coarse_to_fine`): round 1 samples half the
budget over the whole space; round 2 samples the other half in a box shrunk
around the best tenth. Random search spends the whole budget at once. Each
search's winner is picked on dev and tested once (`top_k=1`).
"""

import numpy as np
from matplotlib.figure import Figure

from bnjax import search
from experiments.claims import common

CLAIM = (
  'Coarse to fine: after sampling the whole space, zoom in on the region where the best '
  'points are and sample more densely there.'
)
SPACE = 'learning_rate=log:1e-4:1,beta1=1mlog:0.5:0.999,hidden_units=fixed:64,num_layers=fixed:2'


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  budget, seeds, epochs = (4, 1, 1) if quick else (16, 3, 6)
  options = dict(epochs=epochs, top_k=1)
  outcome = {'coarse_to_fine': [], 'random': []}
  for seed in range(seeds):
    fine = search.run(
      'coarse_to_fine', SPACE, splits, num_trials=budget // 2, rounds=2, seed=seed, **options
    )
    flat = search.run('random', SPACE, splits, num_trials=budget, seed=seed, **options)
    for name, results in (('coarse_to_fine', fine), ('random', flat)):
      winner = results.best(1)[0]
      outcome[name].append((winner['dev_accuracy'], winner['test_accuracy']))
  methods, summary = {}, []
  for name, pairs in outcome.items():
    dev, test = np.asarray(pairs).T
    methods[name] = {
      'best_dev_accuracy': common.interval(dev),
      'winner_test_accuracy': common.interval(test),
      'per_seed': [{'dev': d, 'test': t} for d, t in pairs],
    }
    summary.append(
      f'{name}: best dev {common.show(methods[name]["best_dev_accuracy"])}; winner test '
      f'{common.show(methods[name]["winner_test_accuracy"])}'
    )
  numbers = {
    'claim': CLAIM,
    'settings': dict(space=SPACE, budget=budget, rounds=2, seeds=seeds, epochs=epochs),
    'methods': methods,
    'summary': summary,
  }
  return numbers, _figure(methods)


def _figure(methods) -> Figure:
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  for x, cell in enumerate(methods.values()):
    for offset, key, marker, color in ((-0.1, 'dev', 'o', 'C0'), (0.1, 'test', 's', 'C1')):
      values = [100 * s[key] for s in cell['per_seed']]
      label = key if x == 0 else None
      axes.scatter([x + offset] * len(values), values, marker=marker, color=color, label=label)
  axes.set_xticks([0, 1], list(methods))
  axes.set(ylabel="winner's accuracy (%)", title='Equal budget; one dot per search seed')
  axes.legend(title="winner's")
  return figure

"""Claim 5: BN before or after the activation (the notes show both Keras variants).

The same MLP (relu, Adam) with BN before the activation (z -> BN -> g) and
after it (g -> BN), over a few learning rates and several seeds.
"""

import numpy as np
from matplotlib.figure import Figure

from experiments.claims import common

CLAIM = (
  'BN can normalize z, before the activation (Dense -> BatchNormalization -> Activation), '
  'or the activation, after it (Dense with activation -> BatchNormalization): the notes show '
  'both Keras variants; Ioffe & Szegedy put it before each nonlinearity.'
)
PLACEMENTS = ('before', 'after')


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  rates = np.asarray([3e-3] if quick else [1e-3, 3e-3, 1e-2, 3e-2])
  seeds, epochs, units = (1, 1, 16) if quick else (3, 8, 64)
  configs = [
    dict(
      bn_placement=p,
      learning_rate=float(r),
      optimizer='adam',
      hidden_units=units,
      num_layers=3,
      batch_size=128,
    )
    for p in PLACEMENTS
    for r in rates
  ]
  table, _, _ = common.repeat(configs, seeds)
  results, _ = common.train(table, splits, epochs=epochs)
  dev = results.column('dev_accuracy').reshape(len(PLACEMENTS), len(rates), seeds)
  cells, summary = {}, []
  for p, placement in enumerate(PLACEMENTS):
    per_rate = {f'{r:g}': common.interval(dev[p, i]) for i, r in enumerate(rates)}
    best = int(np.nanargmax(np.nanmean(dev[p], axis=1)))
    cells[placement] = {'per_learning_rate': per_rate, 'best_rate': float(rates[best])}
    summary.append(
      f'BN {placement} the activation: best lr {rates[best]:g}, dev '
      f'{common.show(per_rate[f"{rates[best]:g}"])}'
    )
  difference = dev[0] - dev[1]  # before - after, per rate and seed (seeds not paired)
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      learning_rates=rates.tolist(),
      seeds=seeds,
      epochs=epochs,
      hidden=[units] * 3,
      activation='relu',
      optimizer='adam',
    ),
    'dev_accuracy': cells,
    'before_minus_after_at_each_best': common.interval(
      dev[0, _best(dev[0])] - np.nanmean(dev[1, _best(dev[1])])
    ),
    'before_minus_after_all_rates_mean': float(np.nanmean(difference)),
    'summary': summary,
  }
  return numbers, _figure(rates, cells)


def _best(dev: np.ndarray) -> int:
  return int(np.nanargmax(np.nanmean(dev, axis=1)))


def _figure(rates, cells) -> Figure:
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  for placement, cell in cells.items():
    mean, lo, hi = common.band(cell['per_learning_rate'][f'{r:g}'] for r in rates)
    axes.errorbar(
      rates, mean, yerr=[mean - lo, hi - mean], marker='o', capsize=3, label=f'BN {placement} relu'
    )
  axes.set_xscale('log')
  axes.set(
    xlabel='learning rate (Adam; log axis)',
    ylabel='dev accuracy (%)',
    title='MNIST-1D, 3-layer relu MLP: mean, 95% CI',
  )
  axes.legend()
  return figure

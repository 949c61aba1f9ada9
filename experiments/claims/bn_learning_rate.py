"""Claim 4: batch norm makes training robust to the learning rate and allows larger ones.

One sweep of learning rates (plain SGD, as in Ioffe & Szegedy's MNIST
experiment: 3 hidden layers of 100 units), with and without BN, for relu
and sigmoid. The robustness measure is the width, in decades, of the
learning-rate range whose dev accuracy is within 1 point of that curve's best.
"""

import numpy as np
from matplotlib.figure import Figure

from experiments.claims import common

CLAIM = (
  'Batch norm makes training more robust to the choice of learning rate and allows '
  'much higher learning rates (Ioffe & Szegedy 2015: sigmoid 3x100 on MNIST).'
)
WITHIN = 0.01  # "within 1 point of the best"


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  rates = np.logspace(-3, 1, 3 if quick else 9)
  seeds, epochs, units = (1, 1, 16) if quick else (3, 8, 100)
  variants = [(act, bn) for act in ('relu', 'sigmoid') for bn in (True, False)]
  configs = [
    dict(
      activation=act,
      batch_norm=bn,
      learning_rate=float(rate),
      optimizer='sgd',
      hidden_units=units,
      num_layers=3,
      batch_size=64,
      init='he' if act == 'relu' else 'xavier',
    )
    for act, bn in variants
    for rate in rates
  ]
  table, config_of, seed_of = common.repeat(configs, seeds)
  results, _ = common.train(table, splits, epochs=epochs)
  accuracy = results.column('dev_accuracy').reshape(len(variants), len(rates), seeds)
  curves, summary = {}, []
  for v, (act, bn) in enumerate(variants):
    label = f'{act}, {"BN" if bn else "no BN"}'
    per_rate = [common.interval(accuracy[v, r]) for r in range(len(rates))]
    widths = [_width(rates, accuracy[v, :, s]) for s in range(seeds)]
    curves[label] = {
      'dev_accuracy': per_rate,
      'width_decades_of_mean_curve': _width(rates, np.nanmean(accuracy[v], axis=1)),
      'width_decades_per_seed': common.interval(widths),
      'best_rate_of_mean_curve': float(rates[np.nanargmax(np.nanmean(accuracy[v], axis=1))])
      if np.isfinite(accuracy[v]).any()
      else None,
      'largest_rate_without_divergence': _largest_stable(rates, accuracy[v]),
    }
    c = curves[label]
    summary.append(
      f'{label}: best {common.show(max(per_rate, key=lambda i: i["mean"] or -1))} at lr '
      f'{c["best_rate_of_mean_curve"]}; within 1 pt over {c["width_decades_of_mean_curve"]:.2f} '
      f'decades; largest lr that never diverged {c["largest_rate_without_divergence"]}'
    )
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      learning_rates=rates.tolist(),
      seeds=seeds,
      epochs=epochs,
      hidden=[units] * 3,
      optimizer='sgd',
      batch_size=64,
    ),
    'curves': curves,
    'summary': summary,
  }
  return numbers, _figure(rates, curves)


def _width(rates: np.ndarray, accuracy: np.ndarray) -> float:
  """Decades spanned by the contiguous run of rates within `WITHIN` of the best (NaN: diverged)."""
  acc = np.where(np.isfinite(accuracy), accuracy, -np.inf)
  if not np.isfinite(acc).any():
    return 0.0
  best = int(np.argmax(acc))
  good = acc >= acc[best] - WITHIN
  low = high = best
  while low > 0 and good[low - 1]:
    low -= 1
  while high < len(rates) - 1 and good[high + 1]:
    high += 1
  return float(np.log10(rates[high] / rates[low]))


def _largest_stable(rates: np.ndarray, accuracy: np.ndarray) -> float | None:
  """The largest rate at which no seed diverged."""
  stable = np.all(np.isfinite(accuracy), axis=1)
  return float(rates[stable].max()) if stable.any() else None


def _figure(rates: np.ndarray, curves: dict) -> Figure:
  figure = Figure(figsize=(7, 4.2))
  axes = figure.subplots()
  for label, curve in curves.items():
    mean, lo, hi = common.band(curve['dev_accuracy'])
    style = '-' if 'no BN' not in label else '--'
    (line,) = axes.plot(rates, mean, style, marker='o', markersize=3, label=label)
    axes.fill_between(rates, lo, hi, color=line.get_color(), alpha=0.2)
  axes.set_xscale('log')
  axes.set(
    xlabel='learning rate (SGD)',
    ylabel='dev accuracy after training (%)',
    title='MNIST-1D, 3 x 100 MLP: mean and 95% interval over seeds',
  )
  axes.axhline(10, color='gray', linewidth=0.8, linestyle=':', label='chance')
  axes.legend()
  return figure

"""Claim 9: optimizers and learning-rate decay.

Part A: sgd, momentum, RMSprop and Adam, each over its own learning-rate
range (6 log-spaced rates), best rate per optimizer. Part B: Adam at a high
rate, with constant, inverse-time (alpha0 / (1 + d * epoch)) and exponential
(alpha0 * (1 - d)**epoch) decay. One program: optimizer and schedule are traced.
"""

import numpy as np
from matplotlib.figure import Figure

from experiments.claims import common

CLAIM = (
  'Momentum, RMSprop and Adam (which combines them) speed up gradient descent; Adam with '
  'its defaults works across a wide range of problems. Slowly reducing the learning rate '
  '(learning-rate decay) helps the end of training.'
)
RANGES = {
  'sgd': (1e-2, 3.0),
  'momentum': (1e-2, 3.0),
  'rmsprop': (1e-4, 3e-2),
  'adam': (1e-4, 3e-2),
}
SCHEDULES = [
  ('constant', 0.0),
  ('inverse_time', 0.1),
  ('inverse_time', 0.5),
  ('exponential', 0.1),
  ('exponential', 0.3),
]
DECAY_RATE = 1e-2  # Adam at a rate above its best constant one, where decay has work to do


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  count, seeds, epochs = (2, 1, 1) if quick else (5, 3, 8)
  fixed = dict(hidden_units=16 if quick else 64, num_layers=2, batch_size=128)
  configs = [
    dict(optimizer=name, learning_rate=float(rate), lr_schedule='constant', lr_decay=0.0, **fixed)
    for name, (low, high) in RANGES.items()
    for rate in np.geomspace(low, high, count)
  ]
  configs += [
    dict(optimizer='adam', learning_rate=DECAY_RATE, lr_schedule=s, lr_decay=d, **fixed)
    for s, d in SCHEDULES
  ]
  table, config_of, _ = common.repeat(configs, seeds)
  results, _ = common.train(table, splits, epochs=epochs)
  dev = results.column('dev_accuracy').reshape(len(configs), seeds)
  curves = results.curves['dev_accuracy'].reshape(len(configs), seeds, epochs)
  optimizers, summary = {}, []
  for o, (name, (low, high)) in enumerate(RANGES.items()):
    rows = slice(o * count, (o + 1) * count)
    rates = np.geomspace(low, high, count)
    mean = np.nanmean(np.where(np.isfinite(dev[rows]), dev[rows], np.nan), axis=1)
    best = int(np.nanargmax(mean))
    optimizers[name] = {
      'rates': rates.tolist(),
      'per_rate': [common.interval(dev[rows][i]) for i in range(count)],
      'best_rate': float(rates[best]),
      'best': common.interval(dev[rows][best]),
      'best_curve': np.nanmean(curves[rows][best], axis=0).tolist(),
    }
    summary.append(
      f'{name}: best lr {rates[best]:.3g}, dev {common.show(optimizers[name]["best"])}'
    )
  schedules = {}
  for s, (schedule, decay) in enumerate(SCHEDULES):
    row = len(RANGES) * count + s
    label = f'{schedule} d={decay:g}' if decay else schedule
    schedules[label] = {
      'dev': common.interval(dev[row]),
      'curve': np.nanmean(curves[row], axis=0).tolist(),
    }
    summary.append(f'Adam lr {DECAY_RATE:g}, {label}: dev {common.show(schedules[label]["dev"])}')
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      ranges=RANGES,
      rates_per_optimizer=count,
      seeds=seeds,
      epochs=epochs,
      fixed=fixed,
      decay_learning_rate=DECAY_RATE,
    ),
    'optimizers': optimizers,
    'schedules': schedules,
    'summary': summary,
  }
  return numbers, _figure(optimizers, schedules)


def _figure(optimizers, schedules) -> Figure:
  figure = Figure(figsize=(11, 4))
  left, right = figure.subplots(1, 2)
  for name, cell in optimizers.items():
    epochs = np.arange(1, len(cell['best_curve']) + 1)
    left.plot(
      epochs,
      100 * np.asarray(cell['best_curve']),
      marker='.',
      label=f'{name} (lr {cell["best_rate"]:.2g})',
    )
  left.set(
    xlabel='epoch',
    ylabel='dev accuracy (%), mean over seeds',
    title='A: each optimizer at its best rate',
  )
  left.legend()
  for label, cell in schedules.items():
    epochs = np.arange(1, len(cell['curve']) + 1)
    right.plot(epochs, 100 * np.asarray(cell['curve']), marker='.', label=label)
  right.set(
    xlabel='epoch',
    ylabel='dev accuracy (%), mean over seeds',
    title=f'B: Adam lr {DECAY_RATE:g}, decay schedules',
  )
  right.legend()
  return figure

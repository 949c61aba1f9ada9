"""Claim 2: sample on the right scale: the learning rate log-uniformly, beta as 1 - 10**r.

Part A: Adam's learning rate on [1e-4, 1], log-uniform against uniform: the
share of trials in each decade, the share diverged, the best dev accuracy.
Part B: the momentum optimizer's beta on [0.9, 0.999], beta = 1 - 10**r
against uniform: the share of samples above 0.99, and how much the result
moves with beta near 1 (dev accuracy against 1 - beta). Both parts share one
program (optimizer and its hyperparameters are traced).
"""

import jax
import numpy as np
from matplotlib.figure import Figure

from bnjax.space import as_space
from experiments.claims import common

CLAIM = (
  'Sampling uniformly at random over [0.0001, 1] puts 90% of the samples between 0.1 and 1; '
  'search on a log scale (alpha = 10**r). For beta in [0.9, 0.999], sample 1 - beta = 10**r: '
  'the result is very sensitive to beta near 1 (0.999 to 0.9995 averages over 1000 vs 2000 '
  'values), so sample more densely there.'
)
SPACES = {
  'lr log-uniform': 'learning_rate=log:1e-4:1',
  'lr uniform': 'learning_rate=uniform:1e-4:1',
  'beta 1 - 10**r': 'beta1=1mlog:0.9:0.999',
  'beta uniform': 'beta1=uniform:0.9:0.999',
}
FIXED = dict(hidden_units=64, num_layers=2, batch_size=128)
MOMENTUM_RATE = 0.1  # part B's learning rate (the notes' momentum: v = beta v + (1 - beta) g)


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  trials, seeds, epochs = (4, 1, 1) if quick else (16, 3, 6)
  columns, method, search_seed = {'learning_rate': [], 'beta1': [], 'optimizer': []}, [], []
  for seed in range(seeds):
    for m, (name, spec) in enumerate(SPACES.items()):
      sampled = as_space(spec).sample(jax.random.key(100 * seed + m), trials)
      part_a = 'learning_rate' in sampled
      columns['learning_rate'] += list(
        sampled['learning_rate'] if part_a else [MOMENTUM_RATE] * trials
      )
      columns['beta1'] += list([0.9] * trials if part_a else sampled['beta1'])
      columns['optimizer'] += ['adam' if part_a else 'momentum'] * trials
      method += [name] * trials
      search_seed += [seed] * trials
  table = {name: np.asarray(values) for name, values in columns.items()}
  table |= {name: np.asarray([value] * len(method)) for name, value in FIXED.items()}
  results, _ = common.train(table, splits, epochs=epochs)
  dev = results.column('dev_accuracy')
  method, search_seed = np.asarray(method), np.asarray(search_seed)
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      spaces=SPACES,
      fixed=FIXED,
      trials=trials,
      seeds=seeds,
      epochs=epochs,
      momentum_learning_rate=MOMENTUM_RATE,
    ),
  }
  summary = []
  decades = np.arange(-4, 1)
  for name in ('lr log-uniform', 'lr uniform'):
    rows = method == name
    lr = table['learning_rate'][rows]
    share = np.histogram(np.log10(lr), bins=decades)[0] / rows.sum()
    best = [np.nanmax(dev[rows & (search_seed == s)]) for s in range(seeds)]
    numbers[name] = {
      'share_per_decade': {
        f'1e{d}..1e{d + 1}': float(v) for d, v in zip(decades[:-1], share, strict=True)
      },
      'share_diverged': float(np.mean(~np.isfinite(dev[rows]))),
      'best_dev_accuracy': common.interval(best),
    }
    cell = numbers[name]
    summary.append(
      f'{name}: share per decade {np.round(share, 2).tolist()} (1e-4 .. 1); diverged '
      f'{cell["share_diverged"]:.0%}; best dev {common.show(cell["best_dev_accuracy"])}'
    )
  for name in ('beta 1 - 10**r', 'beta uniform'):
    rows = method == name
    beta = table['beta1'][rows]
    near = rows & (table['beta1'] >= 0.99)
    far = rows & (table['beta1'] < 0.99)
    best = [np.nanmax(dev[rows & (search_seed == s)]) for s in range(seeds)]
    numbers[name] = {
      'share_above_0.99': float(np.mean(beta >= 0.99)),
      'samples_in_0.99_0.999': int(near.sum()),
      'dev_accuracy_range_beta_above_0.99': _spread(dev[near]),
      'dev_accuracy_range_beta_below_0.99': _spread(dev[far]),
      'best_dev_accuracy': common.interval(best),
    }
    summary.append(
      f'{name}: {numbers[name]["share_above_0.99"]:.0%} of samples above 0.99; dev accuracy '
      f'spans {_fmt(numbers[name]["dev_accuracy_range_beta_above_0.99"])} above 0.99 and '
      f'{_fmt(numbers[name]["dev_accuracy_range_beta_below_0.99"])} below; best dev '
      f'{common.show(numbers[name]["best_dev_accuracy"])}'
    )
  numbers['summary'] = summary
  return numbers, _figure(table, dev, method)


def _spread(values) -> list | None:
  finite = np.asarray(values)[np.isfinite(values)]
  return [float(finite.min()), float(finite.max())] if len(finite) else None


def _fmt(span) -> str:
  return 'nothing' if span is None else f'{100 * span[0]:.1f}..{100 * span[1]:.1f}%'


def _figure(table, dev, method) -> Figure:
  figure = Figure(figsize=(11, 4))
  left, right = figure.subplots(1, 2)
  for name in ('lr log-uniform', 'lr uniform'):
    rows = method == name
    shown = np.where(np.isfinite(dev[rows]), 100 * dev[rows], 0.0)  # diverged at 0
    left.scatter(table['learning_rate'][rows], shown, label=name, alpha=0.6, s=14)
  left.set_xscale('log')
  left.set(
    xlabel='learning rate (Adam; log axis)',
    ylabel='dev accuracy (%) (diverged at 0)',
    title='A: learning rate on [1e-4, 1]',
  )
  left.legend()
  for name in ('beta 1 - 10**r', 'beta uniform'):
    rows = method == name
    right.scatter(1 - table['beta1'][rows], 100 * dev[rows], label=name, alpha=0.6, s=14)
  right.set_xscale('log')
  right.axvline(0.01, color='gray', linestyle=':', linewidth=0.8)
  right.set(
    xlabel='1 - beta (momentum; log axis)',
    ylabel='dev accuracy (%)',
    title='B: beta on [0.9, 0.999]',
  )
  right.legend()
  return figure

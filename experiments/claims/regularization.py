"""Claim 11: L2 and dropout shrink the train - dev gap.

A wide MLP without BN (so that only the regularizer under test acts),
trained long enough to overfit MNIST-1D: L2 (lambda / (2m) * sum ||W||^2)
over a range of lambda with no dropout, and inverted dropout over a range of
keep_prob with no L2. Train and dev accuracy in eval mode after training.
"""

from matplotlib.figure import Figure

from experiments.claims import common

CLAIM = (
  'If the training error is low but the dev error is high (high variance), regularize: '
  'L2 regularization and dropout reduce overfitting.'
)
L2 = (0.0, 0.3, 1.0, 3.0, 10.0)
KEEP = (0.8, 0.6, 0.4)


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  seeds, epochs, units = (1, 1, 16) if quick else (3, 20, 128)
  l2_values, keep_values = (L2[:2], KEEP[:1]) if quick else (L2, KEEP)
  fixed = dict(
    batch_norm=False, hidden_units=units, num_layers=2, learning_rate=1e-3, batch_size=128
  )
  configs = [dict(l2=v, keep_prob=1.0, **fixed) for v in l2_values]
  configs += [dict(l2=0.0, keep_prob=k, **fixed) for k in keep_values]
  labels = [f'l2 {v:g}' for v in l2_values] + [f'keep_prob {k:g}' for k in keep_values]
  table, _, _ = common.repeat(configs, seeds)
  results, kept = common.train(table, splits, epochs=epochs)
  train = common.train_accuracies(results, kept, splits).reshape(len(configs), seeds)
  dev = results.column('dev_accuracy').reshape(len(configs), seeds)
  cells, summary = {}, []
  for c, label in enumerate(labels):
    cells[label] = {
      'train': common.interval(train[c]),
      'dev': common.interval(dev[c]),
      'gap': common.interval(train[c] - dev[c]),
    }
    shown = {key: common.show(value) for key, value in cells[label].items()}
    summary.append(
      f'{label}: train {shown["train"]}, dev {shown["dev"]}, '
      f'gap {common.show(cells[label]["gap"], unit=" pt")}'
    )
  numbers = {
    'claim': CLAIM,
    'settings': dict(fixed=fixed, seeds=seeds, epochs=epochs, optimizer='adam'),
    'configs': cells,
    'summary': summary,
  }
  return numbers, _figure(cells, l2_values, keep_values)


def _figure(cells, l2_values, keep_values) -> Figure:
  figure = Figure(figsize=(10, 4))
  left, right = figure.subplots(1, 2, sharey=True)
  for axes, labels, xs, xlabel in (
    (left, [f'l2 {v:g}' for v in l2_values], list(range(len(l2_values))), 'L2 lambda'),
    (
      right,
      ['l2 0'] + [f'keep_prob {k:g}' for k in keep_values],
      list(range(len(keep_values) + 1)),
      'dropout keep_prob',
    ),
  ):
    for key, marker in (('train', 'o'), ('dev', 's')):
      mean, lo, hi = common.band(cells[label][key] for label in labels)
      axes.errorbar(xs, mean, yerr=[mean - lo, hi - mean], marker=marker, capsize=3, label=key)
    none = '0 (none)' if axes is left else '1 (none)'
    ticks = [label.split()[-1] if label != 'l2 0' else none for label in labels]
    axes.set_xticks(xs, ticks)
    axes.set(xlabel=xlabel)
    axes.legend()
  left.set_ylabel('accuracy after training (%), mean and 95% CI')
  return figure

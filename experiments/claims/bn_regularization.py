"""Claim 6: BN has a slight regularization effect, which shrinks as the mini-batch grows.

The train - dev accuracy gap (both in eval mode, after training) against the
batch size, with and without BN. BN's regularization shows as a smaller gap
with BN than without; the notes predict the difference shrinks with larger
batches (less noise in the batch statistics). Every run takes the same number
of epochs, so smaller batches also take more steps: the BN-minus-no-BN
difference at each batch size is what isolates BN.
"""

from matplotlib.figure import Figure

from experiments.claims import common

CLAIM = (
  "Batch norm adds some noise to each hidden layer's activations (each mini-batch is scaled "
  'by its own mean and variance), a slight regularization effect like dropout; with a larger '
  'mini-batch the noise, and so the regularization, shrinks.'
)


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  sizes = (32, 256) if quick else (32, 128, 512)
  seeds, epochs, units = (1, 1, 16) if quick else (3, 10, 64)
  configs = [
    dict(
      batch_size=b,
      batch_norm=bn,
      learning_rate=1e-3,
      optimizer='adam',
      hidden_units=units,
      num_layers=2,
    )
    for bn in (True, False)
    for b in sizes
  ]
  table, _, _ = common.repeat(configs, seeds)
  results, kept = common.train(table, splits, epochs=epochs)
  train = common.train_accuracies(results, kept, splits).reshape(2, len(sizes), seeds)
  dev = results.column('dev_accuracy').reshape(2, len(sizes), seeds)
  gap = train - dev
  cells, summary = {}, []
  for i, size in enumerate(sizes):
    cells[str(size)] = {
      'gap_bn': common.interval(gap[0, i]),
      'gap_no_bn': common.interval(gap[1, i]),
      'gap_no_bn_minus_bn': common.interval(gap[1, i] - gap[0, i]),
      'dev_bn': common.interval(dev[0, i]),
      'dev_no_bn': common.interval(dev[1, i]),
    }
    points = {name: common.show(value, unit=' pt') for name, value in cells[str(size)].items()}
    summary.append(
      f'batch {size}: train-dev gap BN {points["gap_bn"]}, no BN {points["gap_no_bn"]}; '
      f'no BN - BN {points["gap_no_bn_minus_bn"]}'
    )
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      batch_sizes=sizes,
      seeds=seeds,
      epochs=epochs,
      hidden=[units] * 2,
      optimizer='adam',
      learning_rate=1e-3,
    ),
    'by_batch_size': cells,
    'summary': summary,
  }
  return numbers, _figure(sizes, cells)


def _figure(sizes, cells) -> Figure:
  figure = Figure(figsize=(6, 4))
  axes = figure.subplots()
  for key, label in (('gap_bn', 'with BN'), ('gap_no_bn', 'without BN')):
    mean, lo, hi = common.band(cells[str(s)][key] for s in sizes)
    axes.errorbar(sizes, mean, yerr=[mean - lo, hi - mean], marker='o', capsize=3, label=label)
  axes.set_xscale('log', base=2)
  axes.set(
    xlabel='mini-batch size (log axis)',
    ylabel='train - dev accuracy (points)',
    title='Generalization gap after training: mean, 95% CI',
  )
  axes.legend()
  return figure

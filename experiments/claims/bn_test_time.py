"""Claim 7: BN at test time, with running averages, exact population statistics, or batches.

Each run (a BN-MLP trained with BN momentum 0.9, 0.99 or 0.999 for a short
or a long run) is evaluated on the dev split five ways:

* running: the running averages kept during training (the default);
* debiased: the same averages with their start divided out
  (`bnjax.nn.debiased_statistics`, Adam's bias correction);
* population: the exact mean and variance of every BN layer's input over the
  whole training split (one training-mode pass with momentum 0: each layer is
  normalized by the population statistics of the layer before it);
* batch of 100: dev examples normalized by their own mini-batch's statistics;
* batch of 1: each example alone (its variance is 0: BN outputs its offset).
"""

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from bnjax.nn import debiased_statistics, mlp_apply
from bnjax.training import TrainData, steps_per_epoch
from experiments.claims import common

CLAIM = (
  'At test time BN uses mu and sigma^2 estimated by an exponentially weighted average '
  'across mini-batches (running averages) instead of the statistics of a test mini-batch, '
  'which may hold a single example.'
)
MOMENTA = (0.9, 0.99, 0.999)
ESTIMATES = ('running', 'debiased', 'population', 'batch of 100', 'batch of 1')


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  seeds, units = (1, 16) if quick else (3, 100)
  lengths = (1,) if quick else (1, 2, 20)
  configs = [
    dict(
      bn_momentum=m,
      learning_rate=3e-3,
      optimizer='adam',
      hidden_units=units,
      num_layers=2,
      batch_size=128,
    )
    for m in MOMENTA
  ]
  table, config_of, _ = common.repeat(configs, seeds)
  data = TrainData(splits.x_train, splits.y_train, splits.x_dev, splits.y_dev)
  cells, summary = {}, []
  for epochs in lengths:
    results, kept = common.train(table, splits, epochs=epochs)
    for m_index, momentum in enumerate(MOMENTA):
      ids = results.column('trial_id')[config_of == m_index]
      scores = {name: [] for name in ESTIMATES}
      for trial in ids:
        candidate = kept[int(trial)]
        count = epochs * steps_per_epoch(candidate.config, data)
        for name, value in _scores(candidate, splits, momentum, count).items():
          scores[name].append(value)
      cell = {name: common.interval(values) for name, values in scores.items()}
      cells[f'{epochs} epoch(s), momentum {momentum}'] = cell
      summary.append(
        f'{epochs:>2} epoch(s), momentum {momentum}: '
        + '; '.join(f'{name} {common.show(cell[name])}' for name in ESTIMATES)
      )
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      momenta=MOMENTA,
      epochs=lengths,
      seeds=seeds,
      hidden=[units] * 2,
      optimizer='adam',
      learning_rate=3e-3,
      batch_size=128,
      steps_per_epoch=len(splits.y_train) // 128,
    ),
    'dev_accuracy': cells,
    'summary': summary,
  }
  return numbers, _figure(cells, lengths)


def _scores(candidate, splits, momentum: float, count: int) -> dict[str, float]:
  """Dev accuracy of one run under each way of getting BN's statistics."""
  params = jax.tree.map(lambda leaf: leaf[0], candidate.params)
  state = jax.tree.map(lambda leaf: leaf[0], candidate.model_state)
  options = dict(
    activation=candidate.config.activation,
    bn_placement=candidate.config.bn_placement,
    widths=candidate.hp.get('widths'),
    depth=candidate.hp.get('depth'),
  )
  debiased = {
    'layers': [
      debiased_statistics(layer, momentum=momentum, count=count) if layer else layer
      for layer in state['layers']
    ]
  }
  _, population = mlp_apply(
    params, state, jnp.asarray(splits.x_train), training=True, bn_momentum=0.0, **options
  )
  x, y = jnp.asarray(splits.x_dev), jnp.asarray(splits.y_dev)

  def batch_accuracy(size):
    n = len(y) // size * size
    xb = x[:n].reshape(n // size, size, -1)
    logits = jax.vmap(lambda b: mlp_apply(params, state, b, training=True, **options)[0])(xb)
    return float(jnp.mean(jnp.argmax(logits.reshape(n, -1), -1) == y[:n]))

  return {
    'running': common.accuracy(candidate, splits.x_dev, splits.y_dev),
    'debiased': common.accuracy(candidate, splits.x_dev, splits.y_dev, _lead(debiased)),
    'population': common.accuracy(candidate, splits.x_dev, splits.y_dev, _lead(population)),
    'batch of 100': batch_accuracy(100),
    'batch of 1': batch_accuracy(1),
  }


def _lead(tree):
  """A one-run tree as the kept candidates hold it, `[1, ...]`."""
  return jax.tree.map(lambda leaf: jnp.asarray(leaf)[None], tree)


def _figure(cells: dict, lengths) -> Figure:
  figure = Figure(figsize=(4 * len(lengths), 4))
  panels = np.atleast_1d(figure.subplots(1, len(lengths), sharey=True))
  width = 0.8 / len(ESTIMATES)
  for axes, epochs in zip(panels, lengths, strict=True):
    for e, name in enumerate(ESTIMATES):
      keys = [f'{epochs} epoch(s), momentum {m}' for m in MOMENTA]
      means, lows, highs = common.band(cells[k][name] for k in keys)
      x = np.arange(len(MOMENTA)) + (e - len(ESTIMATES) / 2 + 0.5) * width
      axes.bar(x, means, width, yerr=[means - lows, highs - means], capsize=2, label=name)
    axes.set_xticks(np.arange(len(MOMENTA)), [str(m) for m in MOMENTA])
    axes.set(xlabel='BN momentum', title=f'after {epochs} epoch(s)')
  panels[0].set_ylabel('dev accuracy (%)')
  panels[0].legend(fontsize=8, loc='upper left')
  return figure

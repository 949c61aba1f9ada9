"""Claim 10: initialization and depth (vanishing and exploding activations), with and without BN.

Part A (at initialization, no training): the standard deviation of each
hidden layer's activations in a 20-layer MLP without BN, for He (variance
2 / fan_in), Xavier (1 / fan_in) and a naive fixed scale (std 0.01), relu and
tanh, on MNIST-1D's training inputs.
Part B (training): He against Xavier, relu and tanh, 2, 6 and 12 hidden
layers, with and without BN: dev accuracy after a short run.
"""

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from bnjax.nn import mlp_init
from experiments.claims import common

CLAIM = (
  'In a deep network, activations and gradients can grow or shrink exponentially with '
  'depth; setting Var(w) = 2/n for relu (He) or 1/n for tanh (Xavier) keeps them near 1. '
  'Batch norm makes training less sensitive to the initialization.'
)
ACTIVATIONS = {'relu': jax.nn.relu, 'tanh': jnp.tanh}
INITS = {'he': 2.0, 'xavier': 1.0, 'naive (std 0.01)': None}


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  layers = 4 if quick else 20
  stds = _activation_stds(splits.x_train[:512], layers)
  depths, seeds, epochs, units = ((1, 2), 1, 1, 16) if quick else ((2, 8), 2, 5, 32)
  configs = [
    dict(activation=a, batch_norm=bn, init=i, num_layers=d, hidden_units=units, learning_rate=3e-3)
    for a in ACTIVATIONS
    for bn in (True, False)
    for i in ('he', 'xavier')
    for d in depths
  ]
  table, _, _ = common.repeat(configs, seeds)
  results, _ = common.train(table, splits, epochs=epochs)
  dev = results.column('dev_accuracy').reshape(len(configs), seeds)
  trained, summary = {}, []
  for c, config in enumerate(configs):
    label = f'{config["activation"]}, {"BN" if config["batch_norm"] else "no BN"}, {config["init"]}'
    trained.setdefault(label, {})[str(config['num_layers'])] = common.interval(dev[c])
  for label, by_depth in trained.items():
    summary.append(
      f'{label}: ' + '; '.join(f'{d} layers {common.show(v)}' for d, v in by_depth.items())
    )
  for key, per_layer in stds.items():
    first, last = per_layer[0], per_layer[-1]
    summary.append(f'at init, {key}: activation std layer 1 {first:.3g}, layer {layers} {last:.3g}')
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      init_layers=layers,
      depths=depths,
      seeds=seeds,
      epochs=epochs,
      hidden_units=units,
      optimizer='adam',
      learning_rate=3e-3,
    ),
    'activation_std_at_init': stds,
    'dev_accuracy_after_training': trained,
    'summary': summary,
  }
  return numbers, _figure(stds, trained, depths)


def _activation_stds(x: np.ndarray, layers: int) -> dict[str, list[float]]:
  """Std of each hidden layer's activations at initialization, without BN."""
  out = {}
  for init, gain in INITS.items():
    params, _ = mlp_init(
      jax.random.key(0), x.shape[1], (100,) * layers, 10, batch_norm=False, init=gain or 1.0
    )
    for name, act in ACTIVATIONS.items():
      a, stds = jnp.asarray(x), []
      for layer in params['layers']:
        w = layer['w'] if gain else layer['w'] / jnp.std(layer['w']) * 0.01
        a = act(a @ w + layer['b'])
        stds.append(float(jnp.std(a)))
      out[f'{name}, {init}'] = stds
  return out


def _figure(stds, trained, depths) -> Figure:
  figure = Figure(figsize=(11, 4))
  left, right = figure.subplots(1, 2)
  for key, values in stds.items():
    left.semilogy(np.arange(1, len(values) + 1), np.maximum(values, 1e-30), marker='.', label=key)
  left.set(
    xlabel='hidden layer',
    ylabel='activation std at init (log axis)',
    title='A: 20 layers, no BN, at initialization',
  )
  left.legend(fontsize=7)
  for label, by_depth in trained.items():
    means = [100 * (by_depth[str(d)]['mean'] or np.nan) for d in depths]
    right.plot(
      depths, means, marker='o', linestyle='-' if 'no BN' not in label else '--', label=label
    )
  right.set(
    xlabel='hidden layers', ylabel='dev accuracy (%), mean over seeds', title='B: after training'
  )
  right.legend(fontsize=7)
  return figure

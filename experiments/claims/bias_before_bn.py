"""Claim 8: the bias of a linear layer that feeds BN is redundant (BN's offset replaces it).

The library's MLP has no such bias (`bnjax.nn.mlp_init`), so this claim
adds one: `mlp_apply` adds a layer's `'b'` wherever the params hold one. Each
pair of runs shares its initial weights and its mini-batches; only the bias
differs: none, zeros, or N(0, 1) at the start. The training loop is a plain
`lax.scan` over the library's `mlp_apply`, `softmax_cross_entropy` and
optimizers (the engine's `TrainConfig` has no bias-before-BN switch, by design).

In training mode BN subtracts the batch mean, and with it any bias, so the
bias's exact gradient is zero; in float32 it is rounding noise. SGD with
momentum turns that noise into updates of its own size; Adam divides it by its
own root mean square, so the bias moves by about the learning rate each step,
yet BN still removes it: the curves stay equal to float32 rounding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
from matplotlib.figure import Figure

import bnjax
from bnjax.nn import mlp_apply, mlp_init, softmax_cross_entropy
from experiments.claims import common

CLAIM = (
  'With batch norm, the bias b of z = W a + b is redundant: the mean subtraction removes '
  'it, and beta takes its role, so the layer can drop b.'
)
VARIANTS = ('no bias', 'bias from 0', 'bias from N(0, 1)')
OPTIMIZERS = {'momentum': lambda: bnjax.momentum(0.05, 0.9), 'adam': lambda: bnjax.adam(3e-3)}


def run(*, quick: bool) -> tuple[dict, Figure]:
  splits = common.load('mnist1d')
  seeds, epochs, hidden = (1, 1, (16,)) if quick else (3, 5, (100, 100, 100))
  batch = 128
  steps = len(splits.y_train) // batch
  x, y = jnp.asarray(splits.x_train), jnp.asarray(splits.y_train)
  x_dev, y_dev = jnp.asarray(splits.x_dev), jnp.asarray(splits.y_dev)

  def train(key, variant, make_optimizer):
    init_key, bias_key, order_key = jax.random.split(key, 3)
    params, state = mlp_init(init_key, x.shape[1], hidden, splits.num_classes)
    if variant > 0:
      for i, layer in enumerate(params['layers']):
        noise = jax.random.normal(jax.random.fold_in(bias_key, i), layer['w'].shape[1:])
        layer['b'] = noise if variant == 2 else jnp.zeros_like(noise)
    transform = make_optimizer()
    orders = jax.vmap(lambda e: jax.random.permutation(jax.random.fold_in(order_key, e), len(y)))(
      jnp.arange(epochs)
    )
    batches = orders[:, : steps * batch].reshape(epochs * steps, batch)

    def loss_fn(params, state, rows):
      logits, new_state = mlp_apply(params, state, x[rows], training=True)
      return jnp.mean(softmax_cross_entropy(logits, y[rows])), new_state

    def step(carry, rows):
      params, state, opt_state = carry
      (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, rows)
      updates, opt_state = transform.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), state, opt_state), loss

    (params, state, _), losses = jax.lax.scan(
      step, (params, state, transform.init(params)), batches
    )
    logits, _ = mlp_apply(params, state, x_dev, training=False)
    dev = jnp.mean(jnp.argmax(logits, -1) == y_dev)
    bias = [jnp.max(jnp.abs(layer.get('b', jnp.zeros(1)))) for layer in params['layers']]
    return losses, dev, jnp.max(jnp.asarray(bias))

  keys = jax.vmap(lambda s: jax.random.fold_in(jax.random.key(0), s))(jnp.arange(seeds))
  per_optimizer, summary = {}, []
  for name, make_optimizer in OPTIMIZERS.items():
    outcome = {}
    for v, variant in enumerate(VARIANTS):
      program = jax.jit(jax.vmap(lambda k, v=v, m=make_optimizer: train(k, v, m)))
      losses, dev, bias = jax.device_get(program(keys))
      outcome[variant] = {'losses': losses, 'dev': dev, 'bias': bias}
    base = outcome['no bias']
    cells = {}
    for variant in VARIANTS:
      got = outcome[variant]
      cells[variant] = {
        'final_dev_accuracy': common.interval(got['dev']),
        'max_abs_train_loss_difference': float(np.max(np.abs(got['losses'] - base['losses']))),
        'max_relative_train_loss_difference': float(
          np.max(np.abs(got['losses'] - base['losses']) / np.abs(base['losses']))
        ),
        'bitwise_equal_train_losses': bool(np.array_equal(got['losses'], base['losses'])),
        'largest_bias_at_end': float(np.max(got['bias'])),
      }
      summary.append(
        f'{name}, {variant}: dev {common.show(cells[variant]["final_dev_accuracy"])}; '
        f'max |loss - no-bias loss| {cells[variant]["max_abs_train_loss_difference"]:.2e} '
        f'(bitwise equal: {cells[variant]["bitwise_equal_train_losses"]}); '
        f'largest |b| at end {cells[variant]["largest_bias_at_end"]:.3g}'
      )
    per_optimizer[name] = {'variants': cells, 'losses': {v: outcome[v]['losses'] for v in VARIANTS}}
  numbers = {
    'claim': CLAIM,
    'settings': dict(
      hidden=list(hidden),
      epochs=epochs,
      seeds=seeds,
      batch_size=batch,
      optimizers={'momentum': 'lr 0.05, beta 0.9', 'adam': 'lr 3e-3'},
    ),
    'results': {name: r['variants'] for name, r in per_optimizer.items()},
    'summary': summary,
  }
  return numbers, _figure(per_optimizer, steps)


def _figure(per_optimizer: dict, steps: int) -> Figure:
  """Per epoch: the no-bias train loss, and the largest |difference| over seeds and steps."""
  figure = Figure(figsize=(10, 4))
  panels = figure.subplots(1, len(per_optimizer))
  for axes, (name, result) in zip(panels, per_optimizer.items(), strict=True):
    base = np.asarray(result['losses']['no bias'])  # [seeds, steps]
    count = base.shape[1] // steps
    epochs = np.arange(1, count + 1)
    per_epoch = lambda a, n=count: a[:, : n * steps].reshape(a.shape[0], n, steps)
    axes.plot(epochs, per_epoch(base).mean(axis=(0, 2)), 'k-o', label='no bias: train loss')
    twin = axes.twinx()
    for variant, marker in zip(VARIANTS[1:], ('s', '^'), strict=True):
      difference = per_epoch(np.abs(np.asarray(result['losses'][variant]) - base)).max(axis=(0, 2))
      twin.semilogy(
        epochs, np.maximum(difference, 1e-10), '--' + marker, label=f'max |{variant} - no bias|'
      )
    axes.set(xlabel='epoch', ylabel='train loss (mean over seeds and steps)', title=name)
    twin.set_ylabel('largest loss difference in the epoch (log; 1e-10: equal)')
    lines, labels = axes.get_legend_handles_labels()
    more, more_labels = twin.get_legend_handles_labels()
    axes.legend(lines + more, labels + more_labels, fontsize=8, loc='center right')
  return figure

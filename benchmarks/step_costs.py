r"""Where a training step's time goes, and which chunk size a CPU runs best.

  python benchmarks/step_costs.py                      # both parts, defaults
  python benchmarks/step_costs.py --parts_only --width=448 --num_trials=4

The BN-MLP 40 -> 3 x width -> 10 on MNIST-1D, batch 128, Adam, dropout
with keep_prob 0.8 (the default search's kind of trial), timed as
`benchmarks.fixed_shape.vectorized` times it: ms per trial-epoch, median
and range of `--repeats` calls, the 1-minute load beside it.

* **Chunk sizes**: the same trial vmapped N at a time, for each width:
  where a run's parameters, gradients and Adam moments fall out of cache,
  a bigger chunk gets slower per trial (`bnjax.search.sizing.cpu_chunk`).
* **Parts**: the step with one part removed or changed at a time (dropout
  off, BN off, bfloat16 matmuls, and the divergence check as it was before
  `bnjax.divergence`, `jnp.all(jnp.isfinite(...))` over every leaf); what a
  part costs is the difference from the full step. The variants alternate
  for `--rounds` rounds, so a change of load hits them alike. The optimizer
  cannot be removed this way: it is a traced index (`bnjax.optim.transforms`),
  so SGD and Adam trials run one program that computes Adam's moments for
  both.
* **Depth**: trials of two layers in the three-layer program, with the
  third layer selected away (a `vmap` of the depth mask) and skipped (the
  chunk's deepest trial passed without the trial axis, as the engine's
  chunks pass it: `bnjax.model.vmap_chunk`).
* **The matmul floor**: not bnjax's step but what its matmuls alone cost, a
  plain network of the same shapes (dense layers and ReLU, softmax
  cross-entropy, SGD; no BN, dropout, masking or divergence check) trained
  in the same kind of scan over the same batches. The full step's distance
  from it is what everything but the matmuls costs; a second row trains the
  floor with Adam, which prices the optimizer's arithmetic.
"""

import os
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import contextlib
import logging

import jax
import jax.numpy as jnp
import optax
from absl import app, flags

import bnjax.data
from benchmarks import fixed_shape, timing
from bnjax import divergence

WIDTHS = flags.DEFINE_list('widths', ['256', '448'], 'Chunk sizes: hidden widths (3 layers).')
CHUNKS = flags.DEFINE_list('chunks', ['2', '4', '8', '16'], 'Chunk sizes: N runs per program.')
WIDTH = flags.DEFINE_integer('width', 448, 'Parts: hidden width (3 layers).')
NUM_TRIALS = flags.DEFINE_integer('num_trials', 4, 'Parts: N runs per program.')
REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per figure.')
ROUNDS = flags.DEFINE_integer('rounds', 2, 'Parts: rounds of the alternating variants.')
PARTS_ONLY = flags.DEFINE_bool('parts_only', False, 'Skip the chunk sizes.')

DROPOUT = ({'dropout': True}, {'keep_prob': 0.8})


def isfinite_check(tree) -> jax.Array:
  """The divergence check before `bnjax.divergence.all_finite`, for the row that prices it."""
  return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)]))


# name: (TrainConfig options, hyperparameters, divergence check or None for bnjax's own)
PARTS = {
  'full step (Adam, BN, dropout)': (*DROPOUT, None),
  'without dropout': ({}, None, None),
  'without BN': ({'dropout': True, 'batch_norm': False}, {'keep_prob': 0.8}, None),
  'bfloat16 matmuls': ({'dropout': True, 'matmul_dtype': 'bfloat16'}, {'keep_prob': 0.8}, None),
  'check as all(isfinite)': (*DROPOUT, isfinite_check),
}


@contextlib.contextmanager
def _divergence_check(check):
  """Traces the step with `check` in place of `all_finite` (None: leaves bnjax's own)."""
  own = divergence.all_finite
  divergence.all_finite = check or own
  try:
    yield
  finally:
    divergence.all_finite = own


def _epochs(num_trials: int) -> int:
  return max(2, 16 // num_trials)  # at least 16 trial-epochs per call


def _time(splits, width: int, num_trials: int, options: dict, hp_values: dict | None, **kw) -> str:
  measured = fixed_shape.vectorized(
    splits,
    num_trials,
    _epochs(num_trials),
    REPEATS.value,
    hp_values,
    hidden_sizes=(width,) * 3,
    **kw,
    **options,
  )
  return _format(measured)


def matmul_floor(
  splits, width: int, num_trials: int, epochs: int, repeats: int, adam: bool = False
) -> dict:
  """Seconds per call of a plain `[num_trials]`-batched MLP 3 x `width` trained with SGD.

  `adam`: `optax.adam` instead, so that the floor's two rows price Adam's
  arithmetic, which bnjax's step cannot leave out.

  Each epoch scans the same number of batches of 128 as `bnjax.train` (a
  fixed order: the permutation's cost is not a matmul's) and ends with a
  forward pass over the dev split.
  """
  sizes = [splits.x_train.shape[1], width, width, width, splits.num_classes]
  keys = jax.random.split(jax.random.key(0), len(sizes) - 1)
  weights = [
    jax.random.normal(k, (num_trials, a, b), jnp.float32) * (2 / a) ** 0.5
    for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)
  ]
  data = fixed_shape.train_data(splits)
  steps = len(splits.y_train) // fixed_shape.BATCH_SIZE
  batches = jnp.arange(steps * fixed_shape.BATCH_SIZE).reshape(steps, fixed_shape.BATCH_SIZE)

  def forward(weights, x):  # x [num_trials, batch, features]
    for i, w in enumerate(weights):
      x = jnp.einsum('nbi,nio->nbo', x, w)
      x = jax.nn.relu(x) if i < len(weights) - 1 else x
    return x

  def loss(weights, x, y):
    logits = forward(weights, x)
    return jnp.mean(bnjax.softmax_cross_entropy(logits, y)) * num_trials  # trials' grads apart

  optimizer = optax.adam(1e-3) if adam else optax.sgd(1e-3)

  def step(state, rows):
    weights, opt_state = state
    x, y = (jnp.broadcast_to(a[rows], (num_trials, *a[rows].shape)) for a in data[:2])
    grads = jax.grad(loss)(weights, x, y)
    updates, opt_state = optimizer.update(grads, opt_state)
    return (optax.apply_updates(weights, updates), opt_state), None

  def epoch(state, _):
    state, _ = jax.lax.scan(step, state, batches)
    dev = jnp.broadcast_to(data.x_dev, (num_trials, *data.x_dev.shape))
    return state, jnp.argmax(forward(state[0], dev), axis=-1)

  train = jax.jit(lambda state: jax.lax.scan(epoch, state, None, length=epochs))
  run = lambda: jax.block_until_ready(train((weights, optimizer.init(weights))))
  run()
  return dict(timing.repeat(run, repeats), trial_epochs=num_trials * epochs)


def _format(measured: dict) -> str:
  per = lambda seconds: 1e3 * seconds / measured['trial_epochs']
  return (
    f'{per(measured["median"]):6.1f} ms per trial-epoch '
    f'({per(measured["min"]):.1f}-{per(measured["max"]):.1f}), load {measured["load"]:.1f}'
  )


def main(argv):
  del argv
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  splits = bnjax.data.load('mnist1d')
  if not PARTS_ONLY.value:
    print('chunk sizes (3 x width, Adam, dropout 0.8):')
    for width in map(int, WIDTHS.value):
      for n in map(int, CHUNKS.value):
        print(f'  width {width:4d}, N = {n:3d}: {_time(splits, width, n, *DROPOUT)}', flush=True)
  print(f'parts (3 x {WIDTH.value}, N = {NUM_TRIALS.value}):')
  for round_ in range(ROUNDS.value):
    for name, (options, hp_values, check) in PARTS.items():
      with _divergence_check(check):
        measured = _time(splits, WIDTH.value, NUM_TRIALS.value, options, hp_values)
      print(f'  round {round_ + 1}, {name:30s} {measured}', flush=True)
    two_layers = {**DROPOUT[1], 'widths': [WIDTH.value] * 3, 'depth': 2}
    for name, skip in (('2 of 3 layers, selected away', False), ('2 of 3 layers, skipped', True)):
      measured = _time(
        splits, WIDTH.value, NUM_TRIALS.value, DROPOUT[0], two_layers, skip_layers=skip
      )
      print(f'  round {round_ + 1}, {name:30s} {measured}', flush=True)
    for name, adam in (('matmul floor, SGD', False), ('matmul floor, Adam', True)):
      floor = matmul_floor(
        splits, WIDTH.value, NUM_TRIALS.value, _epochs(NUM_TRIALS.value), REPEATS.value, adam
      )
      print(f'  round {round_ + 1}, {name:30s} {_format(floor)}', flush=True)


if __name__ == '__main__':
  app.run(main)

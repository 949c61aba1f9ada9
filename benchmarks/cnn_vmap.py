r"""Milliseconds per trial-epoch of the CNN, N trials vmapped in one program.

  python benchmarks/cnn_vmap.py --trials=1,8,64 --repeats=3

MNIST-1D shapes on synthetic data: `[train_size, 40, 1]` sequences, 10
classes, mini-batches of 128, `blocks` conv blocks of `channels` channels
with BN, ReLU and max pooling, a global average and a dense head. One epoch
is a `lax.scan` over its mini-batches of forward, backward and a plain SGD
update (`--steps` times a shorter epoch and scales it to a full one, for
slow machines); each trial gathers its own mini-batches by index from its own
permutation of the one shared data set, and has its own learning rate. Each
N is compiled (the time printed apart), then timed `repeats` times; the
median and range print beside the median 1-minute load average (`benchmarks.timing`).

`--conv_methods` times both convolutions of `bnjax.nn.conv`. Measured on
this project's 2-core CPU (`--steps=8 --repeats=2`, ms per trial-epoch at
1 / 8 / 64 trials): 'patches' (im2col, one batched matmul per block) 494 /
330 / 326 at load 1.5 to 3.8; 'lax' (one grouped convolution) 2983 / 4155 /
21709 at load 4.5 to 14.5; an earlier run at a steady load of 4 to 5 gave
742 / 570 / 287 against 1485 / 3920 / 6662. XLA:CPU runs grouped
convolutions badly, and worse the more groups there are, so 'patches' is
`cnn_apply`'s default; 'lax' stays for accelerators (not measured here).
"""

import os
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from benchmarks import timing
from bnjax.nn import cnn_apply, cnn_init, softmax_cross_entropy

TRIALS = flags.DEFINE_list('trials', ['1', '8', '64'], 'Numbers of trials vmapped together.')
EPOCHS = flags.DEFINE_integer('epochs', 1, 'Epochs per timed call.')
STEPS = flags.DEFINE_integer(
  'steps', 0, 'Mini-batch steps per epoch if > 0 (a shorter epoch, scaled up to a full one).'
)
REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per number of trials.')
TRAIN_SIZE = flags.DEFINE_integer('train_size', 4000, 'Training examples (MNIST-1D has 4000).')
BATCH_SIZE = flags.DEFINE_integer('batch_size', 128, 'Mini-batch size.')
LENGTH = flags.DEFINE_integer('length', 40, 'Sequence length.')
CHANNELS = flags.DEFINE_integer('channels', 32, 'Channels of every block.')
BLOCKS = flags.DEFINE_integer('blocks', 3, 'Conv blocks.')
KERNEL_SIZE = flags.DEFINE_integer('kernel_size', 5, 'Kernel size.')
CONV_METHODS = flags.DEFINE_list(
  'conv_methods', ['patches', 'lax'], "Convolutions to time: 'patches' (im2col), 'lax'."
)
CLASSES = 10


def make_train(epochs, steps, conv_method):
  """`train(key, learning_rate, x, y)` of one trial: init, then `epochs` epochs of SGD."""
  channels = (CHANNELS.value,) * BLOCKS.value
  batch = BATCH_SIZE.value

  def loss(params, state, xb, yb):
    logits, new_state = cnn_apply(params, state, xb, training=True, conv_method=conv_method)
    return jnp.mean(softmax_cross_entropy(logits, yb)), new_state

  def step(carry, indices, x, y, learning_rate):
    params, state = carry
    grads, state = jax.grad(loss, has_aux=True)(params, state, x[indices], y[indices])
    params = jax.tree.map(lambda p, g: p - learning_rate * g, params, grads)
    return (params, state), None

  def train(key, learning_rate, x, y):
    params, state = cnn_init(
      key, (LENGTH.value, 1), channels, CLASSES, kernel_size=KERNEL_SIZE.value
    )

    def epoch(carry, epoch_key):
      order = jax.random.permutation(epoch_key, x.shape[0])[: steps * batch]
      body = lambda c, i: step(c, i, x, y, learning_rate)
      return jax.lax.scan(body, carry, order.reshape(steps, batch))[0], None

    keys = jax.random.split(jax.random.fold_in(key, 1), epochs)
    params, state = jax.lax.scan(epoch, (params, state), keys)[0]
    return params['output']['b']  # a small result that depends on the whole run

  return train


def _repeat_calls(compiled, *args) -> dict:
  """`timing.repeat` of `compiled(*args)`, each call waited for."""
  return timing.repeat(lambda: jax.block_until_ready(compiled(*args)), REPEATS.value)


def main(argv):
  del argv
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(TRAIN_SIZE.value, LENGTH.value, 1)), jnp.float32)
  y = jnp.asarray(rng.integers(0, CLASSES, TRAIN_SIZE.value), jnp.int32)
  full_epoch = TRAIN_SIZE.value // BATCH_SIZE.value
  steps = STEPS.value or full_epoch
  epochs = EPOCHS.value
  print(
    f'{jax.default_backend()} ({os.cpu_count()} CPUs seen), {BLOCKS.value} blocks x '
    f'{CHANNELS.value} channels, kernel {KERNEL_SIZE.value}, batch {BATCH_SIZE.value}, '
    f'{epochs} epochs of {steps} steps per call (a full epoch is {full_epoch}), '
    f'{REPEATS.value} calls'
  )
  print(
    f'{"conv":>8s} {"trials":>6s} {"compile s":>9s} {"ms / trial-epoch":>17s} '
    f'{"range":>17s} {"load 1m":>8s}'
  )
  for conv_method in CONV_METHODS.value:
    # The data set is shared by every trial: in_axes None, never broadcast.
    train = jax.jit(jax.vmap(make_train(epochs, steps, conv_method), in_axes=(0, 0, None, None)))
    for trials in (int(n) for n in TRIALS.value):
      keys = jax.random.split(jax.random.key(trials), trials)
      learning_rates = jnp.logspace(-2, -1, trials)
      compiled, compile_seconds = timing.timed(train.lower(keys, learning_rates, x, y).compile)
      measured = _repeat_calls(compiled, keys, learning_rates, x, y)
      ms = 1e3 / (trials * epochs * steps) * full_epoch  # a call's seconds -> ms per trial-epoch
      low, median, high = (ms * measured[key] for key in ('min', 'median', 'max'))
      print(
        f'{conv_method:>8s} {trials:6d} {compile_seconds:9.1f} {median:17.1f} '
        f'{f"{low:.1f} - {high:.1f}":>17s} {measured["load"]:8.2f}',
        flush=True,
      )


if __name__ == '__main__':
  app.run(main)

r"""Trains one batch-normalized MLP and reports dev and test accuracy.

  python experiments/train.py                      # MNIST-1D, the defaults
  python experiments/train.py --dataset=digits --epochs=20
  python experiments/train.py --optimizer=momentum --learning_rate=0.1 \
      --lr_schedule=inverse_time --lr_decay=0.1 --keep_prob=0.8

Prints the train loss and dev accuracy of every epoch, then the test accuracy
(measured once, after training), and writes <output_dir>/metrics.json.
"""

import functools
import os
import sys
import time

if __package__ in (None, ''):  # Run as a script: make `experiments` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
from absl import app, flags

import bnjax
from experiments import common

EPOCHS = flags.DEFINE_integer('epochs', 40, 'Passes over the training split.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', 128, 'Mini-batch size.')
LEARNING_RATE = flags.DEFINE_float('learning_rate', 0.02, 'Initial learning rate alpha0.')
OPTIMIZER = flags.DEFINE_enum(
  'optimizer',
  'adam',
  ['sgd', 'momentum', 'rmsprop', 'adam'],
  "Update rule (the notes' forms; momentum is an average).",
)
BETA1 = flags.DEFINE_float('beta1', 0.9, 'Momentum beta / Adam beta1.')
BETA2 = flags.DEFINE_float('beta2', 0.999, 'RMSprop / Adam beta2.')
LR_SCHEDULE = flags.DEFINE_enum(
  'lr_schedule',
  'inverse_time',
  ['constant', 'inverse_time', 'exponential'],
  'Learning-rate decay per epoch.',
)
LR_DECAY = flags.DEFINE_float(
  'lr_decay', 0.05, 'inverse_time: lr/(1+d*epoch); exponential: lr*(1-d)**epoch.'
)
L2 = flags.DEFINE_float('l2', 0.0, 'L2 lambda: lambda/(2m) * sum ||W||^2 in the cost.')
KEEP_PROB = flags.DEFINE_float('keep_prob', 0.8, 'Inverted-dropout keep probability.')
HIDDEN_SIZES = flags.DEFINE_list('hidden_sizes', ['256', '256', '256'], 'Units per hidden layer.')
ACTIVATION = flags.DEFINE_enum(
  'activation', 'relu', ['relu', 'tanh', 'sigmoid'], 'Hidden activation.'
)
BATCH_NORM = flags.DEFINE_boolean('batch_norm', True, 'Batch norm in every hidden layer.')
BN_PLACEMENT = flags.DEFINE_enum(
  'bn_placement', 'before', ['before', 'after'], 'BN before (z -> BN -> g) or after the activation.'
)
BN_MOMENTUM = flags.DEFINE_float('bn_momentum', 0.99, 'Running-average momentum of BN.')
INIT = flags.DEFINE_enum('init', 'he', ['he', 'xavier'], 'Weight init (He for ReLU).')
OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs/train', 'Where metrics.json goes.')
HYPERPARAMETER_FLAGS = (
  EPOCHS,
  BATCH_SIZE,
  LEARNING_RATE,
  OPTIMIZER,
  BETA1,
  BETA2,
  LR_SCHEDULE,
  LR_DECAY,
  L2,
  KEEP_PROB,
  HIDDEN_SIZES,
  ACTIVATION,
  BATCH_NORM,
  BN_PLACEMENT,
  BN_MOMENTUM,
  INIT,
)


def main(argv):
  del argv
  splits = common.load_data()
  print(common.describe(splits))
  try:
    hidden_sizes = tuple(int(size) for size in HIDDEN_SIZES.value)
    hp = bnjax.hparams(
      learning_rate=LEARNING_RATE.value,
      optimizer=OPTIMIZER.value,
      beta1=BETA1.value,
      beta2=BETA2.value,
      lr_schedule=LR_SCHEDULE.value,
      lr_decay=LR_DECAY.value,
      l2=L2.value,
      keep_prob=KEEP_PROB.value,
      bn_momentum=BN_MOMENTUM.value,
      init=INIT.value,
    )
    config = bnjax.TrainConfig(
      epochs=EPOCHS.value,
      batch_size=BATCH_SIZE.value,
      hidden_sizes=hidden_sizes,
      num_classes=splits.num_classes,
      activation=ACTIVATION.value,
      batch_norm=BATCH_NORM.value,
      bn_placement=BN_PLACEMENT.value,
      dropout=KEEP_PROB.value < 1,
    )
    bnjax.make_train(config)  # validates the static settings
  except ValueError as error:
    raise SystemExit(f'error: {error}') from None
  if not 0 < KEEP_PROB.value <= 1 or LEARNING_RATE.value <= 0:
    raise SystemExit('error: need 0 < keep_prob <= 1 and learning_rate > 0.')
  if BATCH_SIZE.value > len(splits.y_train):
    raise SystemExit(
      f'error: batch_size {BATCH_SIZE.value} exceeds the {len(splits.y_train)} '
      'training examples; lower --batch_size.'
    )

  data = bnjax.TrainData(
    *map(jnp.asarray, (splits.x_train, splits.y_train, splits.x_dev, splits.y_dev))
  )
  steps_per_epoch = len(splits.y_train) // config.batch_size
  # The same key split and pieces as `make_train`, one jitted epoch at a time
  # so that each epoch prints as it ends.
  init_key, loop_key = jax.random.split(jax.random.key(common.SEED.value))
  trial = bnjax.init_trial(config, hp, init_key, splits.num_features, steps_per_epoch)
  epoch_fn = jax.jit(functools.partial(bnjax.train_epoch, config))
  start = time.perf_counter()
  history = []
  for epoch in range(config.epochs):
    trial, metrics = epoch_fn(hp, trial, data, loop_key, epoch)
    metrics = {name: float(value) for name, value in metrics.items()}
    history.append(metrics)
    print(
      f'epoch {epoch + 1:3d}  train_loss {metrics["train_loss"]:.4f}  '
      f'dev_loss {metrics["dev_loss"]:.4f}  dev_accuracy {metrics["dev_accuracy"]:.4f}',
      flush=True,
    )
  seconds = time.perf_counter() - start
  if int(trial.diverged_step) >= 0:
    print(f'diverged at step {int(trial.diverged_step)}: lower --learning_rate.')
  _, test_accuracy = bnjax.evaluate(
    config,
    hp,
    trial.params,
    trial.model_state,
    jnp.asarray(splits.x_test),
    jnp.asarray(splits.y_test),
  )
  print(
    f'dev_accuracy {history[-1]["dev_accuracy"]:.4f}  test_accuracy '
    f'{float(test_accuracy):.4f}  ({seconds:.1f} s, compile included)'
  )
  path = common.write_json(
    OUTPUT_DIR.value,
    'metrics.json',
    {
      'dataset': splits.name,
      'dev_accuracy': history[-1]['dev_accuracy'],
      'test_accuracy': float(test_accuracy),
      'seconds': seconds,
      'diverged_step': int(trial.diverged_step),
      'hyperparameters': {flag.name: flag.value for flag in HYPERPARAMETER_FLAGS},
      'history': history,
    },
  )
  print(f'wrote {path}')


if __name__ == '__main__':
  app.run(main)

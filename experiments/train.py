r"""Trains one batch-normalized MLP or CNN and reports dev and test accuracy.

  python experiments/train.py                      # MNIST-1D, the defaults
  python experiments/train.py --dataset=digits --epochs=20
  python experiments/train.py --model=cnn --channels=32,32,32 --kernel_size=5 --head=flatten
  python experiments/train.py --optimizer=momentum --learning_rate=0.1 \
      --lr_schedule=inverse_time --lr_decay=0.1 --keep_prob=0.8
  python experiments/train.py --schedule=runs/pbt/best.json   # replay a PBT winner

Prints the train loss and dev accuracy of every epoch, then the test accuracy
(measured once, after training), and writes <output_dir>/metrics.json.

--schedule replays the hyperparameter schedule of a population-based training
winner (`random_search.py --strategy=pbt` writes it into best.json): its
configuration, the values explore gave it generation by generation, and the
members whose keys trained each generation. It trains in a population of the
search's shape, so on the machine and devices that ran the search it gives the
winner's curves bit for bit; the other hyperparameter flags do not apply.
"""

import functools
import json
import math
import os
import sys
import time

if __package__ in (None, ''):  # Run as a script: make `experiments` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
from absl import flags

import bnjax
from bnjax import files, registry, search
from experiments import common

EPOCHS = flags.DEFINE_integer('epochs', 40, 'Passes over the training split.')
HIDDEN_SIZES = flags.DEFINE_list(
  'hidden_sizes', ['256', '256', '256'], 'mlp: units per hidden layer.'
)
CHANNELS = flags.DEFINE_list('channels', ['32', '32', '32'], 'cnn: channels per conv block.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs/train', 'Where metrics.json goes.')
SCHEDULE = flags.DEFINE_string(
  'schedule',
  None,
  'A best.json of --strategy=pbt: replay its winner (configuration and hyperparameter '
  'schedule) instead of training from the flags.',
)
# Every traced and static hyperparameter of the registry is a flag. The
# defaults below differ from the registry's: they train MNIST-1D well in 40
# epochs (about 72% test), where Adam at 1e-3 without decay or dropout lags.
HYPERPARAMETERS = common.define_hyperparameter_flags(
  (*registry.TRACED, *registry.STATIC),
  defaults={
    'learning_rate': 0.02,
    'lr_schedule': 'inverse_time',
    'lr_decay': 0.05,
    'keep_prob': 0.8,
  },
)


def configure() -> tuple[bnjax.TrainConfig, dict, jax.Array]:
  """The static config, the traced hyperparameters and the key the flags name; bad values exit.

  Runs before the data loads, so `num_classes` is filled in afterwards.
  """
  values = {name: holder.value for name, holder in HYPERPARAMETERS.items()}
  sizes_flag = CHANNELS if values['model'] == 'cnn' else HIDDEN_SIZES
  try:
    sizes = tuple(int(size) for size in sizes_flag.value)
    if not sizes or min(sizes) < 1:
      raise ValueError
  except ValueError:
    raise SystemExit(
      f'error: --{sizes_flag.name} takes positive integers, e.g. 32,32; got {sizes_flag.value!r}'
    ) from None
  try:
    for name in registry.STATIC:
      registry.check(name, values[name])
    hp = bnjax.hparams(**{name: values[name] for name in registry.TRACED})
  except registry.HyperparameterError as error:
    raise SystemExit(f'error: --{error}') from None
  if EPOCHS.value < 1:
    raise SystemExit(f'error: --epochs must be >= 1; got {EPOCHS.value}')
  key = search.seed_key(common.SEED.value)  # a SearchError outside [0, 2**64)
  config = bnjax.TrainConfig(
    epochs=EPOCHS.value,
    batch_size=values['batch_size'],
    hidden_sizes=sizes,
    num_classes=0,
    activation=values['activation'],
    batch_norm=values['batch_norm'],
    bn_placement=values['bn_placement'],
    dropout=values['keep_prob'] < 1,
    l2_penalty=values['l2'] != 0,
    matmul_dtype=values['matmul_dtype'],
    model=values['model'],
    kernel_size=values['kernel_size'],
    pool=values['pool'],
    head=values['head'],
  )
  return config, hp, key


def sizes_name(config: bnjax.TrainConfig) -> str:
  return 'channels' if config.model == 'cnn' else 'hidden_sizes'


def print_epoch(epoch: int, metrics: dict) -> None:
  print(
    f'epoch {epoch + 1:3d}  train_loss {metrics["train_loss"]:.4f}  '
    f'dev_loss {metrics["dev_loss"]:.4f}  dev_accuracy {metrics["dev_accuracy"]:.4f}',
    flush=True,
  )


def replay_schedule(path: str) -> None:
  """`--schedule`: trains the PBT winner that `path` (best.json) describes, and tests it once."""
  given = [
    name
    for name in (*HYPERPARAMETERS, 'epochs', 'hidden_sizes', 'channels')
    if flags.FLAGS[name].present
  ]
  if given:
    common.fail(f'--{given[0]} does not apply with --schedule: the schedule fixes it; leave it out')
  try:
    with open(path) as f:
      winner = json.load(f)
  except (OSError, ValueError) as error:
    common.fail(f'cannot read --schedule {path!r} ({getattr(error, "strerror", None) or error})')
  output_dir = common.output_dir_or_exit(OUTPUT_DIR.value)
  splits = common.load_data()
  print(common.describe(splits))
  start = time.perf_counter()
  replayed = search.pbt_replay(winner, splits)  # a SearchError names what is missing
  seconds = time.perf_counter() - start
  for epoch in range(len(replayed.curves['dev_accuracy'])):
    print_epoch(epoch, {name: curve[epoch] for name, curve in replayed.curves.items()})
  summary = {
    'dataset': splits.name,
    'replayed': os.path.abspath(path),
    'status': 'ok' if math.isfinite(replayed.curves['dev_accuracy'][-1]) else 'diverged',
    'dev_accuracy': float(replayed.curves['dev_accuracy'][-1]),
    'search_dev_accuracy': winner.get('dev_accuracy'),
    'test_accuracy': replayed.test_accuracy,
    'search_test_accuracy': winner.get('test_accuracy'),
    'seconds': seconds,
    'schedule': winner['schedule'],
    'history': {name: curve.tolist() for name, curve in replayed.curves.items()},
  }
  print(
    f'dev_accuracy {summary["dev_accuracy"]:.4f} (the search: {winner.get("dev_accuracy")})  '
    f'test_accuracy {replayed.test_accuracy:.4f} (the search: {winner.get("test_accuracy")})'
  )
  path = files.write_json(os.path.join(output_dir, 'metrics.json'), summary)
  print(f'wrote {path}')


def main(argv):
  del argv
  if SCHEDULE.value:
    replay_schedule(SCHEDULE.value)
    return
  config, hp, key = configure()
  output_dir = common.output_dir_or_exit(OUTPUT_DIR.value)
  splits = common.load_data()
  print(common.describe(splits))
  config = config._replace(num_classes=splits.num_classes, input_shape=splits.input_shape)
  if config.batch_size > len(splits.y_train):
    raise SystemExit(
      f'error: --batch_size {config.batch_size} exceeds the {len(splits.y_train)} '
      'training examples; lower --batch_size.'
    )
  # The network must fit memory before it is built (a SearchError that says how much).
  search.sizing.runs_that_fit(config, splits, jax.local_devices()[:1])
  train_data = bnjax.TrainData(
    *map(jnp.asarray, (splits.x_train, splits.y_train, splits.x_dev, splits.y_dev))
  )
  try:  # a network the data cannot hold (pooling 8x8 images 4 times) stops before compute
    jax.eval_shape(functools.partial(bnjax.init_trial, config), hp, key, train_data)
  except ValueError as error:
    common.fail(common.one_line(error))
  start = time.perf_counter()
  result = bnjax.fit(config, hp, key, train_data, on_epoch=print_epoch)
  seconds = time.perf_counter() - start
  diverged_step = int(result.diverged_step)
  summary = {
    'dataset': splits.name,
    'status': 'diverged' if diverged_step >= 0 else 'ok',
    'dev_accuracy': float(result.metrics['dev_accuracy'][-1]),
    'test_accuracy': None,  # a diverged run's test accuracy would mean nothing
    'diverged_step': diverged_step if diverged_step >= 0 else None,
    'seconds': seconds,
    'hyperparameters': {
      'epochs': EPOCHS.value,
      sizes_name(config): list(config.hidden_sizes),
      **{name: holder.value for name, holder in HYPERPARAMETERS.items()},
    },
    'history': {name: curve.tolist() for name, curve in result.metrics.items()},
  }
  if diverged_step < 0:
    _, test_accuracy = bnjax.evaluate(
      config,
      hp,
      result.params,
      result.model_state,
      jnp.asarray(splits.x_test),
      jnp.asarray(splits.y_test),
    )
    summary['test_accuracy'] = float(test_accuracy)
    print(
      f'dev_accuracy {summary["dev_accuracy"]:.4f}  test_accuracy '
      f'{summary["test_accuracy"]:.4f}  ({seconds:.1f} s, compile included)'
    )
  try:
    path = files.write_json(os.path.join(output_dir, 'metrics.json'), summary)
  except OSError as error:  # a full disk, say: metrics.json there is whole, old or new
    common.fail(
      f'cannot write metrics.json to {output_dir!r} ({error.strerror or error}); '
      'free some space or choose another --output_dir'
    )
  print(f'wrote {path}')
  if diverged_step >= 0:
    common.fail(
      f'training diverged at step {diverged_step} (a non-finite loss or update); lower '
      '--learning_rate. metrics.json says status "diverged" and holds no test accuracy.'
    )


if __name__ == '__main__':
  common.run(main)

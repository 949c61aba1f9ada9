"""What a training run is told: its static settings, its data, and their check.

`TrainConfig` holds the settings that fix the compiled program; `TrainData`
the splits a run may see. `check_config` refuses, before any compute, the
settings that cannot work on the data (one-line `ValueError`s).
"""

import math
from typing import NamedTuple

import jax

from bnjax import registry


class TrainConfig(NamedTuple):
  """Static settings: changing one compiles a new program.

  `hidden_sizes` are the MLP's hidden units per layer, or the CNN's channels
  per block (`model='cnn'`, which also reads `input_shape`, `kernel_size`,
  `pool` and `head`; see `bnjax.nn.cnn`).
  """

  epochs: int
  batch_size: int
  hidden_sizes: tuple[int, ...]
  num_classes: int
  activation: str = 'relu'
  batch_norm: bool = True
  bn_placement: str = 'before'
  eval_batch_size: int = 1024
  select: str = 'final'  # 'final' epoch, or the 'best' dev-accuracy epoch's params
  # False skips dropout's random numbers (about a fifth of a CPU step) when
  # every trial has keep_prob = 1; `keep_prob` is then ignored.
  dropout: bool = True
  # False leaves the L2 term out of the cost when every trial has l2 = 0
  # (`l2` is then ignored): its gradient is one more pass over every weight
  # each step, 3 to 4% of a 3 x 256 step on a CPU (`benchmarks/profile_step.py`).
  l2_penalty: bool = True
  # Evaluate the dev split after every `eval_every`-th epoch of a run (or a
  # segment) and after its last; the dev curves hold NaN at the epochs between.
  # Selection reads the last epoch, so it is unchanged; needs select='final'.
  eval_every: int = 1
  # 'bfloat16': matmul inputs rounded to bfloat16, products summed in float32
  # (parameters, BN, the optimizer and the loss stay float32).
  matmul_dtype: str = 'float32'
  model: str = 'mlp'  # or 'cnn'
  # The CNN's view of a flat row of features, batch axis aside: (length,
  # channels) or (height, width, channels); () means (features, 1).
  input_shape: tuple[int, ...] = ()
  kernel_size: int = 3
  pool: str = 'max'
  head: str = 'global_avg'


class TrainData(NamedTuple):
  """The splits a run may see: train and dev, never test."""

  x_train: jax.Array  # [n_train, F]
  y_train: jax.Array  # [n_train] int
  x_dev: jax.Array
  y_dev: jax.Array


def cnn_input_shape(config: TrainConfig, features: int) -> tuple[int, ...]:
  """The CNN's view of a flat row of `features` values: `input_shape`, or `(features, 1)`."""
  return config.input_shape or (features, 1)


def check_config(config: TrainConfig, data: TrainData) -> None:
  """Static settings that cannot work, before any compute (shapes are known at trace time)."""
  if config.select not in ('final', 'best'):
    raise ValueError(f"select must be 'final' or 'best'; got {config.select!r}.")
  if config.eval_every < 1:
    raise ValueError(f'eval_every must be >= 1; got {config.eval_every}.')
  if config.eval_every > 1 and config.select != 'final':
    raise ValueError(
      "eval_every > 1 leaves dev curves NaN between evaluations: use select='final' "
      "(select='best' needs every epoch's dev accuracy)."
    )
  registry.check('matmul_dtype', config.matmul_dtype)
  registry.check('model', config.model)
  if config.model == 'cnn' and config.matmul_dtype != 'float32':
    raise ValueError("matmul_dtype applies to the MLP only; use 'float32' with model='cnn'.")
  features = data.x_train.shape[1]
  if config.model == 'cnn' and math.prod(cnn_input_shape(config, features)) != features:
    raise ValueError(
      f'input_shape {tuple(config.input_shape)} holds {math.prod(config.input_shape)} values '
      f'but the data has {features} features per row; pass the shape the rows were flattened '
      'from (Splits.input_shape).'
    )
  if config.epochs < 1 or config.batch_size < 1:
    raise ValueError(
      f'epochs and batch_size must be >= 1; got {config.epochs}, {config.batch_size}.'
    )
  n_train = data.x_train.shape[0]
  if n_train < config.batch_size:
    raise ValueError(
      f'batch_size {config.batch_size} exceeds the {n_train} training '
      'examples; use a smaller batch size.'
    )

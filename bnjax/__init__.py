"""bnjax: batch-normalized networks and cheap hyperparameter search in JAX.

This module only re-exports (optax-style). The pieces live in `bnjax.nn`
(batch norm, losses, dropout, the MLP), `bnjax.optim` (optimizers, schedules),
`bnjax.training` (one trial), `bnjax.registry` (every hyperparameter once),
`bnjax.hyperparameters` (`hparams`: their values as the arrays `train` takes),
`bnjax.space` (search spaces), `bnjax.data` and `bnjax.search`.
"""

from bnjax.gradient_check import grad_check
from bnjax.hyperparameters import hparams
from bnjax.nn import (
  accuracy,
  batch_norm,
  batch_statistics,
  bn_init,
  cnn_apply,
  cnn_init,
  dropout,
  l2_penalty,
  mlp_apply,
  mlp_init,
  softmax_cross_entropy,
  weight_matrices,
)
from bnjax.optim import (
  adam,
  exponential_decay,
  inverse_time_decay,
  momentum,
  optimizer,
  rmsprop,
  sgd,
)
from bnjax.registry import HyperparameterError
from bnjax.training import (
  TrainConfig,
  TrainData,
  TrainResult,
  TrialState,
  evaluate,
  finish,
  fit,
  init_trial,
  make_train,
  train_epoch,
  train_epochs,
  train_step,
)

__version__ = '0.1.0'

__all__ = [
  'HyperparameterError',
  'TrainConfig',
  'TrainData',
  'TrainResult',
  'TrialState',
  'accuracy',
  'adam',
  'batch_norm',
  'batch_statistics',
  'bn_init',
  'cnn_apply',
  'cnn_init',
  'dropout',
  'evaluate',
  'exponential_decay',
  'finish',
  'fit',
  'grad_check',
  'hparams',
  'init_trial',
  'inverse_time_decay',
  'l2_penalty',
  'make_train',
  'mlp_apply',
  'mlp_init',
  'momentum',
  'optimizer',
  'rmsprop',
  'sgd',
  'softmax_cross_entropy',
  'train_epoch',
  'train_epochs',
  'train_step',
  'weight_matrices',
]

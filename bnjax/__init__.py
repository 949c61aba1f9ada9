"""bnjax: batch-normalized networks and cheap hyperparameter search in JAX."""

from bnjax.batch_norm import batch_norm, batch_statistics, bn_init
from bnjax.grad_check import grad_check
from bnjax.losses import accuracy, l2_penalty, softmax_cross_entropy, weight_matrices
from bnjax.mlp import dropout, mlp_apply, mlp_init
from bnjax.optimizers import adam, momentum, optimizer, rmsprop, sgd
from bnjax.schedules import exponential_decay, inverse_time_decay
from bnjax.training import (
  TrainConfig,
  TrainData,
  TrainResult,
  evaluate,
  hparams,
  init_trial,
  make_train,
  train_epoch,
  train_step,
)

__version__ = '0.1.0'

__all__ = [
  'accuracy',
  'adam',
  'batch_norm',
  'batch_statistics',
  'bn_init',
  'dropout',
  'evaluate',
  'exponential_decay',
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
  'train_step',
  'TrainConfig',
  'TrainData',
  'TrainResult',
  'weight_matrices',
]

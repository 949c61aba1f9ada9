"""Pure layers and models: batch norm, losses, dropout, the MLP."""

from bnjax.nn.cnn import cnn_apply, cnn_init
from bnjax.nn.losses import accuracy, l2_penalty, softmax_cross_entropy, weight_matrices
from bnjax.nn.mlp import dropout, mlp_apply, mlp_init
from bnjax.nn.normalization import batch_norm, batch_statistics, bn_init, debiased_statistics

__all__ = [
  'accuracy',
  'batch_norm',
  'batch_statistics',
  'bn_init',
  'cnn_apply',
  'cnn_init',
  'debiased_statistics',
  'dropout',
  'l2_penalty',
  'mlp_apply',
  'mlp_init',
  'softmax_cross_entropy',
  'weight_matrices',
]

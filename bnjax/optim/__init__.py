"""The notes' optimizers as optax transforms, and traceable learning-rate schedules."""

from bnjax.optim.schedules import decayed, exponential_decay, inverse_time_decay
from bnjax.optim.transforms import FAMILIES, adam, momentum, optimizer, rmsprop, sgd

__all__ = [
  'FAMILIES',
  'adam',
  'decayed',
  'exponential_decay',
  'inverse_time_decay',
  'momentum',
  'optimizer',
  'rmsprop',
  'sgd',
]

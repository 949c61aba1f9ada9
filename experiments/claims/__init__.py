"""The notes' claims, one module each: `run(quick=...) -> (numbers, figure)`.

`experiments/findings.py --claim=<name>` runs one and writes its JSON and PNG.
"""

import importlib

# The claims, each the name of its module here, in the order docs/findings.md reports them.
NAMES = (
  'random_vs_grid',
  'sampling_scale',
  'coarse_to_fine',
  'bn_learning_rate',
  'bn_placement',
  'bn_regularization',
  'bn_test_time',
  'bias_before_bn',
  'optimizers',
  'init_depth',
  'regularization',
  'cv_selection',
)


def load(name: str):
  return importlib.import_module(f'experiments.claims.{name}')

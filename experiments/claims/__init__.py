"""The notes' claims, one module each: `run(quick=...) -> (numbers, figure)`.

`experiments/findings.py --claim=<name>` runs one and writes its JSON and PNG.
"""

import importlib

# name -> module under experiments/claims, in the order docs/findings.md reports them.
MODULES = {
  'random_vs_grid': 'random_vs_grid',
  'sampling_scale': 'sampling_scale',
  'coarse_to_fine': 'coarse_to_fine',
  'bn_learning_rate': 'bn_learning_rate',
  'bn_placement': 'bn_placement',
  'bn_regularization': 'bn_regularization',
  'bn_test_time': 'bn_test_time',
  'bias_before_bn': 'bias_before_bn',
  'optimizers': 'optimizers',
  'init_depth': 'init_depth',
  'regularization': 'regularization',
  'cv_selection': 'cv_selection',
}


def available() -> list[str]:
  """The claims whose module exists."""
  found = []
  for name, module in MODULES.items():
    try:
      importlib.import_module(f'experiments.claims.{module}')
    except ModuleNotFoundError:
      continue
    found.append(name)
  return found


def load(name: str):
  return importlib.import_module(f'experiments.claims.{MODULES[name]}')

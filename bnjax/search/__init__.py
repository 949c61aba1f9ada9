"""Vectorized hyperparameter search: many trials in one compiled program."""

from bnjax.search.engine import run_trials, test_top_k
from bnjax.search.results import Results, concatenate
from bnjax.search.strategies import (
  DEFAULT_SPACE,
  as_space,
  coarse_to_fine,
  grid_search,
  random_search,
)

__all__ = [
  'DEFAULT_SPACE',
  'Results',
  'as_space',
  'coarse_to_fine',
  'concatenate',
  'grid_search',
  'random_search',
  'run_trials',
  'test_top_k',
]

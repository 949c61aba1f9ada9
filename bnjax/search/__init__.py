"""Vectorized hyperparameter search: many trials in one compiled program.

This module only re-exports. Behind it, in the order data flows:

* `checks`: what a search accepts, checked before its first trial (`SearchError`);
* `buckets`: trials grouped by their static values and width, one compile each;
* `chunks`: a bucket's runs cut into program calls, sharded over devices;
* `sizing`: how many runs a chunk holds (`chunk_runs`), and what a bucket costs;
* `rows`: a trial's executions summarized into its row (and its `best_epoch`);
* `top_k`: the best trials' params kept, and tested once at the end;
* `engine`: `run_trials`, a table of hyperparameters in, `Results` out;
* `results`, `plots`, `scales`: the table, ranking and files; the figures,
  each hyperparameter on its distribution's scale;
* `strategy_options`: the options each strategy takes, checked before any compute;
* `strategies`: random, grid and coarse-to-fine search, and `run` by name;
* `ledger`, `storages`, `study`, `rounds`, `workers`, `candidates`, `bayes`: searches
  kept in an Optuna study, resumable, shared by workers; Bayesian search;
* `population`, `cohorts`, `successive_halving`, `pbt` (with `exploit`), `population_study`:
  populations trained in segments; Hyperband and population-based training,
  checkpointed and resumable; `schedule_replay`: a PBT winner trained again.
"""

from bnjax.search.bayes import bayes_search
from bnjax.search.checkpoints import CheckpointError
from bnjax.search.checks import SearchError
from bnjax.search.chunks import seed_key, trial_keys
from bnjax.search.engine import run_trials
from bnjax.search.ledger import LedgerError

# Not `pbt`: that name is the module `bnjax.search.pbt`.
from bnjax.search.pbt import pbt as population_based_training
from bnjax.search.results import Results, concatenate
from bnjax.search.schedule_replay import replay as pbt_replay
from bnjax.search.sizing import chunk_runs
from bnjax.search.storages import check_storage
from bnjax.search.strategies import coarse_to_fine, grid_search, random_search, run
from bnjax.search.strategy_options import (
  DEFAULT_CNN_SPACE,
  DEFAULT_SPACE,
  ENGINE_OPTIONS,
  POPULATION_OPTIONS,
  POPULATION_STRATEGIES,
  POPULATION_STUDY_OPTIONS,
  STRATEGIES,
  STRATEGY_OPTIONS,
  STUDY_OPTIONS,
  allowed_options,
  check,
)
from bnjax.search.successive_halving import hyperband
from bnjax.search.top_k import test_top_k
from bnjax.space import as_space

__all__ = [
  'DEFAULT_CNN_SPACE',
  'DEFAULT_SPACE',
  'ENGINE_OPTIONS',
  'POPULATION_OPTIONS',
  'POPULATION_STRATEGIES',
  'POPULATION_STUDY_OPTIONS',
  'STRATEGIES',
  'STRATEGY_OPTIONS',
  'STUDY_OPTIONS',
  'CheckpointError',
  'LedgerError',
  'Results',
  'SearchError',
  'allowed_options',
  'as_space',
  'bayes_search',
  'check',
  'chunk_runs',
  'check_storage',
  'coarse_to_fine',
  'concatenate',
  'grid_search',
  'hyperband',
  'pbt_replay',
  'population_based_training',
  'random_search',
  'run',
  'run_trials',
  'seed_key',
  'test_top_k',
  'trial_keys',
]

"""Random, grid and coarse-to-fine search: ways to fill the trial table, and `run`.

Each returns a `Results`; all share `engine.run_trials`, so a grid trial and
a random trial with the same values and id train identically. `run(strategy,
...)` picks one by name and checks its options before any compute.
"""

import math

import jax
import numpy as np

from bnjax.data import Splits
from bnjax.search.chunks import progress_chunk_size
from bnjax.search.engine import check_options, run_trials
from bnjax.search.results import Results, concatenate
from bnjax.search.top_k import test_top_k
from bnjax.space import as_space

# The launcher's default space: the notes' example (learning rate 10**r,
# beta1 = 1 - 10**r, integer units and layers), with ranges moved to where
# BN-MLPs do well on MNIST-1D and the run stays under 5 minutes on a 2-core
# CPU: layers wider than the notes' 50..100 (3 x 384 units reach ~74% where
# 3 x 256 reach ~72%), a learning rate range without the decades where Adam
# only diverges or crawls, dropout, and 1/(1 + d * epoch) decay.
DEFAULT_SPACE = (
  'learning_rate=log:5e-3:5e-2,beta1=1mlog:0.8:0.95,hidden_units=int:256:448,'
  'num_layers=int:2:3,keep_prob=uniform:0.7:0.9,lr_schedule=fixed:inverse_time,'
  'lr_decay=log:0.02:0.15'
)

STRATEGIES = ('random', 'grid', 'coarse_to_fine')
# Each strategy's own options; every strategy also takes `ENGINE_OPTIONS`.
STRATEGY_OPTIONS = {
  'random': ('num_trials',),
  'grid': ('points_per_axis',),
  'coarse_to_fine': ('num_trials', 'rounds', 'keep', 'shrink'),
}
GRID_POINTS = 3  # grid_search's default points per axis
# The options of `run_trials` a strategy passes on (the rest it sets itself).
ENGINE_OPTIONS = (
  'seed',
  'epochs',
  'executions_per_trial',
  'select',
  'top_k',
  'test',
  'chunk_size',
  'devices',
  'eval_batch_size',
  'width_ratio',
  'progress',
)

# Sampling keys fold in ids from the top of the uint32 range; trial keys fold in
# trial ids from 0 up, so the two streams never meet.
_SAMPLING_STREAM = 2**32 - 1


def random_search(
  space, splits: Splits, num_trials: int, *, seed: int = 0, **engine_options
) -> Results:
  """`num_trials` configurations drawn at random from `space`, trained at once.

  Args:
    space: a `Space`, a dict of distributions, a spec string or a JSON path.
    splits: the data.
    num_trials: how many configurations to sample.
    seed: drives both the sampling and every trial's key.
    **engine_options: passed to `run_trials` (epochs, executions_per_trial,
      select, top_k, chunk_size, devices, progress, ...).
  """
  space = as_space(space)
  _check_values(num_trials=num_trials)
  table = space.sample(_sampling_key(seed, 0), num_trials)
  return run_trials(table, splits, seed=seed, space=space, **engine_options)


def grid_search(
  space, splits: Splits, points_per_axis: int = GRID_POINTS, *, seed: int = 0, **engine_options
) -> Results:
  """Every combination of `points_per_axis` values per axis, each on its own scale.

  The notes' point: with the same budget, a grid tries only `points_per_axis`
  distinct values of the one hyperparameter that matters; random search tries
  as many as it has trials.
  """
  space = as_space(space)
  _check_values(points_per_axis=points_per_axis)
  table = space.grid(points_per_axis)
  return run_trials(table, splits, seed=seed, space=space, **engine_options)


def coarse_to_fine(
  space,
  splits: Splits,
  num_trials: int,
  *,
  rounds: int = 2,
  keep: float = 0.1,
  shrink: float = 0.5,
  seed: int = 0,
  top_k: int = 5,
  test: bool = True,
  **engine_options,
) -> Results:
  """Random search in rounds, each range shrunk around the previous bests.

  Round `r + 1` samples `num_trials` new configurations from `space` refined
  (on each axis' own scale) around the best `keep` fraction of all trials so
  far. Trial ids continue across rounds; a `round` column says which round a
  trial belongs to. The test split is seen once, at the end (`test=False`:
  not at all; the candidates stay in the `Results` for `test_top_k`).
  """
  space = as_space(space)
  _check_values(num_trials=num_trials, rounds=rounds, keep=keep, shrink=shrink)
  parts = []
  for round_index in range(rounds):
    table = space.sample(_sampling_key(seed, round_index), num_trials)
    parts.append(
      run_trials(
        table,
        splits,
        seed=seed,
        space=space,
        first_trial_id=round_index * num_trials,
        extra_columns={'round': np.full(num_trials, round_index)},
        top_k=top_k,
        test=False,
        **engine_options,
      )
    )
    results = concatenate(parts)  # its space is round 0's: the one searched
    best = results.best(max(1, int(round(keep * len(results)))))
    best = [row for row in best if row['status'] == 'ok'] or best
    space = space.refine(
      {name: np.asarray([row[name] for row in best]) for name in space.names}, shrink=shrink
    )
  return test_top_k(results, splits, top_k) if test else results


def run(strategy: str, space, splits: Splits, **options) -> Results:
  """Runs the search `strategy` ('random', 'grid' or 'coarse_to_fine') over `space`.

  Every option is checked (`check`) before any compute. Where `chunk_size`
  is not given, a CPU runs chunks of about an eighth of a round's trials
  (`chunks.progress_chunk_size`: as fast there, and progress shows);
  accelerators take as many as memory holds.

  Args:
    strategy: one of `STRATEGIES`.
    space: a `Space`, a dict of distributions, a spec string or a JSON path.
    splits: the data.
    **options: the strategy's own (`STRATEGY_OPTIONS`: `num_trials` for
      'random' and 'coarse_to_fine', `points_per_axis`, `rounds`, `keep`,
      `shrink`) and `run_trials`' (`ENGINE_OPTIONS`).
  """
  check(strategy, **options)
  space = as_space(space)
  if options.get('chunk_size') is None:
    per_round = (
      math.prod(
        len(dist.grid(options.get('points_per_axis', GRID_POINTS))) for dist in space.values()
      )
      if strategy == 'grid'
      else options['num_trials']
    )
    options['chunk_size'] = progress_chunk_size(per_round, options.get('devices'))
  search = {'random': random_search, 'grid': grid_search, 'coarse_to_fine': coarse_to_fine}
  return search[strategy](space, splits, **options)


def check(strategy: str, **options) -> None:
  """Raises a one-line ValueError unless `run(strategy, ..., **options)` can start."""
  if strategy not in STRATEGIES:
    raise ValueError(f'unknown strategy {strategy!r}; choose from {", ".join(STRATEGIES)}.')
  allowed = (*STRATEGY_OPTIONS[strategy], *ENGINE_OPTIONS)
  unknown = [name for name in options if name not in allowed]
  if unknown:
    raise ValueError(
      f'{strategy} search takes no option {unknown[0]!r}; it takes {", ".join(allowed)}.'
    )
  if 'num_trials' in STRATEGY_OPTIONS[strategy] and 'num_trials' not in options:
    raise ValueError(f'{strategy} search needs num_trials.')
  _check_values(**{name: options[name] for name in STRATEGY_OPTIONS[strategy] if name in options})
  check_options(**options)


def _check_values(**values) -> None:
  """One-line ValueErrors for strategy options out of range."""
  for name, value in values.items():
    if name in ('keep', 'shrink'):
      if not 0 < value <= 1:
        raise ValueError(f'{name} must lie in (0, 1]; got {value!r}.')
    elif not isinstance(value, int | np.integer) or value < 1:
      raise ValueError(f'{name} must be an integer >= 1; got {value!r}.')


def _sampling_key(seed: int, round_index: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), _SAMPLING_STREAM - round_index)

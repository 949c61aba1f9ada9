"""Random, grid and coarse-to-fine search: ways to fill the trial table, and `run`.

Each returns a `Results`; all share `engine.run_trials`, so a grid trial and
a random trial with the same values and id train identically. `run(strategy,
...)` picks one by name and checks its options before any compute.

Given `output_dir` (or `storage`, `study_name`), a search runs through a
study (`bnjax.search.study`): its trials are enqueued into the ledger, with
the same ids, values and chunks as in memory, so that the results are the
same, and a rerun resumes it. 'bayes' (`bnjax.search.bayes`) always does.
"""

import math

import jax
import numpy as np

from bnjax.data import Splits
from bnjax.search import bayes, ledger
from bnjax.search.chunks import progress_chunk_size
from bnjax.search.engine import check_options, run_trials
from bnjax.search.results import Results, concatenate
from bnjax.search.study import WAIT, Round, run_study
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

STRATEGIES = ('random', 'grid', 'coarse_to_fine', 'bayes')
# Each strategy's own options; every strategy also takes `ENGINE_OPTIONS`.
STRATEGY_OPTIONS = {
  'random': ('num_trials',),
  'grid': ('points_per_axis',),
  'coarse_to_fine': ('num_trials', 'rounds', 'keep', 'shrink'),
  'bayes': ('num_trials', 'trials_per_round', 'sampler'),
}
# Where a search keeps its study (every strategy takes them; see `run_study`).
STUDY_OPTIONS = ('output_dir', 'storage', 'study_name', 'report', 'stale_after')
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
  if _through_study(engine_options):

    def next_round(study, trials):
      if len(trials) >= num_trials:
        return None
      table = space.sample(_sampling_key(seed, 0), num_trials)
      return Round({name: column[len(trials) :] for name, column in table.items()}, len(trials))

    config = {'strategy': 'random'}
    return _study(space, splits, next_round, config, num_trials, seed, engine_options)
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
  if _through_study(engine_options):
    next_round = lambda study, trials: None if trials else Round(table)
    config = {'strategy': 'grid', 'points_per_axis': points_per_axis}
    size = len(next(iter(table.values()), ()))
    return _study(space, splits, next_round, config, size, seed, engine_options)
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
  if _through_study(engine_options):

    def next_round(study, trials):
      made = len({trial.user_attrs[ledger.ROUND] for trial in trials})
      if made >= rounds:
        return None
      if not all(trial.state.is_finished() for trial in trials):
        return WAIT  # another worker's trials of the last round decide this one
      refined, rows = space, Results.from_study(study).rows
      for round_index in range(made):
        done = [row for row in rows if row['round'] <= round_index]
        refined = _refine(refined, done, keep, shrink)
      table = refined.sample(_sampling_key(seed, made), num_trials)
      return Round(table, made * num_trials)

    config = {
      'strategy': 'coarse_to_fine',
      'round_size': num_trials,
      'keep': keep,
      'shrink': shrink,
      'extra_columns': ['round'],
    }
    options = dict(engine_options, top_k=top_k, test=test)
    return _study(space, splits, next_round, config, rounds * num_trials, seed, options)
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
    space = _refine(space, results.rows, keep, shrink)
  return test_top_k(results, splits, top_k) if test else results


def _refine(space, rows: list[dict], keep: float, shrink: float):
  """`space` refined around the best `keep` share of `rows` (the finished ones, if any)."""
  best = Results(rows, {}, ()).best(max(1, int(round(keep * len(rows)))))
  best = [row for row in best if row['status'] == 'ok'] or best
  return space.refine(
    {name: np.asarray([row[name] for row in best]) for name in space.names}, shrink=shrink
  )


def _through_study(options: dict) -> bool:
  """Whether the options name a study (an output directory or a storage)."""
  return any(options.get(name) is not None for name in ('output_dir', 'storage', 'study_name'))


def _study(space, splits, next_round, config, budget, seed, options) -> Results:
  """Runs a strategy's rounds through its study (`run_study`)."""
  sampler = bayes.make_sampler('RandomSampler', seed)  # never asked: the rounds enqueue
  return run_study(
    space, splits, next_round, config=config, budget=budget, seed=seed, sampler=sampler, **options
  )


def run(strategy: str, space, splits: Splits, **options) -> Results:
  """Runs the search `strategy` ('random', 'grid', 'coarse_to_fine' or 'bayes') over `space`.

  Every option is checked (`check`) before any compute. Where `chunk_size`
  is not given, a CPU runs chunks of about an eighth of a round's trials
  (`chunks.progress_chunk_size`: as fast there, and progress shows);
  accelerators take as many as memory holds.

  Args:
    strategy: one of `STRATEGIES`.
    space: a `Space`, a dict of distributions, a spec string or a JSON path.
    splits: the data.
    **options: the strategy's own (`STRATEGY_OPTIONS`: `num_trials` for
      'random', 'coarse_to_fine' and 'bayes', `points_per_axis`, `rounds`,
      `keep`, `shrink`, `trials_per_round`, `sampler`), `run_trials`'
      (`ENGINE_OPTIONS`) and the study's (`STUDY_OPTIONS`: `output_dir`,
      `storage`, `study_name`, ...), which make the search resumable.
  """
  check(strategy, **options)
  space = as_space(space)
  if strategy == 'bayes':
    return bayes.bayes_search(space, splits, **options)
  if options.get('chunk_size') is None:
    per_round = (
      math.prod(
        len(dist.grid(options.get('points_per_axis', GRID_POINTS))) for dist in space.values()
      )
      if strategy == 'grid'
      else options['num_trials']
    )
    default = progress_chunk_size(per_round, options.get('devices'))
    # A study keeps the chunk size it was made with; this is only a new one's.
    options['default_chunk_size' if _through_study(options) else 'chunk_size'] = default
  search = {'random': random_search, 'grid': grid_search, 'coarse_to_fine': coarse_to_fine}
  return search[strategy](space, splits, **options)


def check(strategy: str, **options) -> None:
  """Raises a one-line ValueError unless `run(strategy, ..., **options)` can start."""
  if strategy not in STRATEGIES:
    raise ValueError(f'unknown strategy {strategy!r}; choose from {", ".join(STRATEGIES)}.')
  allowed = (*STRATEGY_OPTIONS[strategy], *ENGINE_OPTIONS, *STUDY_OPTIONS)
  unknown = [name for name in options if name not in allowed]
  if unknown:
    raise ValueError(
      f'{strategy} search takes no option {unknown[0]!r}; it takes {", ".join(allowed)}.'
    )
  if 'num_trials' in STRATEGY_OPTIONS[strategy] and 'num_trials' not in options:
    raise ValueError(f'{strategy} search needs num_trials.')
  own = {name: options[name] for name in STRATEGY_OPTIONS[strategy] if name in options}
  if strategy == 'bayes':
    bayes.check(**own)
  else:
    _check_values(**own)
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

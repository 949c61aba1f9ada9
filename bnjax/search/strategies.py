"""Random, grid and coarse-to-fine search: ways to fill the trial table, and `run` by name.

Each returns a `Results`; all share `engine.run_trials`, so a grid trial and
a random trial with the same values and id train identically. `run(strategy,
...)` picks one by name and checks its options before any compute
(`strategy_options`: which options each strategy takes, and their checks).

Given `output_dir` (or `storage`, `study_name`), a search runs through a
study (`bnjax.search.study`): its trials are enqueued into the ledger, with
the same ids, values and chunks as in memory, so that the results are the
same, and a rerun resumes it. 'bayes' (`bnjax.search.bayes`) always does.
'hyperband' and 'pbt' (`successive_halving`, `pbt`) train populations in
segments and run through their own study (`population_study`).
"""

import numpy as np

from bnjax.data import Splits
from bnjax.search import bayes, ledger, pbt, successive_halving
from bnjax.search.checks import check_options
from bnjax.search.cohorts import sampling_key
from bnjax.search.engine import run_trials
from bnjax.search.planning import check_fits, plan_options, round_configs
from bnjax.search.results import Results, concatenate
from bnjax.search.rounds import REUSE_ROUNDS
from bnjax.search.strategy_options import (
  GRID_POINTS,
  PBT_EPOCHS,
  POPULATION_STRATEGIES,
  check,
  check_size,
  check_values,
  largest_trial,
  memory_options,
  through_study,
)
from bnjax.search.study import WAIT, Round, run_study
from bnjax.search.top_k import test_top_k
from bnjax.space import as_space


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
  check_values(num_trials=num_trials)
  check_size('random', space, dict(engine_options, num_trials=num_trials))
  table = space.sample(sampling_key(seed, 0), num_trials)
  check_fits(table, splits, **memory_options(engine_options))  # before a study opens
  if through_study(engine_options):

    def next_round(study, trials):
      if len(trials) >= num_trials:
        return None
      table = space.sample(sampling_key(seed, 0), num_trials)
      return Round({name: column[len(trials) :] for name, column in table.items()}, len(trials))

    config = {'strategy': 'random'}
    return _study(space, splits, next_round, config, num_trials, seed, engine_options)
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
  check_values(points_per_axis=points_per_axis)
  check_size('grid', space, dict(engine_options, points_per_axis=points_per_axis))
  table = space.grid(points_per_axis)
  check_fits(table, splits, **memory_options(engine_options))  # before a study opens
  if through_study(engine_options):
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
  check_values(num_trials=num_trials, rounds=rounds, keep=keep, shrink=shrink)
  check_size('coarse_to_fine', space, dict(engine_options, num_trials=num_trials, rounds=rounds))
  check_options(top_k=top_k, test=test)  # the rounds run with test=False
  # Later rounds may draw any trial of `space`: its largest must fit from the start.
  check_fits(largest_trial(space), splits, **memory_options(engine_options))
  if through_study(engine_options):

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
      table = refined.sample(sampling_key(seed, made), num_trials)
      return Round(table, made * num_trials)

    config = {
      'strategy': 'coarse_to_fine',
      'round_size': num_trials,
      'keep': keep,
      'shrink': shrink,
      'extra_columns': ['round'],
      'bucket_plan': REUSE_ROUNDS,
    }
    options = dict(engine_options, top_k=top_k, test=test)
    return _study(space, splits, next_round, config, rounds * num_trials, seed, options)
  parts, reuse = [], ()
  for round_index in range(rounds):
    table = space.sample(sampling_key(seed, round_index), num_trials)
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
        reuse=reuse,
        **engine_options,
      )
    )
    # The next round may take this one's programs (as a study's rounds do, `StudyRun`).
    reuse = round_configs(table, splits, reuse=reuse, **plan_options(engine_options))
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


def _study(space, splits, next_round, config, budget, seed, options) -> Results:
  """Runs a strategy's rounds through its study (`run_study`)."""
  sampler = bayes.make_sampler('RandomSampler', seed)  # never asked: the rounds enqueue
  return run_study(
    space, splits, next_round, config=config, budget=budget, seed=seed, sampler=sampler, **options
  )


def run(strategy: str, space, splits: Splits, **options) -> Results:
  """Runs the search `strategy` (one of `STRATEGIES`) over `space`.

  Every option is checked (`strategy_options.check`) before any compute.
  Where `chunk_size` is not given, each bucket's chunks take
  `sizing.chunk_runs`' size, which depends on the bucket and the devices
  only, so a trial's numbers do not move with `num_trials`.

  Args:
    strategy: one of `STRATEGIES`.
    space: a `Space`, a dict of distributions, a spec string or a JSON path.
    splits: the data.
    **options: the strategy's own (`STRATEGY_OPTIONS`: `num_trials` for
      'random', 'coarse_to_fine' and 'bayes', `points_per_axis`, `rounds`,
      `keep`, `shrink`, `trials_per_round`, `sampler`), `run_trials`'
      (`ENGINE_OPTIONS`) and the study's (`STUDY_OPTIONS`: `output_dir`,
      `storage`, `study_name`, ...), which make the search resumable.
      'hyperband' and 'pbt' take their own (`min_epochs`, `max_epochs`,
      `eta`; `population_size`, `ready`, `quantile_fraction`,
      `perturbation_factors`, `resample_probability`) and those of
      `POPULATION_OPTIONS` and `POPULATION_STUDY_OPTIONS`; pbt's `epochs`
      (default `PBT_EPOCHS`) are its generations times `ready`.
  """
  space = as_space(space)
  check(strategy, space, **options)
  if strategy == 'bayes':
    return bayes.bayes_search(space, splits, **options)
  if strategy in POPULATION_STRATEGIES:
    # The largest trial the space can draw must fit memory before the study opens.
    epochs = options.get('max_epochs', 27) if strategy == 'hyperband' else options.get('epochs')
    check_fits(largest_trial(space), splits, **memory_options({**options, 'epochs': epochs or 1}))
  if strategy == 'hyperband':
    return successive_halving.hyperband(space, splits, **options)
  if strategy == 'pbt':
    population_size = options.pop('population_size')
    ready = options.setdefault('ready', pbt.READY)
    options['generations'] = options.pop('epochs', PBT_EPOCHS) // ready
    return pbt.pbt(space, splits, population_size, **options)
  search = {'random': random_search, 'grid': grid_search, 'coarse_to_fine': coarse_to_fine}
  return search[strategy](space, splits, **options)

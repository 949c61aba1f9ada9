"""Random, grid and coarse-to-fine search: ways to fill the trial table, and `run` by name.

Each returns a `Results`; all share `engine.run_trials`, so a grid trial and
a random trial with the same values and id train identically. `run(strategy,
...)` picks one by name and checks its options before any compute.

Given `output_dir` (or `storage`, `study_name`), a search runs through a
study (`bnjax.search.study`): its trials are enqueued into the ledger, with
the same ids, values and chunks as in memory, so that the results are the
same, and a rerun resumes it. 'bayes' (`bnjax.search.bayes`) always does.
'hyperband' and 'pbt' (`successive_halving`, `pbt`) train populations in
segments and run through their own study (`population_study`).
"""

import math

import numpy as np

from bnjax import registry
from bnjax.data import Splits
from bnjax.registry import STATIC, per_layer_index
from bnjax.search import bayes, ledger, pbt, successive_halving
from bnjax.search.checks import (
  SearchError,
  check_count,
  check_fraction,
  check_options,
  check_runs,
)
from bnjax.search.cohorts import sampling_key
from bnjax.search.engine import check_fits, run_trials
from bnjax.search.results import Results, concatenate
from bnjax.search.study import WAIT, Round, run_study
from bnjax.search.top_k import test_top_k
from bnjax.space import Space, as_space

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

# `--model=cnn`'s default space: BN conv blocks (conv -> BN -> ReLU -> max
# pool) with a flattening head, which keeps where along the sequence a
# feature was seen (MNIST-1D's classes differ by shape and position); kernel
# 5 and 3 blocks as in the MNIST-1D paper's CNN (Greydanus 2020), channel
# widths that fit one bucket, and the MLP space's optimizer ranges.
DEFAULT_CNN_SPACE = (
  'model=fixed:cnn,channels=int:24:36,num_blocks=fixed:3,kernel_size=fixed:5,head=fixed:flatten,'
  'learning_rate=log:5e-3:5e-2,beta1=1mlog:0.8:0.95,keep_prob=uniform:0.8:1,'
  'lr_schedule=fixed:inverse_time,lr_decay=log:0.02:0.15'
)

STRATEGIES = ('random', 'grid', 'coarse_to_fine', 'bayes', 'hyperband', 'pbt')
# Each strategy's own options; the table strategies also take `ENGINE_OPTIONS`,
# the population ones (hyperband, pbt) those of `POPULATION_OPTIONS`.
STRATEGY_OPTIONS = {
  'random': ('num_trials',),
  'grid': ('points_per_axis',),
  'coarse_to_fine': ('num_trials', 'rounds', 'keep', 'shrink'),
  'bayes': ('num_trials', 'trials_per_round', 'sampler'),
  'hyperband': ('min_epochs', 'max_epochs', 'eta'),
  'pbt': (
    'population_size',
    'ready',
    'quantile_fraction',
    'perturbation_factors',
    'resample_probability',
  ),
}
# Strategies that train populations in lockstep and decide between segments.
POPULATION_STRATEGIES = ('hyperband', 'pbt')
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
  'segment_epochs',
  'concurrent_chunks',
  'progress',
  'cv',
)

# The engine and study options the population strategies take: they rank on
# the last epoch ('final'), run one execution per trial and one process per study.
POPULATION_OPTIONS = {
  'hyperband': (
    'seed',
    'top_k',
    'test',
    'chunk_size',
    'devices',
    'eval_batch_size',
    'width_ratio',
    'progress',
  ),
  'pbt': ('seed', 'epochs', 'top_k', 'test', 'devices', 'eval_batch_size', 'progress'),
}
POPULATION_STUDY_OPTIONS = ('output_dir', 'storage', 'study_name', 'report')
PBT_EPOCHS = 20  # pbt's default total epochs (`ready` 4: five generations)


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
  _check_size('random', space, dict(engine_options, num_trials=num_trials))
  table = space.sample(sampling_key(seed, 0), num_trials)
  check_fits(table, splits, **_memory_options(engine_options))  # before a study opens
  if _through_study(engine_options):

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
  _check_values(points_per_axis=points_per_axis)
  _check_size('grid', space, dict(engine_options, points_per_axis=points_per_axis))
  table = space.grid(points_per_axis)
  check_fits(table, splits, **_memory_options(engine_options))  # before a study opens
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
  _check_size('coarse_to_fine', space, dict(engine_options, num_trials=num_trials, rounds=rounds))
  check_options(top_k=top_k, test=test)  # the rounds run with test=False
  # Later rounds may draw any trial of `space`: its largest must fit from the start.
  check_fits(_largest(space), splits, **_memory_options(engine_options))
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
      table = refined.sample(sampling_key(seed, made), num_trials)
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
  """Runs the search `strategy` (one of `STRATEGIES`) over `space`.

  Every option is checked (`check`) before any compute. Where `chunk_size`
  is not given, each bucket's chunks take `chunks.chunk_runs`' size, which
  depends on the bucket and the devices only, so a trial's numbers do not
  move with `num_trials`.

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
    check_fits(_largest(space), splits, **_memory_options({**options, 'epochs': epochs or 1}))
  if strategy == 'hyperband':
    return successive_halving.hyperband(space, splits, **options)
  if strategy == 'pbt':
    population_size = options.pop('population_size')
    ready = options.setdefault('ready', pbt.READY)
    options['generations'] = options.pop('epochs', PBT_EPOCHS) // ready
    return pbt.pbt(space, splits, population_size, **options)
  search = {'random': random_search, 'grid': grid_search, 'coarse_to_fine': coarse_to_fine}
  return search[strategy](space, splits, **options)


def allowed_options(strategy: str) -> tuple[str, ...]:
  """Every option `run(strategy, ...)` takes."""
  if strategy in POPULATION_STRATEGIES:
    return (
      *STRATEGY_OPTIONS[strategy],
      *POPULATION_OPTIONS[strategy],
      *POPULATION_STUDY_OPTIONS,
    )
  return (*STRATEGY_OPTIONS[strategy], *ENGINE_OPTIONS, *STUDY_OPTIONS)


def check(strategy: str, space: Space | None = None, **options) -> None:
  """Raises a one-line `SearchError` unless `run(strategy, space, ..., **options)` can start.

  Given the `Space`, a grid's size is checked too (`checks.MAX_RUNS`).
  """
  if strategy not in STRATEGIES:
    raise SearchError(f'unknown strategy {strategy!r}; choose from {", ".join(STRATEGIES)}.')
  allowed = allowed_options(strategy)
  unknown = [name for name in options if name not in allowed]
  if unknown:
    raise SearchError(
      f'{strategy} search takes no option {unknown[0]!r}; it takes {", ".join(allowed)}.'
    )
  required = {'num_trials', 'population_size'} & set(STRATEGY_OPTIONS[strategy])
  for name in sorted(required):
    if name not in options:
      raise SearchError(f'{strategy} search needs {name}.')
  own = {name: options[name] for name in STRATEGY_OPTIONS[strategy] if name in options}
  if strategy == 'bayes':
    bayes.check(**own)
  elif strategy == 'hyperband':
    _check_hyperband(**own)
  elif strategy == 'pbt':
    _check_pbt(options, space)
  else:
    _check_values(**own)
  check_options(**options)
  if options.get('cv') is not None and (strategy == 'bayes' or _through_study(options)):
    raise SearchError(
      'cv runs in memory, outside a study: drop output_dir, storage and study_name '
      '(and use random, grid or coarse_to_fine), then save the Results yourself.'
    )
  if strategy not in POPULATION_STRATEGIES and (strategy != 'grid' or space is not None):
    _check_size(strategy, space, options)


def _check_hyperband(min_epochs: int = 1, max_epochs: int = 27, eta: int = 3) -> None:
  brackets = successive_halving.hyperband_brackets(min_epochs, max_epochs, eta)
  trials = sum(bracket.rungs[0].trials for bracket in brackets)
  check_runs(trials, f'hyperband from {min_epochs:,} to {max_epochs:,} epochs', 'raise min_epochs')


def _check_pbt(options: dict, space: Space | None) -> None:
  varying = [
    name for name in STATIC if space is not None and name in space and space[name].kind != 'fixed'
  ]
  if varying:
    raise SearchError(
      f'pbt trains one bucket (one program), but the space varies {varying[0]}; fix it to one '
      f'value, e.g. {varying[0]}=fixed:{space[varying[0]].grid(1)[0]}.'
    )
  names = ('ready', 'quantile_fraction', 'perturbation_factors', 'resample_probability')
  own = {name: options[name] for name in names if name in options}
  population_size = options['population_size']
  pbt.check(population_size, **own)
  check_runs(population_size, f'population_size={population_size:,}', 'lower population_size')
  ready, epochs = own.get('ready', pbt.READY), options.get('epochs', PBT_EPOCHS)
  check_count('epochs', epochs)
  if epochs % ready:
    raise SearchError(
      f'pbt trains epochs={epochs} in generations of ready={ready} epochs: make epochs a '
      'multiple of ready.'
    )


def grid_size(space: Space, points_per_axis: int) -> int:
  """How many trials `space.grid(points_per_axis)` makes, counted without making them."""

  def axis(dist) -> int:
    if dist.kind in ('fixed', 'choice'):
      return len(dist.grid(1))
    if dist.kind in ('int', 'intlog'):
      return min(points_per_axis, dist.high - dist.low + 1)
    return points_per_axis

  return math.prod(axis(dist) for dist in space.values())


def _check_values(**values) -> None:
  """One-line `SearchError`s for strategy options out of range."""
  for name, value in values.items():
    if name in ('keep', 'shrink'):
      check_fraction(name, value)
    else:
      check_count(name, value)


def _check_size(strategy: str, space: Space | None, options: dict) -> None:
  """At most `checks.MAX_RUNS` runs (trials x executions x rounds), a grid counted first."""
  executions = options.get('executions_per_trial', 1)
  check_count('executions_per_trial', executions)
  if strategy == 'grid':
    points = options.get('points_per_axis', GRID_POINTS)
    what = f'a grid of {points} points per axis over {len(space)} names'
    check_runs(grid_size(space, points) * executions, what, 'lower points_per_axis or fix names')
    return
  rounds = options.get('rounds', 1) if strategy == 'coarse_to_fine' else 1
  what = f'num_trials={options["num_trials"]:,}' + (f' x rounds={rounds}' if rounds > 1 else '')
  if executions > 1:
    what += f' x executions_per_trial={executions}'
  check_runs(options['num_trials'] * rounds * executions, what, 'lower num_trials')


def _largest(space: Space) -> dict[str, list]:
  """A one-trial table of the widest, deepest, largest-batch trial `space` can draw.

  A space that searches no shape (only traced names) gets the default trial.
  """
  shapes = [
    name
    for name in space.names
    if name == 'batch_size'
    or per_layer_index(name)
    or (name in registry.REGISTRY and registry.get(name).role == 'architecture')
  ]
  return {name: [max(space[name].grid(2))] for name in shapes} or {
    'batch_size': [registry.DEFAULTS['batch_size']]
  }


def _memory_options(options: dict) -> dict:
  names = ('epochs', 'executions_per_trial', 'devices', 'eval_batch_size', 'select', 'width_ratio')
  names += ('cv',)
  return {name: options[name] for name in names if name in options}

"""What each search strategy takes, and the checks that its options can work.

The tables say which options `strategies.run(strategy, ...)` accepts: each
strategy's own (`STRATEGY_OPTIONS`), the `run_trials` options it passes on
(`ENGINE_OPTIONS`; `POPULATION_OPTIONS` for hyperband and pbt) and the
study's (`STUDY_OPTIONS`, `POPULATION_STUDY_OPTIONS`), beside the defaults
(`DEFAULT_SPACE`, `GRID_POINTS`, `PBT_EPOCHS`). `check` raises a one-line
`SearchError` unless a strategy's options can work, before any compute;
`checks` holds the checks of `run_trials`' own options.
"""

import math

from bnjax import registry
from bnjax.registry import STATIC, per_layer_index
from bnjax.search import bayes, pbt, successive_halving
from bnjax.search.checks import (
  SearchError,
  check_count,
  check_fraction,
  check_options,
  check_runs,
)
from bnjax.search.planning import plan_options
from bnjax.space import Space

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
    check_values(**own)
  check_options(**options)
  if options.get('cv') is not None and (strategy == 'bayes' or through_study(options)):
    raise SearchError(
      'cv runs in memory, outside a study: drop output_dir, storage and study_name '
      '(and use random, grid or coarse_to_fine), then save the Results yourself.'
    )
  if strategy not in POPULATION_STRATEGIES and (strategy != 'grid' or space is not None):
    check_size(strategy, space, options)


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


def check_values(**values) -> None:
  """One-line `SearchError`s for strategy options out of range."""
  for name, value in values.items():
    if name in ('keep', 'shrink'):
      check_fraction(name, value)
    else:
      check_count(name, value)


def check_size(strategy: str, space: Space | None, options: dict) -> None:
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


def largest_trial(space: Space) -> dict[str, list]:
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


def memory_options(options: dict) -> dict:
  """The options a search gives `planning.check_fits`: a plan's, the chunk size aside.

  The fit check plans at the chunks the devices pick, as it always has;
  `run_trials` plans at `chunk_size` where one is given.
  """
  return {name: value for name, value in plan_options(options).items() if name != 'chunk_size'}


def through_study(options: dict) -> bool:
  """Whether the options name a study (an output directory or a storage)."""
  return any(options.get(name) is not None for name in ('output_dir', 'storage', 'study_name'))

"""Bayesian optimization in batches: ask a round of trials, train them at once, tell, repeat.

An Optuna sampler proposes each round: TPE by default, with the constant
liar, so that the trials of one round (asked before any is told) spread out
instead of piling on one point; the GP sampler (`sampler='gp'`, batch log
expected improvement over the running trials, the closest to the notes'
`gp_minimize`) needs `pip install 'bnjax[gp]'` (torch, scipy); any other
Optuna sampler by its class name ('RandomSampler', 'QMCSampler', ...).

A round's sampler is seeded from the search's seed and the round, so a
search resumed after a crash asks what the uninterrupted one would have.
On a CPU, rounds are small (`CPU_TRIALS_PER_ROUND`): a CPU gains nothing
from width, and smaller rounds let the sampler learn more often.
"""

import importlib.util
import inspect

import numpy as np
import optuna

from bnjax.data import Splits
from bnjax.search import sizing
from bnjax.search.rounds import REUSE_ROUNDS
from bnjax.search.study import Round, run_study
from bnjax.space import Space, as_space, with_defaults
from bnjax.training import TrainConfig

SAMPLERS = ('tpe', 'gp')  # short names; any optuna.samplers class name works too
CPU_TRIALS_PER_ROUND = 8
MAX_TRIALS_PER_ROUND = 256


def sampler_class(name: str) -> type:
  """The Optuna sampler class `name` stands for; a one-line ValueError if none or unusable."""
  if not isinstance(name, str):
    raise ValueError(f'sampler must be a name like tpe or gp; got {name!r}.')
  wanted = {'tpe': 'TPESampler', 'gp': 'GPSampler'}.get(name.lower(), name)
  classes = {
    cls_name.lower(): cls
    for cls_name, cls in vars(optuna.samplers).items()
    if isinstance(cls, type) and issubclass(cls, optuna.samplers.BaseSampler)
  }
  cls = classes.get(wanted.lower()) or classes.get(wanted.lower() + 'sampler')
  if cls is None or cls is optuna.samplers.BaseSampler:
    known = sorted(
      n
      for n, c in vars(optuna.samplers).items()
      if n.endswith('Sampler') and n != 'BaseSampler' and not inspect.isabstract(c)
    )
    raise ValueError(
      f'unknown sampler {name!r}; choose tpe, gp or one of optuna.samplers: {", ".join(known)}.'
    )
  if cls is optuna.samplers.GPSampler:
    missing = [m for m in ('torch', 'scipy') if importlib.util.find_spec(m) is None]
    if missing:
      raise ValueError(
        f"the gp sampler needs {' and '.join(missing)}: pip install 'bnjax[gp]' (or --sampler=tpe)."
      )
  required = [
    p.name
    for p in inspect.signature(cls).parameters.values()
    if p.default is inspect.Parameter.empty and p.kind != p.VAR_KEYWORD
  ]
  if required:
    raise ValueError(
      f'sampler {cls.__name__} needs arguments ({", ".join(required)}); pass an instance to '
      'bayes_search(sampler=...) or use tpe or gp.'
    )
  return cls


def make_sampler(name, seed: int) -> optuna.samplers.BaseSampler:
  """A fresh sampler: TPE with the constant liar, or the class `name` names, seeded."""
  if isinstance(name, optuna.samplers.BaseSampler):
    return name
  cls = sampler_class(name)
  options = {}
  parameters = inspect.signature(cls).parameters
  if 'seed' in parameters:
    options['seed'] = seed
  if cls is optuna.samplers.TPESampler:
    options['constant_liar'] = True
  return cls(**options)


def default_trials_per_round(space: Space, splits: Splits, devices=None) -> int:
  """On a CPU `CPU_TRIALS_PER_ROUND`; elsewhere as many of the space's largest trial as fit."""
  import jax

  devices = list(devices or jax.local_devices())
  if devices[0].platform == 'cpu':
    return CPU_TRIALS_PER_ROUND
  big = {name: np.asarray([_largest(dist)]) for name, dist in space.items()}
  table = with_defaults(big, 1)
  config = TrainConfig(
    epochs=1,
    batch_size=int(table['batch_size'][0]),
    hidden_sizes=(int(table['hidden_units'][0]),) * int(table['num_layers'][0]),
    num_classes=splits.num_classes,
  )
  per_trial = sizing.trial_bytes(
    config, splits.num_features, len(splits.y_train), len(splits.y_dev)
  )
  fit = sizing.memory_budget(devices) // per_trial
  return int(min(MAX_TRIALS_PER_ROUND, max(CPU_TRIALS_PER_ROUND, fit)))


def _largest(dist):
  if dist.kind == 'fixed':
    return dist.value
  if dist.kind == 'choice':
    return max(dist.values) if not isinstance(dist.values[0], str) else dist.values[0]
  return dist.high


def bayes_search(
  space,
  splits: Splits,
  num_trials: int,
  *,
  trials_per_round: int | None = None,
  sampler='tpe',
  seed: int = 0,
  output_dir: str | None = None,
  storage: str | None = None,
  study_name: str | None = None,
  report=None,
  stale_after: float = 120.0,
  **engine_options,
):
  """`num_trials` configurations proposed by a sampler, `trials_per_round` at a time.

  Args:
    space: a `Space`, a dict of distributions, a spec string or a JSON path.
    splits: the data.
    num_trials: the budget, over all rounds (and all workers of a shared study).
    trials_per_round: trials asked and trained together (not `batch_size`, a
      hyperparameter); default `default_trials_per_round`.
    sampler: 'tpe' (default), 'gp', an optuna.samplers class name, or a sampler.
    seed: seeds the sampler (per round) and every trial's key.
    output_dir: keep the study (journal file) and top-k candidates there, and
      resume what is there; None with no `storage`: in memory.
    storage, study_name: a shared Optuna storage for several workers.
    report: called with one-line messages (resume, stop).
    **engine_options: `run_trials`' (epochs, select, top_k, chunk_size, ...).
  """
  space = as_space(space)
  check(num_trials=num_trials, trials_per_round=trials_per_round, sampler=sampler)
  per_round = trials_per_round or default_trials_per_round(
    space, splits, engine_options.get('devices')
  )
  name = sampler if isinstance(sampler, str) else type(sampler).__name__

  def next_round(study, trials):
    if len(trials) >= num_trials:
      return None
    study.sampler = make_sampler(sampler, _round_seed(seed, len(trials)))
    return Round(ask=min(per_round, num_trials - len(trials)))

  return run_study(
    space,
    splits,
    next_round,
    config={
      'strategy': 'bayes',
      'sampler': name,
      'trials_per_round': per_round,
      'bucket_plan': REUSE_ROUNDS,
    },
    budget=num_trials,
    storage=storage,
    study_name=study_name,
    output_dir=output_dir,
    sampler=make_sampler(sampler, _round_seed(seed, 0)),
    seed=seed,
    report=report,
    stale_after=stale_after,
    **engine_options,
  )


def check(**options) -> None:
  """One-line ValueErrors for bayes_search's own options."""
  for name in ('num_trials', 'trials_per_round'):
    value = options.get(name)
    if value is None and name == 'trials_per_round':
      continue
    if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
      raise ValueError(f'{name} must be an integer >= 1; got {value!r}.')
  sampler = options.get('sampler', 'tpe')
  if not isinstance(sampler, optuna.samplers.BaseSampler):
    sampler_class(sampler)


def _round_seed(seed: int, trials_made: int) -> int:
  """A 32-bit sampler seed for the round that starts after `trials_made` trials."""
  return int(np.random.SeedSequence([seed % 2**63, trials_made]).generate_state(1)[0])

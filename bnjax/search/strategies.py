"""Random, grid and coarse-to-fine search: ways to fill the trial table.

Each returns a `Results`; all share `engine.run_trials`, so a grid trial and
a random trial with the same values and id train identically.
"""

import jax
import numpy as np

from bnjax.data import Splits
from bnjax.search.engine import run_trials, test_top_k
from bnjax.search.results import Results, concatenate
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

# Sampling keys fold in ids from the top of the uint32 range; trial keys fold in
# trial ids from 0 up, so the two streams never meet.
_SAMPLING_STREAM = 2**32 - 1


def space_scales(space: Space) -> dict[str, str]:
  """Each searched name's sampling scale ('log', 'linear', ...), for plots."""
  return {name: dist.scale for name, dist in space.items()}


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
  if num_trials < 1:
    raise ValueError(f'num_trials must be >= 1; got {num_trials}.')
  table = space.sample(_sampling_key(seed, 0), num_trials)
  return _run(space, table, splits, seed, **engine_options)


def grid_search(
  space, splits: Splits, points_per_axis: int = 3, *, seed: int = 0, **engine_options
) -> Results:
  """Every combination of `points_per_axis` values per axis, each on its own scale.

  The notes' point: with the same budget, a grid tries only `points_per_axis`
  distinct values of the one hyperparameter that matters; random search tries
  as many as it has trials.
  """
  space = as_space(space)
  table = space.grid(points_per_axis)
  return _run(space, table, splits, seed, **engine_options)


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
  **engine_options,
) -> Results:
  """Random search in rounds, each range shrunk around the previous bests.

  Round `r + 1` samples `num_trials` new configurations from `space` refined
  (on each axis' own scale) around the best `keep` fraction of all trials so
  far. Trial ids continue across rounds; a `round` column says which round a
  trial belongs to. The test split is seen once, at the end.
  """
  space = as_space(space)
  if rounds < 1 or not 0 < keep <= 1:
    raise ValueError(f'need rounds >= 1 and keep in (0, 1]; got rounds={rounds}, keep={keep}.')
  parts = []
  for round_index in range(rounds):
    table = space.sample(_sampling_key(seed, round_index), num_trials)
    part = _run(
      space,
      table,
      splits,
      seed,
      first_trial_id=round_index * num_trials,
      top_k=top_k,
      test=False,
      **engine_options,
    )
    for row in part.rows:
      row['round'] = round_index
    part.searched = (*part.searched, 'round')
    part.hyperparameters = (*part.hyperparameters, 'round')
    parts.append(part)
    results = concatenate(parts)
    best = results.best(max(1, int(round(keep * len(results)))))
    best = [row for row in best if row['status'] == 'ok'] or best
    space = space.refine(
      {name: np.asarray([row[name] for row in best]) for name in space.names}, shrink=shrink
    )
  return test_top_k(results, splits, top_k)


def _run(space: Space, table: dict, splits: Splits, seed: int, **engine_options) -> Results:
  """`run_trials` on a table drawn from `space`, its names and scales attached."""
  return run_trials(
    table,
    splits,
    seed=seed,
    hyperparameters=space.names,
    scales=space_scales(space),
    **engine_options,
  )


def _sampling_key(seed: int, round_index: int) -> jax.Array:
  return jax.random.fold_in(jax.random.key(seed), _SAMPLING_STREAM - round_index)

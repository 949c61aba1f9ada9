"""The top-k: the best trials' params kept as chunks finish, and tested once at the end.

Only the `k` best configurations by dev metric ever see the test split, in
eval mode, once. Their params are copied to the host as their chunk finishes
(at most `k` per chunk), so memory holds `k` trials whatever the search's size.
"""

from typing import Any, NamedTuple

import jax
import numpy as np

from bnjax import distributed
from bnjax.data import Splits
from bnjax.model import evaluate
from bnjax.search.folds import ensemble_program
from bnjax.search.results import Results, rank_key
from bnjax.training import TrainConfig, TrainResult


class Candidate(NamedTuple):
  """A trial that may be tested: its row, its program and its trained params."""

  row: dict  # 'trial_id', 'status', 'dev_accuracy', 'dev_loss' (what `rank_key` reads)
  config: TrainConfig
  hp: dict  # the trial's traced hyperparameters, without a trial axis
  params: Any  # [executions, ...] on the host
  model_state: Any  # [executions, ...]
  folds: int | None = None  # K with cross-validation: `[executions * K, ...]`, tested as ensembles


class Finished(NamedTuple):
  """A trial whose runs all ended in the chunk just trained."""

  row: dict  # its metric columns and 'trial_id'
  position: int  # in its bucket's trials (and traced hyperparameters)
  runs: np.ndarray  # [executions] its runs' positions in the chunk


def chunk_candidates(
  finished: list[Finished],
  result: TrainResult,
  config: TrainConfig,
  hp: dict,
  k: int,
  *,
  folds: int | None = None,
) -> list[Candidate]:
  """The `k` best trials of a chunk, their params copied to the host.

  Args:
    finished: the chunk's trials.
    result: the chunk's `TrainResult` (`[runs, ...]` params on the devices).
    config: the bucket's program; hp: its traced hyperparameters `[trials, ...]`.
    k: how many to keep.
    folds: K with cross-validation (a trial's runs are its folds' models).
  """
  best = sorted(finished, key=lambda trial: rank_key(trial.row))[:k]
  return [
    Candidate(
      trial.row,
      config,
      {name: value[trial.position] for name, value in hp.items()},
      distributed.take(result.params, trial.runs),
      distributed.take(result.model_state, trial.runs),
      folds,
    )
    for trial in best
  ]


def keep_best(pool: list[Candidate], new: list[Candidate], k: int) -> list[Candidate]:
  """The `k` best of `pool` and `new`, best first."""
  return sorted([*pool, *new], key=lambda candidate: rank_key(candidate.row))[:k]


def test_top_k(results: Results, splits: Splits, k: int, make_program=None) -> Results:
  """Evaluates the `k` best candidates on the test split, once, in eval mode.

  Fills their `test_accuracy` (the mean over executions; the rest stay NaN)
  and drops the kept params. Diverged trials are never tested: their numbers
  would mean nothing. One program per bucket configuration serves every
  candidate of that bucket: `make_program(config)`; by default `test_program`,
  or for a cross-validated candidate its fold ensemble's
  (`folds.ensemble_program`), whichever search made it.
  """
  by_id = {row['trial_id']: row for row in results.rows}
  kept = sorted(results.candidates, key=lambda c: rank_key(by_id[c.row['trial_id']]))
  kept = [c for c in kept if by_id[c.row['trial_id']]['status'] == 'ok'][:k]
  x_test, y_test = jax.device_put((splits.x_test, splits.y_test))
  programs = {}
  for candidate in kept:
    program = (candidate.config, candidate.folds)
    if program not in programs:
      programs[program] = (make_program or _default_program(candidate.folds))(candidate.config)
    accuracy = programs[program](
      candidate.hp, candidate.params, candidate.model_state, x_test, y_test
    )
    by_id[candidate.row['trial_id']]['test_accuracy'] = float(np.mean(np.asarray(accuracy)))
  results.candidates = []
  return results


def _default_program(folds: int | None):
  return ensemble_program(folds) if folds else test_program


def test_program(config: TrainConfig):
  """`accuracy(hp, params, model_state, x, y) -> [executions]`, jitted, vmapped over executions."""

  def accuracy(hp, params, model_state, x, y):
    return evaluate(config, hp, params, model_state, x, y)[1]

  return jax.jit(jax.vmap(accuracy, in_axes=(None, 0, 0, None, None)))

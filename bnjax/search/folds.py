"""Cross-validated selection: K stratified folds as one more vmapped axis beside executions.

With `cv=K`, the training and dev splits are pooled and dealt into K folds,
stratified by class, with a fixed seed (`FOLD_SEED`), whatever the search's
seed: every trial of every search sees the same folds. Fold `f`'s run trains
on the pool minus fold `f` and is scored on fold `f`. The K fold data sets
live on the device once, stacked `[K, ...]`; each run gathers its own fold's
arrays inside the vmapped program (`fold_data`), so a fold is a run like any
other, in the same chunk as the trial's other runs.

Equal shapes: a program needs every fold's training and dev arrays to have one
shape, so where K does not divide the pool, the `pool % K` (< K) examples dealt
last are left out of every fold (`Folds.dropped` says how many).

A trial with `E` executions has `E * K` runs; run `r` is execution `r // K`
on fold `r % K`, keyed `fold_in(fold_in(seed, trial_id), r)` like any run, so
its numbers depend only on its trial id and `r`, never on its chunk. The
trial's row ranks by the mean dev accuracy over its runs (folds x
executions), and `dev_accuracy_std` is their spread.

The test split is touched once, for the top k only, by the fold ensemble: the
K fold models of an execution average their softmax probabilities on each
test example, and the trial's `test_accuracy` is that ensemble's accuracy,
averaged over executions (no model is refit on the whole pool).

Inputs keep the splits' normalization (the training split's mean and std):
the rows a fold holds out that came from the training split took part in
those statistics, a small leak of feature means and spreads (never of labels)
that per-fold normalization would remove.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bnjax.data import Splits
from bnjax.model import predict
from bnjax.search.checks import SearchError, check_options
from bnjax.training import TrainConfig, TrainData

FOLD_SEED = 0  # folds never move with the search's seed: every trial sees the same ones


class Folds(NamedTuple):
  """K equal folds of the pooled train and dev splits."""

  data: (
    TrainData  # x_train [K, n_fit, F], y_train [K, n_fit], x_dev [K, n_fold, F], y_dev [K, n_fold]
  )
  splits: Splits  # fold 0 as `Splits` (test unchanged): the sizes that plans and checks read
  dropped: int  # pool examples in no fold (fewer than K)

  @property
  def count(self) -> int:
    return int(self.data.y_dev.shape[0])


def check_cv(cv, splits: Splits | None = None) -> None:
  """`cv` must be None (holdout) or an integer >= 2 no larger than the pooled rows allow."""
  check_options(cv=cv)
  if cv is not None and splits is not None:
    pool = len(splits.y_train) + len(splits.y_dev)
    if pool // cv < 1:
      raise SearchError(f'cv={cv} folds need at least {cv} train+dev examples; got {pool}.')


def fold_assignment(y: np.ndarray, k: int, seed: int = FOLD_SEED) -> np.ndarray:
  """Each example's fold in `[0, k)`, or -1 for the `len(y) % k` left out.

  Examples are shuffled by `seed`, grouped by class (stable), and dealt round
  robin: each class's count in a fold differs by at most one between folds.
  The last `len(y) % k` dealt (in folds `0 .. len(y) % k - 1`) are left out,
  so every fold holds `len(y) // k` examples.
  """
  y = np.asarray(y)
  order = np.random.default_rng(seed).permutation(len(y))
  order = order[np.argsort(y[order], kind='stable')]
  fold = np.empty(len(y), np.int64)
  fold[order] = np.arange(len(y)) % k
  extra = len(y) % k
  if extra:
    fold[order[-extra:]] = -1  # the last round of dealing reached only folds 0 .. extra - 1
  return fold


def make_folds(splits: Splits, k: int) -> Folds:
  """The pooled train and dev splits dealt into `k` stratified folds (`fold_assignment`)."""
  check_cv(k, splits)
  x = np.concatenate([splits.x_train, splits.x_dev])
  y = np.concatenate([splits.y_train, splits.y_dev])
  fold = fold_assignment(y, k)
  fit = [np.flatnonzero((fold != f) & (fold >= 0)) for f in range(k)]
  held = [np.flatnonzero(fold == f) for f in range(k)]
  data = TrainData(
    np.stack([x[rows] for rows in fit]),
    np.stack([y[rows] for rows in fit]),
    np.stack([x[rows] for rows in held]),
    np.stack([y[rows] for rows in held]),
  )
  first = splits._replace(
    x_train=data.x_train[0], y_train=data.y_train[0], x_dev=data.x_dev[0], y_dev=data.y_dev[0]
  )
  return Folds(data, first, int(np.sum(fold < 0)))


def fold_data(data: TrainData, fold: jax.Array) -> TrainData:
  """One fold's `TrainData` out of the stacked ones (inside the vmapped program)."""
  return jax.tree.map(lambda stacked: stacked[fold], data)


def folds_of_runs(executions: np.ndarray, k: int) -> np.ndarray:
  """The fold of each run of a chunk, from its run index within the trial (`r % k`)."""
  return np.asarray(executions) % k


def ensemble_program(k: int):
  """`make_program(config)` for `top_k.test_top_k`: the fold ensemble's accuracy per execution.

  The program takes a candidate's `[executions * k, ...]` params and returns
  `[executions]` accuracies: for each execution, its `k` fold models' softmax
  probabilities averaged per test example, then the argmax scored.
  """

  def make_program(config: TrainConfig):
    def accuracy(hp, params, model_state, x, y):
      n = x.shape[0]
      size = min(n, config.eval_batch_size)
      batches = -(-n // size)
      xs = jnp.pad(x, ((0, batches * size - n), (0, 0))).reshape(batches, size, -1)

      def probabilities(xb):
        one = lambda p, s: jax.nn.softmax(predict(config, hp, p, s, xb))
        return jax.vmap(one)(params, model_state)  # [runs, size, classes]

      probs = lax.map(probabilities, xs)  # [batches, runs, size, classes]
      probs = jnp.moveaxis(probs, 1, 0).reshape(probs.shape[1], batches * size, -1)[:, :n]
      ensemble = probs.reshape(-1, k, n, probs.shape[-1]).mean(axis=1)  # [executions, n, C]
      return jnp.mean(jnp.argmax(ensemble, axis=-1) == y, axis=-1)

    return jax.jit(accuracy)

  return make_program

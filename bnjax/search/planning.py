"""A search's buckets, planned before anything compiles, and whether they fit memory.

`plan_buckets` is where a table becomes buckets (`buckets.make_buckets`
priced by `sizing.bucket_cost` on the search's devices): `run_trials` trains
its plan, `check_fits` checks it before a study opens, and a study replans its
earlier rounds to know which programs a later round can reuse (`reuse`).
`plan_brackets` plans Hyperband's brackets together, priced the same way.
"""

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence

import jax
import numpy as np
from numpy.typing import ArrayLike

from bnjax import distributed
from bnjax.data import Splits
from bnjax.search import buckets, checks, folds, sizing
from bnjax.search.checks import SearchError
from bnjax.space import with_defaults
from bnjax.training import TrainConfig

# The `run_trials` options a plan reads (`round_configs`' keyword arguments).
PLAN_OPTIONS = (
  'epochs',
  'executions_per_trial',
  'select',
  'devices',
  'eval_batch_size',
  'width_ratio',
  'chunk_size',
  'cv',
)


def plan_options(options: dict) -> dict:
  """Those of a search's `options` that its plan reads (`PLAN_OPTIONS`)."""
  return {name: options[name] for name in PLAN_OPTIONS if name in options}


def plan_buckets(
  table: Mapping[str, ArrayLike],
  splits: Splits,
  *,
  epochs: int,
  select: str,
  eval_batch_size: int,
  width_ratio: float | str | None,
  devices: Sequence[jax.Device],
  executions: int,
  chunk_size: int | None = None,
  reuse: Sequence[TrainConfig] = (),
) -> list[buckets.Bucket]:
  """The defaulted `table`'s buckets: values and batch sizes checked first.

  `width_ratio='cost'` prices buckets by `sizing.bucket_cost` on `devices`,
  counting no compile for a bucket that takes one of the `reuse` configs
  (programs compiled for an earlier round of the same search).
  """
  checks.check_values(table)
  checks.check_batch_size(table, splits)

  # The plan prices thousands of (config, trials) pairs; a config's chunk
  # (the cache from sysfs, the devices' memory) is read once.
  @functools.cache
  def chunk_of(config: TrainConfig) -> int:
    return sizing.chunk_runs(config, splits, devices, executions=executions, chunk_size=chunk_size)

  depth = buckets.depths(table)

  def price(config: TrainConfig, ids: np.ndarray, compiled: bool) -> float:
    return sizing.bucket_cost(
      config, depth[ids], splits, chunk_of(config), executions=executions, compiled=compiled
    )

  return buckets.make_buckets(
    table,
    epochs=epochs,
    num_classes=splits.num_classes,
    select=select,
    eval_batch_size=eval_batch_size,
    width_ratio=width_ratio,
    input_shape=splits.input_shape,
    price=price,
    reuse=reuse,
  )


def _plan(
  table: Mapping[str, ArrayLike],
  splits: Splits,
  *,
  epochs: int = 20,
  executions_per_trial: int = 1,
  select: str = 'final',
  devices: Sequence[jax.Device] | None = None,
  eval_batch_size: int = 1024,
  width_ratio: float | str | None = 'cost',
  chunk_size: int | None = None,
  cv: int | None = None,
  reuse: Sequence[TrainConfig] = (),
) -> tuple[list[buckets.Bucket], Splits, list, int]:
  """`plan_buckets` of the defaulted `table` on the splits one run trains on.

  The options are `run_trials`' of the same names, with its defaults (one
  place for both `check_fits` and `round_configs`). Returns the buckets,
  those splits, the devices and the runs per trial.
  """
  runs = executions_per_trial * (cv or 1)
  table = with_defaults(table, checks.check_table(table, 0, runs))
  folds.check_cv(cv, splits)
  splits = folds.make_folds(splits, cv).splits if cv else splits
  devices = list(devices or distributed.devices())
  planned = plan_buckets(
    table,
    splits,
    epochs=epochs,
    select=select,
    eval_batch_size=eval_batch_size,
    width_ratio=width_ratio,
    devices=devices,
    executions=runs,
    chunk_size=chunk_size,
    reuse=reuse,
  )
  return planned, splits, devices, runs


def check_fits(table: Mapping[str, ArrayLike], splits: Splits, **options) -> None:
  """Raises a one-line `SearchError` unless `table` can train on `splits` in memory.

  `options`: `run_trials`' plan options (`PLAN_OPTIONS`), as `_plan` takes
  them. `run_trials` plans its chunks this way before it compiles anything;
  a search in rounds calls this on the largest trial its space can draw,
  before round 0.
  """
  planned, splits, devices, runs = _plan(table, splits, **options)
  for bucket in planned:
    sizing.runs_that_fit(bucket.config, splits, devices, executions=runs)


def round_configs(
  table: Mapping[str, ArrayLike],
  splits: Splits,
  *,
  reuse: Sequence[TrainConfig] = (),
  **options,
) -> tuple[TrainConfig, ...]:
  """`reuse` and the configs a round of `table` adds to them: what the next round may reuse.

  `options`: `run_trials`' plan options (`PLAN_OPTIONS`). The round is
  planned as `run_trials(table, ..., reuse=reuse)` plans it, so a study that
  replans its rounds one after the other from its ledger (after a crash, in
  another process) gets the configs the uninterrupted run planned, whatever
  this process happens to have compiled.
  """
  planned, *_ = _plan(table, splits, reuse=reuse, **options)
  added = [bucket.config for bucket in planned if bucket.config not in reuse]
  return (*reuse, *dict.fromkeys(added))


def plan_brackets(
  tables: Sequence[dict[str, np.ndarray]],
  chunk_size: Callable[[TrainConfig], int],
  *,
  splits: Splits | None = None,
  mean_epochs: Sequence[float] | None = None,
  **bucket_options,
) -> tuple[list[list[buckets.Bucket]], list[int]]:
  """Every Hyperband bracket's trials bucketed at once, so that the brackets share programs.

  Bucketed bracket by bracket, each bracket would pad to its own widths and
  chunk its buckets by its own counts, and compile an init and a segment
  program for each (5 buckets and 10 programs for the 17 trials of
  `max_epochs=9`). Planned over every bracket's table together, a bucket's
  config and chunk size hold for every bracket, and a program compiles once
  per bucket. A bucket's chunk size is `chunk_size(config)`, no more than
  the most trials one bracket puts in it: a bracket with fewer trains
  fillers beside them, which costs less than another compile at these sizes.

  `width_ratio='cost'` prices a bucket as one compile plus, per bracket, its
  trials there in chunks of `chunk_size(config)` at the epochs a trial of
  the bracket trains on average (`mean_epochs`, one per table;
  `sizing.bucket_cost` on `splits`).

  Returns each bracket's buckets (positions in its own table; a bucket it has
  no trial in is empty) and every bucket's chunk size.
  """
  whole = {name: np.concatenate([table[name] for table in tables]) for name in tables[0]}
  counts = [len(next(iter(table.values()))) for table in tables]
  bracket_of = np.repeat(np.arange(len(tables)), counts)
  depth = buckets.depths(whole)
  chunk_size = functools.cache(chunk_size)  # read once per config, as in `plan_buckets`

  def price(config: TrainConfig, ids: np.ndarray, compiled: bool) -> float:
    # At the bucket's own chunk size, as `run_trials` prices: a bucket of a
    # few trials gets smaller chunks (below), which pad less but run each
    # trial slower (vmap over fewer), which this price does not know.
    chunk = chunk_size(config)
    cost = 0.0 if compiled else sizing.COMPILE_MACS
    for bracket, epochs in enumerate(mean_epochs):
      mine = ids[bracket_of[ids] == bracket]
      if len(mine):
        cost += sizing.bucket_cost(config, depth[mine], splits, chunk, compiled=True, epochs=epochs)
    return cost

  cost_plan = bucket_options.get('width_ratio') == 'cost'
  if cost_plan and (splits is None or mean_epochs is None):
    raise SearchError("width_ratio='cost' plans brackets from splits and mean_epochs; pass both.")
  planned = buckets.make_buckets(whole, price=price if cost_plan else None, **bucket_options)
  ends = np.cumsum([0, *counts])

  def bracket_part(bucket, lo, hi):
    rows = bucket.trial_ids
    return bucket._replace(trial_ids=rows[(rows >= lo) & (rows < hi)] - lo)

  per_bracket = [[bracket_part(b, lo, hi) for b in planned] for lo, hi in itertools.pairwise(ends)]
  most = [max(len(part[i].trial_ids) for part in per_bracket) for i in range(len(planned))]
  sizes = [min(chunk_size(b.config), n) for b, n in zip(planned, most, strict=True)]
  return per_bracket, sizes

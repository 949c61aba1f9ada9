"""What a search accepts: every option checked before its first trial, one line each.

A search that fails should fail before it has spent anything, with a message
that names the bad value and the fix. `SearchError` is a `ValueError`, so a
caller can catch it as one; the launchers turn it into an `error: ...` line.
Checks that need the data or the devices (a batch larger than the training
split, a trial too big for memory) run as `run_trials` plans its buckets
(`check_batch_size`) and chunks (`chunks.plan_chunks`), still before
anything compiles.
"""

import numbers
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from bnjax import registry
from bnjax.data import Splits

# Runs (trials x executions x rounds) one search may hold: every trial's row,
# curves and key live on the host, about 2 KB each plus 24 bytes an epoch.
# Split a bigger search into several, each with its own seed or trial ids.
MAX_RUNS = 10**6
# Seeds: any integer a NumPy generator or a 64-bit JAX key takes.
SEED_LIMIT = 2**64
# Trial ids travel as uint32 key data; sampling keys take the top of that range.
TRIAL_ID_LIMIT = 2**31
SELECT = ('final', 'best')


class SearchError(ValueError):
  """A search option or table that cannot work (one-line message naming the fix)."""


def show(value) -> str:
  """`repr(value)` on one line and short: a 300-digit seed is not worth printing in full."""
  if isinstance(value, numbers.Integral) and not isinstance(value, bool) and abs(value) >= 10**30:
    return f'{"-" if value < 0 else ""}<a {int(abs(value)).bit_length()}-bit integer>'
  text = ' '.join(repr(value).split())
  return text if len(text) <= 60 else text[:57] + '...'


def is_integer(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def check_count(name: str, value, low: int = 1) -> None:
  """`value` must be an integer >= `low`."""
  if not is_integer(value) or value < low:
    raise SearchError(f'{name} must be an integer >= {low}; got {show(value)}.')


def check_fraction(name: str, value) -> None:
  """`value` must be a number in (0, 1]."""
  if not is_real(value) or not 0 < value <= 1:
    raise SearchError(f'{name} must lie in (0, 1]; got {show(value)}.')


def check_seed(seed) -> None:
  if not is_integer(seed) or not 0 <= seed < SEED_LIMIT:
    raise SearchError(f'seed must be an integer in [0, 2**64); got {show(seed)}.')


def check_runs(runs: int, what: str, fix: str) -> None:
  """A search of `runs` runs must hold at most `MAX_RUNS`."""
  if runs > MAX_RUNS:
    raise SearchError(
      f'{what} makes {runs:,} runs; a search holds at most {MAX_RUNS:,} '
      f'(each keeps its row and curves on the host); {fix}.'
    )


def check_options(**options) -> None:
  """Raises a one-line `SearchError` for a `run_trials` option (of those given) that cannot work."""
  for name, value in options.items():
    if name == 'seed':
      check_seed(value)
    elif name in ('epochs', 'executions_per_trial', 'eval_batch_size'):
      check_count(name, value)
    elif name == 'top_k' and options.get('test', True) is not False:
      check_count(name, value)  # the configurations the test split sees: none is no search
    elif name == 'top_k':
      check_count(name, value, 0)  # test=False: 0 keeps no params for a later test
    elif name in ('chunk_size', 'segment_epochs', 'concurrent_chunks') and value is not None:
      check_count(name, value)
    elif name == 'first_trial_id':
      check_count(name, value, 0)
    elif name == 'select' and value not in SELECT:
      raise SearchError(f"select must be 'final' or 'best'; got {show(value)}.")
    elif name == 'width_ratio' and not (
      value is None or (isinstance(value, str) and value == 'cost') or is_real(value) and value >= 1
    ):
      raise SearchError(f"width_ratio must be 'cost', a number >= 1 or None; got {show(value)}.")
    elif name == 'test' and not isinstance(value, bool | np.bool_):
      raise SearchError(f'test must be True or False; got {show(value)}.')
    elif name == 'progress' and value is not None and not callable(value):
      raise SearchError(f'progress must be a function (done, total) or None; got {show(value)}.')
    elif name == 'cv' and value is not None and not (is_integer(value) and value >= 2):
      raise SearchError(
        f'cv must be an integer >= 2 (folds), or None for the dev split; got {show(value)}.'
      )
    elif name == 'devices' and value is not None and len(value) == 0:
      raise SearchError('devices is empty; pass None for every local device.')


def trial_ids_of(trial_ids: ArrayLike | None, first_trial_id: int, num_trials: int) -> np.ndarray:
  """Each table row's trial id: `trial_ids`, or `first_trial_id` on."""
  if trial_ids is None:
    return first_trial_id + np.arange(num_trials)
  ids = np.asarray(trial_ids)
  if ids.shape != (num_trials,) or not np.issubdtype(ids.dtype, np.integer):
    raise SearchError(f'trial_ids needs one integer per trial ({num_trials}); got {show(ids)}.')
  if len(np.unique(ids)) != num_trials or not 0 <= ids.min() <= ids.max() < TRIAL_ID_LIMIT:
    raise SearchError(f'trial_ids must be distinct and in [0, 2**31); got {show(ids)}.')
  return ids.astype(np.int64)


def check_table(table: Mapping[str, ArrayLike], first_trial_id: int, executions: int) -> int:
  """The number of trials in `table`: at least one, at most `MAX_RUNS` runs, ids in range."""
  if not isinstance(table, Mapping) or not table:
    raise SearchError(
      f'the trial table is empty ({show(table)}); give name -> [trials] values, '
      "e.g. {'learning_rate': [1e-3, 1e-2]}, or sample one from a space."
    )
  num_trials = np.shape(next(iter(table.values())))[:1]
  if not num_trials or not num_trials[0]:
    raise SearchError('the trial table has no rows; give each name at least one value.')
  check_runs(num_trials[0] * executions, f'a table of {num_trials[0]:,} trials', 'split it')
  if first_trial_id + num_trials[0] > TRIAL_ID_LIMIT:
    raise SearchError(
      f'trial ids {first_trial_id}..{first_trial_id + num_trials[0] - 1} pass 2**31; '
      'lower first_trial_id.'
    )
  return num_trials[0]


def check_values(table: dict[str, np.ndarray]) -> None:
  """Static and architecture values must be ones the registry admits (`hparams` checks the rest)."""
  for name, column in table.items():
    if registry.get(name).role != 'traced':
      for value in np.unique(column):
        registry.check(name, value)


def check_batch_size(table: dict[str, np.ndarray], splits: Splits) -> None:
  """No trial's batch may be larger than the training split."""
  n_train = splits.x_train.shape[0]
  largest_batch = int(np.max(table['batch_size']))
  if largest_batch > n_train:
    raise SearchError(
      f'batch_size {largest_batch} exceeds the {n_train} training examples; '
      'lower the batch_size range of the space.'
    )

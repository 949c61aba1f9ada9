"""The ledger: a search as an Optuna study, the truth that outlives the process.

Each trial is an Optuna trial whose number is the trial id (so its key is
`fold_in(seed, number)` whoever runs it). The `Space` stays the source of
truth; Optuna sees it as distributions (`distributions`), a `1mlog` name as
`one_minus_<name>` on a log scale, while the exact user-facing value is kept
as a user attribute under the name users know. A trial stores its round,
status (COMPLETE; FAIL for a diverged one, with its `diverged_step`; PRUNED
for one that successive halving stopped, with the epochs it reached), the
dev accuracy as its value, its bucket, its other metrics and one user
attribute per learning curve; trials of the population strategies also hold
their dev accuracy per epoch as intermediate values (what Optuna's
dashboard plots), their extra columns (`bracket`, `epochs`, `origin`) and,
for population-based training, their lineage and the values they ended with
(`VALUES`). The study stores the search's configuration
(`CONFIG`), checked on every resume (`check_config`), and the test-once
result (`TESTED`).

Where the study is kept (a journal file in the output directory by default,
or any Optuna storage URL or `.journal` path) is `storages`' business.
"""

import hashlib
import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import (
  BaseDistribution,
  CategoricalDistribution,
  FloatDistribution,
  IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState, create_trial

from bnjax import files
from bnjax.data import Splits
from bnjax.registry import to_python
from bnjax.space import Space

STUDY_NAME = 'bnjax'
CONFIG = 'bnjax_config'  # study user attribute: what the search is (check_config)
TESTED = 'bnjax_test'  # study user attribute: {'trials': finished ids, 'test_accuracy': {id: acc}}
ROUND, ROW = 'round', 'row'  # trial user attributes: which round created it, its row there
CURVE = 'curve_'  # trial user attributes: curve_train_loss, curve_dev_loss, curve_dev_accuracy
# Trial user attribute: the user-facing values a trial ended with where they moved
# after its start (population-based training explores them); its params are its start.
VALUES = 'values'
# Metric columns kept together in one user attribute (one write, not five).
METRICS = ('dev_accuracy_std', 'dev_loss', 'best_epoch', 'train_loss')
# Settings a resumed study may change: the budget, and what only the end reads.
BUDGET = ('num_trials', 'rounds', 'top_k', 'chunk_size')
# Configuration keys that say how this version plans a search, set by no flag.
PLANS = ('bucket_plan',)
# Configuration keys derived from the data (`fingerprint`), set by no flag of their own.
DATA = ('data',)

optuna.logging.set_verbosity(optuna.logging.WARNING)


class LedgerError(ValueError):
  """A study that cannot be used as asked (one line naming the fix)."""


# ------------------------------------------------------------------------------ the space


def optuna_name(name: str, space: Space) -> str:
  """The parameter name Optuna sees: `one_minus_<name>` for a 1mlog name."""
  return f'one_minus_{name}' if space[name].scale == 'one_minus_log' else name


def distributions(space: Space) -> dict[str, BaseDistribution]:
  """Optuna name -> distribution of every searched (non-fixed) name of `space`."""
  out = {}
  for name, dist in space.items():
    if dist.kind == 'fixed':
      continue
    if dist.kind == 'choice':
      out[name] = CategoricalDistribution(dist.values)
    elif dist.kind in ('int', 'intlog'):
      out[name] = IntDistribution(dist.low, dist.high, log=dist.kind == 'intlog')
    elif dist.kind == '1mlog':
      out[optuna_name(name, space)] = FloatDistribution(1.0 - dist.high, 1.0 - dist.low, log=True)
    else:
      out[name] = FloatDistribution(dist.low, dist.high, log=dist.kind == 'log')
  return out


def to_params(space: Space, row: Mapping) -> tuple[dict, dict]:
  """A row of user-facing values as (Optuna params, user attributes holding exact 1mlog values)."""
  params, exact = {}, {}
  for name, dist in space.items():
    if dist.kind == 'fixed':
      continue
    value = to_python(row[name])
    if dist.kind == '1mlog':
      params[optuna_name(name, space)] = 1.0 - value
      exact[name] = value
    else:
      params[name] = value
  return params, exact


def values(space: Space, trial: FrozenTrial) -> dict:
  """The trial's user-facing value of every name of `space`, in the space's order.

  Where the trial holds `VALUES` (values that moved while it trained), those.
  """
  if VALUES in trial.user_attrs:
    ended = trial.user_attrs[VALUES]
    return {name: ended[name] for name in space}
  out = {}
  for name, dist in space.items():
    if dist.kind == 'fixed':
      out[name] = dist.value
    elif dist.kind == '1mlog':
      out[name] = trial.user_attrs.get(name, 1.0 - trial.params[optuna_name(name, space)])
    else:
      out[name] = trial.params[name]
  return out


# ------------------------------------------------------------------------------ the study


def open_study(storage, study_name: str | None, config: dict, *, sampler=None):
  """Creates the study, or loads it and checks its configuration.

  Returns `(study, created)`. Raises `LedgerError` when the stored
  configuration differs from `config` (see `check_config`). Workers that
  start at the same moment agree: one creates, the others load.
  """
  name = study_name or STUDY_NAME
  try:
    study = optuna.create_study(
      storage=storage, study_name=name, direction='maximize', sampler=sampler
    )
    study.set_user_attr(CONFIG, files.json_safe(config))
    return study, True
  except optuna.exceptions.DuplicatedStudyError:
    pass
  study = optuna.load_study(storage=storage, study_name=name, sampler=sampler)
  for _ in range(100):  # the creator writes the configuration right after creating
    stored = study.user_attrs.get(CONFIG)
    if stored is not None:
      break
    time.sleep(0.1)
  else:
    raise LedgerError(
      f'study {name!r} exists but was not made by bnjax (no {CONFIG!r} attribute); '
      'use another --study_name'
    )
  check_config(stored, config, name)
  return study, False


def check_config(stored: dict, wanted: dict, name: str) -> None:
  """Raises a one-line `LedgerError` naming the first setting that differs."""
  wanted = files.json_safe(wanted)
  # Flags first: another --dataset also changes the fingerprint, and the flag is the fix.
  for key in sorted(set(stored) | set(wanted), key=lambda key: (key in DATA, key)):
    if key not in BUDGET and stored.get(key) != wanted.get(key):
      raise mismatch(name, key, stored.get(key), wanted.get(key))


def mismatch(name: str, key: str, was, now) -> LedgerError:
  """The one-line error for a study made with `key=was` resumed with `key=now`."""
  was, now = _short(was), _short(now)
  if key in PLANS:
    return LedgerError(
      f'study {name!r} was planned by another bnjax version ({key}={was}, now {now}) and '
      'cannot be resumed by this one; start another search with a new --output_dir or '
      '--study_name'
    )
  if key in DATA:
    return LedgerError(
      f'study {name!r} was made on other data ({was}, now {now}); resume it with the data '
      'set and split it was made on, or start another search with a new --output_dir or '
      '--study_name'
    )
  return LedgerError(
    f'study {name!r} was made with {key}={was}, not {now}; to start another search use a '
    f'new --output_dir or --study_name (or rerun with {key}={was} to resume this one)'
  )


def _short(value) -> str:
  text = repr(value)
  return text if len(text) <= 80 else text[:77] + '...'


def fingerprint(splits: Splits) -> dict:
  """The data set's name, shapes and a hash of every split (a resume must see the same data)."""
  arrays = splits[:6]
  digest = hashlib.sha256()
  for array in arrays:
    array = np.ascontiguousarray(array)
    digest.update(f'{array.dtype}{array.shape}'.encode())
    digest.update(array.tobytes())
  shapes = 'x'.join(str(n) for n in arrays[0].shape)
  return {
    'dataset': splits.name,
    'data': f'train {shapes}, dev {len(arrays[3])}, test {len(arrays[5])}, '
    f'{splits.num_classes} classes, sha256 {digest.hexdigest()[:16]}',
  }


# ------------------------------------------------------------------------------ trials


def trial_ids(storage, study_id: int, numbers: Sequence[int]) -> dict[int, int]:
  """Trial number -> the storage's trial id."""
  return {
    int(n): storage.get_trial_id_from_study_id_trial_number(study_id, int(n)) for n in numbers
  }


def enqueue(study, space: Space, rows: Sequence[Mapping], round_index: int, first_row: int) -> None:
  """Adds `rows` (user-facing values) as WAITING trials of round `round_index`."""
  dists = distributions(space)
  for i, row in enumerate(rows):
    params, exact = to_params(space, row)
    attrs = {ROUND: round_index, ROW: first_row + i, **exact}
    study.add_trial(
      create_trial(
        state=TrialState.WAITING,
        params=params,
        distributions={name: dists[name] for name in params},
        user_attrs=attrs,
      )
    )


def ours(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
  """The study's trials that bnjax made, by number, one per row (the first, where workers raced)."""
  return _split(trials)[0]


def duplicates(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
  """Trials of a row that an earlier trial already holds (two workers made the same round)."""
  return _split(trials)[1]


def _split(trials: Sequence[FrozenTrial]) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
  seen, first, again = set(), [], []
  for trial in sorted(trials, key=lambda t: t.number):
    if ROUND not in trial.user_attrs:
      continue
    row = trial.user_attrs.get(ROW)
    if row is not None and row in seen:
      again.append(trial)
      continue
    seen.add(row)
    first.append(trial)
  return first, again


def record(
  study,
  storage,
  trial_id: int,
  number: int,
  row: dict,
  curves: Mapping,
  *,
  attrs: Mapping | None = None,
  intermediate: bool = False,
) -> bool:
  """Stores a trained trial's metrics and curves, then tells it; False if it was already told.

  `row['status']` 'ok' tells COMPLETE with the dev accuracy, 'pruned' tells
  PRUNED (its value: the last intermediate value), anything else FAIL.
  `attrs` are more user attributes (extra columns, lineage); `intermediate`
  also stores the dev accuracy of each epoch as an intermediate value (step:
  the epochs done), NaN ones left out.
  """
  try:
    storage.set_trial_user_attr(trial_id, 'bucket', int(row['bucket']))
    storage.set_trial_user_attr(
      trial_id, 'metrics', files.json_safe({name: row[name] for name in METRICS})
    )
    for name, value in (attrs or {}).items():
      storage.set_trial_user_attr(trial_id, name, files.json_safe(value))
    for name, curve in curves.items():
      storage.set_trial_user_attr(trial_id, CURVE + name, files.json_safe(np.asarray(curve)))
    if intermediate:
      for epoch, accuracy in enumerate(np.asarray(curves['dev_accuracy'], np.float64), 1):
        if math.isfinite(accuracy):
          storage.set_trial_intermediate_value(trial_id, epoch, float(accuracy))
    if row['status'] == 'ok':
      study.tell(number, row['dev_accuracy'])
    elif row['status'] == 'pruned':
      study.tell(number, state=TrialState.PRUNED)
    else:
      storage.set_trial_user_attr(trial_id, 'diverged_step', int(row['diverged_step']))
      study.tell(number, state=TrialState.FAIL)
  except optuna.exceptions.UpdateFinishedTrialError:
    return False  # another worker told the same numbers first (or this one, before a crash)
  return True


def metrics(trial: FrozenTrial) -> dict | None:
  """A told trial's metric columns (`results.METRIC_COLUMNS` but test), or None if not ours."""
  attrs = trial.user_attrs
  if 'metrics' not in attrs or not trial.state.is_finished():
    return None
  nan = math.nan
  number = lambda value: nan if value is None else value
  kept = attrs['metrics']
  diverged = trial.state == TrialState.FAIL
  pruned = trial.state == TrialState.PRUNED
  return {
    'status': 'diverged' if diverged else 'pruned' if pruned else 'ok',
    'dev_accuracy': nan if diverged or trial.value is None else trial.value,
    'dev_accuracy_std': number(kept['dev_accuracy_std']),
    'dev_loss': number(kept['dev_loss']),
    'best_epoch': kept['best_epoch'],
    'train_loss': number(kept['train_loss']),
    'diverged_step': attrs.get('diverged_step', -1),
  }


def curves(trial: FrozenTrial, names: Sequence[str], epochs: int) -> dict[str, np.ndarray]:
  """A told trial's learning curves, float32 as trained (null read back as NaN), `[epochs]`.

  A trial stopped early (pruned) has NaN past the epochs it reached.
  """
  out = {}
  for name in names:
    curve = np.full(epochs, np.nan, np.float32)
    kept = [math.nan if v is None else v for v in trial.user_attrs[CURVE + name]]
    curve[: len(kept)] = kept
    out[name] = curve
  return out

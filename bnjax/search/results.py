"""The outcome of a search: one row per trial, learning curves, ranking, files."""

import csv
import dataclasses
import math
import os
from typing import Any

import numpy as np

from bnjax import distributed, files
from bnjax.registry import to_python
from bnjax.search import ledger, plots
from bnjax.space import Space, as_space, with_defaults

METRIC_COLUMNS = (
  'status',
  'dev_accuracy',
  'dev_accuracy_std',
  'dev_loss',
  'best_epoch',
  'train_loss',
  'diverged_step',
  'test_accuracy',
)


def rank_key(row: dict) -> tuple:
  """Sort key, best first: finished before diverged, then dev accuracy, then dev loss."""
  accuracy = row['dev_accuracy']
  loss = row['dev_loss']
  return (
    row['status'] != 'ok',
    -accuracy if math.isfinite(accuracy) else math.inf,
    loss if math.isfinite(loss) else math.inf,
    row['trial_id'],
  )


@dataclasses.dataclass
class Results:
  """Rows in trial order, plus curves `[trials, epochs]` in the same order.

  Attributes:
    rows: one dict per trial: `trial_id`, every hyperparameter under its
      name, the extra columns, `bucket`, `status` ('ok' or 'diverged'),
      `dev_accuracy`, `dev_accuracy_std` (over executions), `dev_loss`,
      `best_epoch` (see `bnjax.search.rows`), `train_loss`, `diverged_step`,
      and `test_accuracy` (NaN except for the top configurations, the only
      ones shown the test split).
    curves: 'train_loss', 'dev_loss', 'dev_accuracy' -> `[trials, epochs]`
      (mean over executions).
    hyperparameters: the hyperparameter column names, searched ones first.
    select: 'final' or 'best': the epoch whose dev metrics rank a trial.
    searched: the names the search varied (the space's, or the table's).
    space: the `Space` searched, if any: its distributions give each name's
      scale for the plots.
    extra_columns: columns beside the hyperparameters that are not ones
      (e.g. coarse-to-fine's `round`): in rows, CSV and summary, not plotted.
    info: run facts (buckets, compiles, chunks, devices, seconds).
  """

  rows: list[dict]
  curves: dict[str, np.ndarray]
  hyperparameters: tuple[str, ...]
  select: str = 'final'
  searched: tuple[str, ...] = ()
  space: Space | None = None
  extra_columns: tuple[str, ...] = ()
  info: dict = dataclasses.field(default_factory=dict)
  # `top_k.Candidate`s (params of the best trials) until `test_top_k` has used them.
  candidates: list = dataclasses.field(default_factory=list, repr=False)

  def __len__(self) -> int:
    return len(self.rows)

  @property
  def columns(self) -> tuple[str, ...]:
    return ('trial_id', *self.hyperparameters, *self.extra_columns, 'bucket', *METRIC_COLUMNS)

  def ranked(self) -> list[dict]:
    """All rows, best first."""
    return sorted(self.rows, key=rank_key)

  def best(self, k: int = 1) -> list[dict]:
    """The top `k` rows by dev metric (diverged trials last)."""
    return self.ranked()[:k]

  def all_diverged(self) -> bool:
    """True when no trial finished (an empty search included)."""
    return all(row['status'] != 'ok' for row in self.rows)

  def column(self, name: str) -> np.ndarray:
    """One column over all trials, in trial order."""
    return np.asarray([row[name] for row in self.rows])

  def summary(self, k: int = 10, names: tuple[str, ...] | None = None) -> str:
    """A text table of the top `k` trials."""
    names = names or (*self.searched, *self.extra_columns) or self.hyperparameters
    header = ['rank', 'trial', *names, 'dev_acc', 'dev_loss', 'best_epoch', 'test_acc', 'status']
    lines = []
    for rank, row in enumerate(self.best(k), 1):
      cells = [str(rank), str(row['trial_id'])]
      cells += [_format(row[name]) for name in names]
      accuracy = _format(row['dev_accuracy'])
      if row['dev_accuracy_std'] > 0:
        accuracy += f'±{row["dev_accuracy_std"]:.3f}'
      cells += [
        accuracy,
        _format(row['dev_loss']),
        str(row['best_epoch']),
        _format(row['test_accuracy']),
        row['status'],
      ]
      lines.append(cells)
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    render = lambda cells: '  '.join(
      cell.rjust(width) for cell, width in zip(cells, widths, strict=True)
    )
    rule = '-' * len(render(header))
    return '\n'.join([render(header), rule, *map(render, lines)])

  def winner(self, **metadata) -> dict:
    """What best.json holds: the best trial's hyperparameters and numbers, and `metadata`.

    `status` is 'ok', or 'all_diverged' (with null numbers) when no trial
    finished. `space` defaults to the searched space's spec.
    """
    if self.all_diverged():
      nulls = dict.fromkeys(('hyperparameters', 'trial_id', 'dev_accuracy', 'test_accuracy'))
      record = {'status': 'all_diverged', **nulls}
    else:
      best = self.best(1)[0]
      record = {
        'status': 'ok',
        'hyperparameters': {name: best[name] for name in self.hyperparameters},
        'trial_id': best['trial_id'],
        'dev_accuracy': best['dev_accuracy'],
        'test_accuracy': best['test_accuracy'],
      }
    if self.space is not None:
      metadata = {'space': self.space.to_spec(), **metadata}
    # Population-based training: what `experiments/train.py --schedule` replays.
    replay = {key: self.info[key] for key in ('schedule', 'pbt') if key in self.info}
    return {**record, 'select': self.select, **replay, **metadata}

  def save(self, output_dir, **metadata) -> list[str]:
    """Writes results.csv, best.json (`winner(**metadata)`) and the figures.

    Each file appears whole or not at all (`bnjax.files.atomic_open`); JSON
    holds null where a number is missing, never NaN. Returns the paths. Where
    several processes run one search, only process 0 writes (the others: []).
    """
    if not distributed.is_writer():
      return []
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    csv_path = self.to_csv(os.path.join(output_dir, 'results.csv'))
    json_path = files.write_json(os.path.join(output_dir, 'best.json'), self.winner(**metadata))
    paths = [csv_path, json_path, *map(os.fspath, plots.plot_all(self, output_dir))]
    if 'lineage' in self.info:  # population-based training
      paths.append(self._lineage_csv(os.path.join(output_dir, 'lineage.csv')))
    if self.info.get('schedule'):
      steps = self.info['schedule']
      columns = ['epoch_start', 'epoch_end', *(k for k in steps[0] if k != 'epochs')]
      table = [[*step['epochs'], *(step[k] for k in columns[2:])] for step in steps]
      paths.append(_write_csv(os.path.join(output_dir, 'schedule.csv'), columns, table))
      paths.append(os.fspath(plots.plot_schedule(self, os.path.join(output_dir, 'schedule.png'))))
    return paths

  def _lineage_csv(self, path) -> str:
    """PBT: per member and generation, the member it copied to start it and the values it held."""
    history, lineage = self.info['history'], self.info['lineage']
    names = list(history[0]) if history else []
    table = []
    for trial in range(len(history[0][names[0]]) if names else 0):
      for generation, values in enumerate(history):
        parent = trial if generation == 0 else lineage[generation - 1][trial]
        table.append([trial, generation, parent, *(values[name][trial] for name in names)])
    return _write_csv(path, ['trial_id', 'generation', 'parent', *names], table)

  def to_csv(self, path) -> str:
    """Writes one row per trial, in trial order, with `columns` as the header, atomically."""
    with files.atomic_open(path, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction='ignore')
      writer.writeheader()
      for row in self.rows:
        writer.writerow({name: row.get(name, '') for name in self.columns})
    return os.fspath(path)

  @classmethod
  def from_study(cls, study) -> 'Results':
    """The results of a study that `bnjax.search` wrote, in this process or another.

    One row per told trial, by trial number, with its hyperparameters as
    users name them (`beta1`, not Optuna's `one_minus_beta1`), metrics,
    curves and, once the top k were tested, their test accuracy. results.csv,
    best.json and the plots are views of this.
    """
    config = study.user_attrs[ledger.CONFIG]
    space = as_space(config['space'])
    trials = [t for t in ledger.ours(study.get_trials(deepcopy=False)) if ledger.metrics(t)]
    values = [ledger.values(space, trial) for trial in trials]
    table = with_defaults({name: [v[name] for v in values] for name in space}, len(trials))
    extra = tuple(config.get('extra_columns', ()))
    tested = study.user_attrs.get(ledger.TESTED, {}).get('test_accuracy', {})
    rows = [
      {
        'trial_id': trial.number,
        **{name: to_python(column[i]) for name, column in table.items()},
        **{name: trial.user_attrs[name] for name in extra},
        'bucket': trial.user_attrs['bucket'],
        **ledger.metrics(trial),
        'test_accuracy': _number(tested.get(str(trial.number))),
      }
      for i, trial in enumerate(trials)
    ]
    names = ('train_loss', 'dev_loss', 'dev_accuracy')
    epochs = config['epochs']
    curves = [ledger.curves(trial, names, epochs) for trial in trials]
    return cls(
      rows=rows,
      curves={
        name: np.asarray([c[name] for c in curves], np.float32).reshape(len(trials), epochs)
        for name in names
      },
      hyperparameters=(*space.names, *(name for name in table if name not in space)),
      select=config['select'],
      searched=space.names,
      space=space,
      extra_columns=extra,
    )

  def to_dataframe(self):
    """A pandas DataFrame of the rows (needs pandas: pip install 'bnjax[pandas]')."""
    try:
      import pandas as pd
    except ImportError as error:
      raise ImportError("to_dataframe needs pandas: pip install 'bnjax[pandas]'") from error
    return pd.DataFrame(self.rows, columns=list(self.columns))


def _write_csv(path, columns: list[str], table: list[list]) -> str:
  with files.atomic_open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(table)
  return os.fspath(path)


def _number(value) -> float:
  return math.nan if value is None else value


def _format(value: Any) -> str:
  if isinstance(value, bool | np.bool_):
    return 'true' if value else 'false'
  if isinstance(value, float | np.floating):
    if math.isnan(value):
      return '-'
    return f'{value:.4g}' if abs(value) < 1e-2 or abs(value) >= 1e4 else f'{value:.4f}'
  return str(value)


# `info` counts that add up over a search's parts; its other facts (devices,
# segments per chunk, cv, cv_dropped) are settings the parts share.
COUNTED_INFO = ('buckets', 'compiles', 'chunks', 'seconds')


def concatenate(parts: list[Results]) -> Results:
  """One `Results` from several runs over disjoint trial ids (rounds, chunks)."""
  union = lambda field: tuple(dict.fromkeys(name for part in parts for name in field(part)))
  info = {}
  for part in parts:
    for key, value in part.info.items():
      info[key] = info.get(key, 0) + value if key in COUNTED_INFO else value
  curves = {name: np.concatenate([part.curves[name] for part in parts]) for name in parts[0].curves}
  return Results(
    rows=[row for part in parts for row in part.rows],
    curves=curves,
    hyperparameters=union(lambda part: part.hyperparameters),
    select=parts[0].select,
    searched=union(lambda part: part.searched),
    space=next((part.space for part in parts if part.space is not None), None),
    extra_columns=union(lambda part: part.extra_columns),
    info=info,
    candidates=[candidate for part in parts for candidate in part.candidates],
  )

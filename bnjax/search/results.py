"""The outcome of a search: one row per trial, learning curves, ranking."""

import csv
import dataclasses
import math
from typing import Any

import numpy as np

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
      name, `bucket`, `status` ('ok' or 'diverged'), `dev_accuracy`,
      `dev_accuracy_std` (over executions), `dev_loss`, `best_epoch`,
      `train_loss`, `diverged_step`, and `test_accuracy` (NaN except for
      the top configurations, the only ones shown the test split).
    curves: 'train_loss', 'dev_loss', 'dev_accuracy' -> `[trials, epochs]`
      (mean over executions).
    hyperparameters: the hyperparameter column names, searched ones first.
    searched: the names the search space named.
    scales: each searched name's sampling scale ('log', 'one_minus_log', ...).
    select: 'final' or 'best': the epoch whose dev metrics rank a trial.
    info: run facts (buckets, compiles, chunks, devices, seconds).
  """

  rows: list[dict]
  curves: dict[str, np.ndarray]
  hyperparameters: tuple[str, ...]
  select: str = 'final'
  searched: tuple[str, ...] = ()  # the names the space varied; the table shows these
  scales: dict = dataclasses.field(default_factory=dict)  # name -> Distribution.scale
  info: dict = dataclasses.field(default_factory=dict)
  # Params of the best trials, kept until `engine.test_top_k` has used them.
  candidates: list = dataclasses.field(default_factory=list, repr=False)

  def __len__(self) -> int:
    return len(self.rows)

  @property
  def columns(self) -> tuple[str, ...]:
    return ('trial_id', *self.hyperparameters, 'bucket', *METRIC_COLUMNS)

  def ranked(self) -> list[dict]:
    """All rows, best first."""
    return sorted(self.rows, key=rank_key)

  def best(self, k: int = 1) -> list[dict]:
    """The top `k` rows by dev metric (diverged trials last)."""
    return self.ranked()[:k]

  def column(self, name: str) -> np.ndarray:
    """One column over all trials, in trial order."""
    return np.asarray([row[name] for row in self.rows])

  def summary(self, k: int = 10, names: tuple[str, ...] | None = None) -> str:
    """A text table of the top `k` trials."""
    names = names or self.searched or self.hyperparameters
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

  def to_csv(self, path) -> None:
    """Writes one row per trial, in trial order, with `columns` as the header."""
    with open(path, 'w', newline='') as f:
      writer = csv.DictWriter(f, fieldnames=self.columns, extrasaction='ignore')
      writer.writeheader()
      for row in self.rows:
        writer.writerow({name: row.get(name, '') for name in self.columns})

  def to_dataframe(self):
    """A pandas DataFrame of the rows (needs pandas: pip install 'bnjax[pandas]')."""
    try:
      import pandas as pd
    except ImportError as error:
      raise ImportError("to_dataframe needs pandas: pip install 'bnjax[pandas]'") from error
    return pd.DataFrame(self.rows, columns=list(self.columns))


def _format(value: Any) -> str:
  if isinstance(value, bool | np.bool_):
    return 'true' if value else 'false'
  if isinstance(value, float | np.floating):
    if math.isnan(value):
      return '-'
    return f'{value:.4g}' if abs(value) < 1e-2 or abs(value) >= 1e4 else f'{value:.4f}'
  return str(value)


def concatenate(parts: list[Results]) -> Results:
  """One `Results` from several runs over disjoint trial ids (rounds, chunks)."""
  names = tuple(dict.fromkeys(name for part in parts for name in part.hyperparameters))
  info = {}
  for part in parts:
    for key, value in part.info.items():
      info[key] = info.get(key, 0) + value if key != 'devices' else value
  curves = {name: np.concatenate([part.curves[name] for part in parts]) for name in parts[0].curves}
  searched = tuple(dict.fromkeys(name for part in parts for name in part.searched))
  scales = {name: scale for part in parts for name, scale in part.scales.items()}
  return Results(
    [row for part in parts for row in part.rows],
    curves,
    names,
    parts[0].select,
    searched,
    scales,
    info,
    [entry for part in parts for entry in part.candidates],
  )

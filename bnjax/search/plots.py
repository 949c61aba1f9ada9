"""Figures of a search: accuracy per hyperparameter, learning curves, parallel coordinates.

Every figure is a `matplotlib.figure.Figure` built without pyplot, so nothing
touches global figure state or needs a display; `plot_*` save it as a PNG
(Agg renders it), atomically, and return the path. The `*_figure` builders
return the `Figure` for notebooks and tests. Each hyperparameter sits on its
sampling scale, its distribution's (`bnjax.search.scales`).
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import TYPE_CHECKING

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from bnjax.files import atomic_open
from bnjax.registry import to_python
from bnjax.search import scales

if TYPE_CHECKING:  # results.py imports this module to save the figures
  from bnjax.search.results import Results

DPI = 110
# What `plot_all` writes.
FIGURES = ('hyperparameters.png', 'learning_curves.png', 'parallel_coordinates.png')
STYLE = {
  'font.size': 9,
  'axes.titlesize': 10,
  'axes.labelsize': 9,
  'legend.fontsize': 8,
  'xtick.labelsize': 8,
  'ytick.labelsize': 8,
  'figure.titlesize': 12,
}


def hyperparameters_figure(results: Results) -> Figure:
  """One panel per varying searched name: dev accuracy against its value."""
  names = scales.varying_names(results)
  accuracy, failed = _accuracy(results)
  columns = 2 if len(names) == 4 else min(3, max(1, len(names)))
  rows = max(1, math.ceil(len(names) / columns))
  fig = Figure(figsize=(max(6.5, 3.6 * columns + 0.4), 2.9 * rows + 0.9), layout='constrained')
  diverged = int(np.sum(failed))
  # Trials that successive halving stopped: drawn at their last epoch's accuracy, hollow.
  pruned = ~failed & (results.column('status') == 'pruned') if results.rows else failed
  stopped = f', {int(pruned.sum())} pruned' if pruned.any() else ''
  fig.suptitle(
    f'Dev accuracy per hyperparameter ({len(results)} trials, {diverged} diverged{stopped})'
  )
  if not names:
    ax = fig.add_subplot()
    ax.text(
      0.5,
      0.5,
      'No searched hyperparameter varies\n(all fixed or all equal).',
      ha='center',
      va='center',
      transform=ax.transAxes,
    )
    ax.set_axis_off()
    return fig
  finite = accuracy[~failed]
  floor = float(np.min(finite)) if finite.size else 0.0
  span = float(np.ptp(finite)) if finite.size else 1.0
  floor -= 0.06 * (span or 1.0)  # diverged trials sit just below every finished one
  best = _best_index(results)
  for panel, name in enumerate(names):
    ax = fig.add_subplot(rows, columns, panel + 1)
    ax.set_label(name)
    x = _panel_x(ax, results, name)
    full = ~failed & ~pruned
    ax.scatter(x[full], accuracy[full], s=18, alpha=0.7, color='tab:blue')
    if pruned.any():
      ax.scatter(
        x[pruned], accuracy[pruned], s=18, alpha=0.6, facecolor='none', edgecolor='tab:gray'
      )
    if failed.any():
      ax.scatter(x[failed], np.full(int(failed.sum()), floor), marker='x', s=28, color='red')
    if best is not None:
      ax.scatter(
        x[best],
        accuracy[best],
        marker='*',
        s=180,
        color='gold',
        edgecolor='black',
        linewidth=0.8,
        zorder=3,
      )
    ax.set_ylabel('dev accuracy')
    ax.grid(True, alpha=0.3)
  handles = [
    Line2D([], [], ls='', marker='o', color='tab:blue', label='finished trial'),
    Line2D([], [], ls='', marker='x', color='red', label='diverged (drawn at bottom)'),
  ]
  if pruned.any():
    handles.insert(
      1,
      Line2D(
        [],
        [],
        ls='',
        marker='o',
        markerfacecolor='none',
        color='tab:gray',
        label='pruned (at its last epoch)',
      ),
    )
  if best is not None:
    trial = results.rows[best]['trial_id']
    handles.append(
      Line2D(
        [],
        [],
        ls='',
        marker='*',
        markersize=12,
        color='gold',
        markeredgecolor='black',
        label=f'best (trial {trial})',
      )
    )
  fig.legend(handles=handles, loc='outside lower center', ncol=len(handles))
  return fig


def learning_curves_figure(results: Results, k: int = 5) -> Figure:
  """Dev accuracy and train loss per epoch of the `k` best finished trials."""
  fig = Figure(figsize=(10, 4.6), layout='constrained')
  ax_accuracy, ax_loss = fig.subplots(1, 2)
  position = {row['trial_id']: i for i, row in enumerate(results.rows)}
  top = [row for row in results.best(k) if row['status'] == 'ok']
  fig.suptitle(f'Learning curves of the top {len(top)} trials (dots: best dev epoch)')
  names = scales.varying_names(results)[:3]
  losses = []
  for rank, row in enumerate(top):
    i = position[row['trial_id']]
    accuracy = results.curves['dev_accuracy'][i]
    loss = results.curves['train_loss'][i]
    epochs = np.arange(1, len(accuracy) + 1)
    settings = ', '.join(
      f'{name}={scales.label(row[name], scales.scale_of(results, name))}' for name in names
    )
    label = f'#{rank + 1} trial {row["trial_id"]}' + (f': {settings}' if settings else '')
    (line,) = ax_accuracy.plot(epochs, accuracy, lw=2.2 if rank == 0 else 1.3, label=label)
    ax_loss.plot(epochs, loss, lw=2.2 if rank == 0 else 1.3, color=line.get_color())
    if 0 <= row.get('best_epoch', -1) < len(accuracy):
      ax_accuracy.plot(
        epochs[row['best_epoch']], accuracy[row['best_epoch']], 'o', color=line.get_color()
      )
    losses.append(loss)
  ax_accuracy.set(title='Dev accuracy', xlabel='epoch', ylabel='dev accuracy')
  ax_loss.set(title='Train loss', xlabel='epoch', ylabel='train loss')
  finite = np.concatenate(losses)[np.isfinite(np.concatenate(losses))] if losses else []
  if len(finite) and finite.min() > 0 and finite.max() > 10 * finite.min():
    ax_loss.set_yscale('log')
  for ax in (ax_accuracy, ax_loss):
    ax.grid(True, alpha=0.3)
  if top:
    fig.legend(loc='outside lower center', ncol=1 if names else min(len(top), 5))
  else:
    ax_accuracy.text(0.5, 0.5, 'no finished trial', ha='center', transform=ax_accuracy.transAxes)
  return fig


def parallel_coordinates_figure(results: Results, k: int = 20) -> Figure:
  """The `k` best finished trials as lines across the searched axes and dev accuracy.

  Each hyperparameter axis spans that name's range over all trials (on its
  sampling scale), so it shows where the best ones sit in the searched range;
  the accuracy axis spans the trials drawn.
  """
  names = scales.varying_names(results)
  top = [row for row in results.best(k) if row['status'] == 'ok'][::-1]  # best drawn last
  fig = Figure(figsize=(max(6.0, 1.6 * (len(names) + 1) + 2.0), 4.8), layout='constrained')
  fig.suptitle(
    f'Top {len(top)} trials across the searched hyperparameters'
    + ('' if names else ' (none varies)')
  )
  ax = fig.add_subplot()
  if not top:
    ax.text(0.5, 0.5, 'no finished trial', ha='center', transform=ax.transAxes)
    ax.set_axis_off()
    return fig
  accuracy = np.asarray([row['dev_accuracy'] for row in top], dtype=np.float64)
  positions = [
    scales.normalize(results, n, [row[n] for row in top], results.column(n)) for n in names
  ]
  positions.append(scales.normalize(results, 'dev_accuracy', accuracy))
  positions_TxA = np.stack(positions, axis=1)
  color_norm = mpl.colors.Normalize(accuracy.min(), accuracy.max() + 1e-12)
  colormap = mpl.colormaps['viridis']
  for i in range(len(top)):
    best = i == len(top) - 1
    ax.plot(
      np.arange(len(positions)),
      positions_TxA[i],
      color=colormap(color_norm(accuracy[i])),
      lw=2.6 if best else 1.2,
      alpha=1.0 if best else 0.75,
      marker='o',
      markersize=3,
    )
  for axis, name in enumerate((*names, 'dev_accuracy')):
    ax.axvline(axis, color='0.4', lw=0.8)
    if name == 'dev_accuracy':
      low, high = scales.label(accuracy.min(), 'linear'), scales.label(accuracy.max(), 'linear')
    else:
      low, high = scales.extremes(results, name)
    ax.text(axis, 1.04, high, ha='center', va='bottom', fontsize=8)
    ax.text(axis, -0.04, low, ha='center', va='top', fontsize=8)
    if name != 'dev_accuracy' and scales.scale_of(results, name) == 'categorical':
      _label_inner_categories(ax, axis, results.column(name))
  labels = [scales.axis_label(name, scales.scale_of(results, name), compact=True) for name in names]
  ax.set_xticks(np.arange(len(labels) + 1), [*labels, 'dev accuracy'])
  ax.tick_params(axis='x', length=0, pad=18)
  ax.set_yticks([])
  ax.set_ylim(-0.12, 1.12)
  ax.set_xlim(-0.3, len(labels) + 0.3)
  for side in ('top', 'right', 'left', 'bottom'):
    ax.spines[side].set_visible(False)
  mappable = mpl.cm.ScalarMappable(norm=color_norm, cmap=colormap)
  fig.colorbar(mappable, ax=ax, label='dev accuracy', fraction=0.04)
  return fig


def plot_hyperparameters(results: Results, path) -> pathlib.Path:
  """Saves `hyperparameters_figure` as a PNG at `path` and returns the path."""
  return _save(hyperparameters_figure, path, results)


def plot_learning_curves(results: Results, path, k: int = 5) -> pathlib.Path:
  """Saves `learning_curves_figure` of the top `k` as a PNG at `path`."""
  return _save(learning_curves_figure, path, results, k=k)


def plot_parallel_coordinates(results: Results, path, k: int = 20) -> pathlib.Path:
  """Saves `parallel_coordinates_figure` of the top `k` as a PNG at `path`."""
  return _save(parallel_coordinates_figure, path, results, k=k)


def schedule_figure(results: Results) -> Figure:
  """The PBT winner's hyperparameter schedule: each explored value against epochs, one panel each.

  Reads `results.info['schedule']` (`pbt.schedule`): the values its line
  trained with, generation by generation, with the member that trained them.
  """
  steps = results.info['schedule']
  names = [name for name in steps[0] if name not in ('epochs', 'trial_id')]
  fig = Figure(figsize=(max(5.0, 3.4 * len(names) + 0.4), 3.4), layout='constrained')
  winner = results.best(1)[0]['trial_id']
  fig.suptitle(f'PBT: the schedule of the winner (trial {winner}), generation by generation')
  edges = [step['epochs'][0] for step in steps] + [steps[-1]['epochs'][1]]
  for panel, name in enumerate(names or ['(nothing explored)']):
    ax = fig.add_subplot(1, max(1, len(names)), panel + 1)
    if not names:
      ax.set_axis_off()
      continue
    values = [step[name] for step in steps]
    ax.stairs(values, edges, lw=1.8, baseline=None)
    if scales.scale_of(results, name) == 'log':
      ax.set_yscale('log')
    for step in steps:
      middle = sum(step['epochs']) / 2
      ax.annotate(f'{step["trial_id"]}', (middle, step[name]), fontsize=7, ha='center', va='bottom')
    ax.set(title=name, xlabel='epoch (labels: the member that trained)')
    ax.grid(True, alpha=0.3)
  return fig


def plot_schedule(results: Results, path) -> pathlib.Path:
  """Writes `schedule_figure` as a PNG, atomically."""
  return _save(schedule_figure, path, results)


def plot_all(results: Results, output_dir) -> list[pathlib.Path]:
  """Writes hyperparameters.png, learning_curves.png and parallel_coordinates.png, atomically."""
  output_dir = pathlib.Path(output_dir)
  output_dir.mkdir(parents=True, exist_ok=True)
  plot = (plot_hyperparameters, plot_learning_curves, plot_parallel_coordinates)
  return [save(results, output_dir / name) for save, name in zip(plot, FIGURES, strict=True)]


def _save(build, path, results: Results, **options) -> pathlib.Path:
  path = pathlib.Path(os.fspath(path))
  with mpl.rc_context(STYLE):  # scoped: the caller's rcParams are untouched
    fig = build(results, **options)
    with atomic_open(path, 'wb') as f:
      fig.savefig(f, dpi=DPI, format='png')
  return path


def _panel_x(ax, results: Results, name: str) -> np.ndarray:
  """x of every trial in `name`'s panel, with the axis set to its sampling scale."""
  values = results.column(name)
  scale = scales.scale_of(results, name)
  ax.set_xlabel(scales.axis_label(name, scale))
  if scale == 'categorical':
    categories = scales.sorted_categories(values)
    index = {to_python(c): i for i, c in enumerate(categories)}
    jitter = np.random.default_rng(0).uniform(-0.15, 0.15, len(values))
    ax.set_xticks(np.arange(len(categories)), [scales.label(c, scale) for c in categories])
    ax.set_xlim(-0.5, len(categories) - 0.5)
    return np.asarray([index[to_python(v)] for v in values], dtype=np.float64) + jitter
  integers = values.dtype.kind in 'iu'
  values = values.astype(np.float64)
  if scale == 'log':
    ax.set_xscale('log')
    _readable_log_ticks(ax.xaxis, values, lambda t, _: scales.label(t, scale))
  elif scale == 'one_minus_log':
    ax.set_xscale('log')
    ax.invert_xaxis()  # 1 - beta shrinks to the right, so beta grows to the right
    _readable_log_ticks(ax.xaxis, 1 - values, lambda t, _: scales.label(1.0 - t, scale))
    return 1.0 - values
  if integers:  # units, layers: no tick at 2.5 layers
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  return values


def _readable_log_ticks(axis, values: np.ndarray, format_tick) -> None:
  """Labels at 1, 2 and 5 times each decade when the data span few decades, none on minor ticks.

  matplotlib labels minor log ticks inside a short range, and their long labels overlap.
  """
  positive = values[np.isfinite(values) & (values > 0)]
  if positive.size and np.log10(positive.max() / positive.min()) <= 3:
    axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
  axis.set_major_formatter(FuncFormatter(format_tick))
  axis.set_minor_formatter(NullFormatter())


def _label_inner_categories(ax, axis: int, values) -> None:
  """Names the categories between an axis' ends, beside it (the ends are labelled already)."""
  categories = scales.sorted_categories(values)
  if len(categories) > 8:  # too many to read; the ends say the order
    return
  for i, category in enumerate(categories[1:-1], 1):
    ax.text(
      axis + 0.04,
      i / (len(categories) - 1),
      scales.label(category, 'categorical'),
      ha='left',
      va='center',
      fontsize=8,
      bbox={'boxstyle': 'round,pad=0.15', 'facecolor': 'white', 'alpha': 0.7, 'lw': 0},
    )


def _accuracy(results: Results) -> tuple[np.ndarray, np.ndarray]:
  accuracy = results.column('dev_accuracy').astype(np.float64)
  status = results.column('status') if results.rows else np.zeros(0, str)
  return accuracy, ~np.isin(status, ('ok', 'pruned')) | ~np.isfinite(accuracy)


def _best_index(results: Results) -> int | None:
  best = results.best(1)
  if not best or best[0]['status'] != 'ok' or not math.isfinite(best[0]['dev_accuracy']):
    return None
  return next(i for i, row in enumerate(results.rows) if row is best[0])

"""A trial's row: its executions' metrics summarized into the `Results` columns.

`best_epoch` has one definition. A run's best epoch is the device's
(`bnjax.training.finish`: the first epoch of its highest dev accuracy, -1 if
it diverged before its first epoch ended). A trial's:

* one execution: that run's, unchanged;
* several, all healthy: the first epoch of the highest *mean* dev accuracy,
  the peak of the curve `Results.curves` holds (on one run it is that run's
  device value: same curve, same first maximum);
* any execution diverged: the trial is 'diverged', and its best epoch is the
  first-diverged run's, never a healthy run's.
"""

import math
from collections.abc import Sequence

import numpy as np

from bnjax.search.chunks import Run

CURVES = ('train_loss', 'dev_loss', 'dev_accuracy')


def best_epoch(runs: Sequence[Run]) -> int:
  """The trial's best epoch (see the module docstring)."""
  diverged = _diverged(runs)
  if diverged:
    return diverged[0].best_epoch
  if len(runs) == 1:
    return runs[0].best_epoch
  return int(np.argmax(mean_curves(runs)['dev_accuracy']))


def mean_curves(runs: Sequence[Run]) -> dict[str, np.ndarray]:
  """Each curve averaged over the executions: name -> `[epochs]`."""
  return {name: np.mean([run.metrics[name] for run in runs], axis=0) for name in CURVES}


def summarize(runs: Sequence[Run], select: str) -> dict:
  """The metric columns of one trial (`results.METRIC_COLUMNS`).

  Dev accuracy, dev loss and train loss are each execution's at its selected
  epoch ('final': the last; 'best': its own best, whose params the device
  kept), averaged over executions; NaN for a diverged trial.
  """
  nan = math.nan
  diverged = _diverged(runs)
  if diverged:
    return {
      'status': 'diverged',
      'dev_accuracy': nan,
      'dev_accuracy_std': nan,
      'dev_loss': nan,
      'best_epoch': best_epoch(runs),
      'train_loss': nan,
      'diverged_step': diverged[0].diverged_step,
      'test_accuracy': nan,
    }
  epochs = [run.best_epoch if select == 'best' else -1 for run in runs]
  picked = np.asarray(
    [
      [float(run.metrics[name][epoch]) for name in ('dev_accuracy', 'dev_loss', 'train_loss')]
      for run, epoch in zip(runs, epochs, strict=True)
    ]
  )
  return {
    'status': 'ok',
    'dev_accuracy': float(np.mean(picked[:, 0])),
    'dev_accuracy_std': float(np.std(picked[:, 0])),
    'dev_loss': float(np.mean(picked[:, 1])),
    'best_epoch': best_epoch(runs),
    'train_loss': float(np.mean(picked[:, 2])),
    'diverged_step': -1,
    'test_accuracy': nan,
  }


def _diverged(runs: Sequence[Run]) -> list[Run]:
  """The diverged runs, the first to diverge first."""
  return sorted((run for run in runs if run.diverged_step >= 0), key=lambda run: run.diverged_step)

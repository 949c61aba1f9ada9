"""What the claims share: the data, seeds as trials, trained params kept, intervals, files.

A claim's runs are rows of one `run_trials` table: each configuration is
repeated once per seed, and a row's trial id is its key, so seed `s` of a
configuration is simply another trial. `train` keeps every run's params
(`top_k` = the whole table, `test=False`), so a claim can evaluate them any
way it needs (train accuracy, other BN statistics, the test split of a
search's winner only).
"""

import functools
import math
import os

import jax
import numpy as np

from bnjax import data, files
from bnjax.search import run_trials
from bnjax.search.top_k import test_program
from bnjax.training import evaluate

_evaluate = jax.jit(evaluate, static_argnums=0)  # one compile per program config
_test_program = functools.cache(test_program)


def load(name: str = 'mnist1d') -> data.Splits:
  return data.mnist1d() if name == 'mnist1d' else data.digits()


def repeat(configs: list[dict], seeds: int) -> tuple[dict, np.ndarray, np.ndarray]:
  """The table of `configs` x `seeds` runs, and each row's config index and seed index."""
  rows = [(c, s) for c in range(len(configs)) for s in range(seeds)]
  names = list(dict.fromkeys(name for config in configs for name in config))
  table = {name: np.asarray([configs[c][name] for c, _ in rows]) for name in names}
  return table, np.asarray([c for c, _ in rows]), np.asarray([s for _, s in rows])


def train(table: dict, splits: data.Splits, *, epochs: int, seed: int = 0, **options):
  """Every row of `table` trained (one run each); returns `(results, candidate by trial id)`."""
  n = len(next(iter(table.values())))
  results = run_trials(
    table, splits, epochs=epochs, seed=seed, top_k=n, test=False, width_ratio=None, **options
  )
  kept = {c.row['trial_id']: c for c in results.candidates}
  return results, kept


def accuracy(candidate, x: np.ndarray, y: np.ndarray, model_state=None) -> float:
  """Eval-mode accuracy of a kept run on `x`, `y` (its running BN statistics unless given)."""
  state = candidate.model_state if model_state is None else model_state
  one = lambda leaf: leaf[0]
  _, acc = _evaluate(
    candidate.config,
    candidate.hp,
    jax.tree.map(one, candidate.params),
    jax.tree.map(one, state),
    x,
    y,
  )
  return float(acc)


def train_accuracies(results, kept: dict, splits: data.Splits) -> np.ndarray:
  """Eval-mode train accuracy of every row of `results` (NaN where the run did not finish ok)."""
  out = np.full(len(results.rows), np.nan)
  for i, row in enumerate(results.rows):
    if row['status'] == 'ok':
      out[i] = accuracy(kept[row['trial_id']], splits.x_train, splits.y_train)
  return out


def test_accuracy(candidate, splits: data.Splits) -> float:
  """The test split, for a run a claim selected (one call per selected run)."""
  program = _test_program(candidate.config)
  return float(
    np.mean(
      program(candidate.hp, candidate.params, candidate.model_state, splits.x_test, splits.y_test)
    )
  )


def interval(values) -> dict:
  """Mean, std and a 95% t-interval of the mean over the finite `values` (NaN: diverged)."""
  values = np.asarray(values, np.float64)
  finite = values[np.isfinite(values)]
  n = len(finite)
  if n == 0:
    return {'mean': None, 'std': None, 'ci95': [None, None], 'n': 0, 'diverged': len(values)}
  mean = float(np.mean(finite))
  std = float(np.std(finite, ddof=1)) if n > 1 else 0.0
  half = float(t_975(n - 1) * std / math.sqrt(n)) if n > 1 else 0.0
  return {
    'mean': mean,
    'std': std,
    'ci95': [mean - half, mean + half],
    'n': n,
    'diverged': int(len(values) - n),
  }


# Student's t 97.5% quantile for 1..10 degrees of freedom (the claims use 2 to 6 seeds).
_T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t_975(df: int) -> float:
  """The two-sided 95% t factor; past 10 degrees of freedom a Cornish-Fisher term (within 0.03)."""
  if df <= len(_T_975):
    return _T_975[df - 1]
  z = 1.959964
  return z + (z**3 + z) / (4 * df)


def band(summaries, scale: float = 100.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean, lower and upper 95% bound of `interval` summaries, scaled (NaN: all diverged)."""
  rows = [(np.nan,) * 3 if s['mean'] is None else (s['mean'], *s['ci95']) for s in summaries]
  mean, low, high = (scale * np.asarray(column, np.float64) for column in zip(*rows, strict=True))
  return mean, low, high


def show(summary: dict, scale: float = 100.0, unit: str = '%') -> str:
  """`74.1% [72.9, 75.3] (n=5)` from `interval`."""
  if summary['mean'] is None:
    return 'all diverged'
  lo, hi = summary['ci95']
  return (
    f'{scale * summary["mean"]:.1f}{unit} [{scale * lo:.1f}, {scale * hi:.1f}] (n={summary["n"]})'
  )


def write(output_dir: str, claim: str, numbers: dict, figure) -> tuple[str, str]:
  """`<output_dir>/<claim>.json` (strict JSON) and `<claim>.png`; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  json_path = files.write_json(os.path.join(output_dir, f'{claim}.json'), numbers)
  png_path = os.path.join(output_dir, f'{claim}.png')
  figure.tight_layout()
  with files.atomic_open(png_path, 'wb') as f:
    figure.savefig(f, format='png', dpi=110)
  return json_path, png_path

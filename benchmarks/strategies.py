r"""Random, Hyperband, PBT and Bayesian search (TPE) at an equal budget of trial-epochs.

  python benchmarks/strategies.py                # 20 epochs a trial, 3 Hyperband runs' budget
  python benchmarks/strategies.py --epochs=9 --hyperband_runs=1 --seeds=2 --output_dir=runs/quick

The budget is what `--hyperband_runs` runs of Hyperband (min_epochs 1,
max_epochs `--epochs`, eta 3; Li et al. repeat it until the budget is spent)
train, in trial-epochs; random and Bayesian search get as many trials of
`--epochs` epochs as that budget holds, rounded, and PBT a population of the
same size trained `--epochs` epochs (an exploit every `--ready`). All search
`search.DEFAULT_SPACE` (the launcher's) on the same data, and each tests its
dev-selected winner once. For each strategy the script reports the median and
spread (min..max over search seeds) of the winner's test and dev accuracy,
the trial-epochs spent and the wall time, and draws the best dev accuracy so
far against trial-epochs spent (median over seeds, min..max shaded) into
<output_dir>/strategies.png; every number goes to strategies.json.

Best so far, per strategy: random and bayes in trial-number order (the order
they made their trials), each trial adding `--epochs`; Hyperband rung by rung
(a rung's trials add the epochs they trained, and count with their dev
accuracy at that rung); PBT generation by generation (each member's dev
accuracy at the exploit, the last generation's at the end).

Each search keeps its study under <output_dir>/<strategy>_seed<S>[_run<R>],
so a rerun resumes what is there instead of starting again: remove the
directory for fresh timings.
"""

import logging
import os
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
from absl import app, flags

import bnjax.data
from benchmarks import timing
from bnjax import files, search
from bnjax.search.successive_halving import hyperband_brackets

EPOCHS = flags.DEFINE_integer('epochs', 20, 'Epochs of a full trial (Hyperband: max_epochs).')
HYPERBAND_RUNS = flags.DEFINE_integer(
  'hyperband_runs', 3, 'Hyperband runs per search; their trial-epochs are every strategy budget.'
)
READY = flags.DEFINE_integer('ready', 4, 'pbt: epochs between exploits (divides --epochs).')
SEEDS = flags.DEFINE_integer('seeds', 3, 'Search seeds 0..seeds-1 per strategy.')
STRATEGY_LIST = flags.DEFINE_list(
  'strategies', ['random', 'hyperband', 'pbt', 'bayes'], 'Which strategies to compare.'
)
DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')
SPACE = flags.DEFINE_string('space', search.DEFAULT_SPACE, 'The space all search.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs/strategies', 'Studies, JSON and the figure.')

logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def hyperband_budget(epochs: int) -> int:
  """Trial-epochs one Hyperband run from 1 to `epochs` epochs (eta 3) trains."""
  total = 0
  for bracket in hyperband_brackets(1, epochs, 3):
    done = 0
    for rung in bracket.rungs:
      total += rung.trials * (rung.epochs - done)
      done = rung.epochs
  return total


def best_so_far(strategy: str, results, epochs: int) -> tuple[list[int], list[float]]:
  """(trial-epochs spent, best dev accuracy so far) after each unit of work (module docstring)."""
  dev = lambda values: np.nan_to_num(np.asarray(values, np.float64), nan=0.0)
  spent, best = [], []

  def add(cost, accuracies):
    previous = best[-1] if best else 0.0
    spent.append((spent[-1] if spent else 0) + int(cost))
    best.append(max(previous, float(np.max(dev(accuracies), initial=0.0))))

  if strategy in ('random', 'bayes'):
    for row in sorted(results.rows, key=lambda row: row['trial_id']):
      add(epochs, [row['dev_accuracy']])
  elif strategy == 'hyperband':
    brackets = {b.index: b for b in hyperband_brackets(1, epochs, 3)}
    curves = results.curves['dev_accuracy']
    for index in sorted({row['bracket'] for row in results.rows}, reverse=True):
      rows = [i for i, row in enumerate(results.rows) if row['bracket'] == index]
      done = 0
      for rung in brackets[index].rungs:
        there = [i for i in rows if results.rows[i]['epochs'] >= rung.epochs]
        add(len(there) * (rung.epochs - done), [curves[i, rung.epochs - 1] for i in there])
        done = rung.epochs
  else:  # pbt
    ready = results.info['pbt']['ready']
    for scores in results.info['scores']:
      add(len(scores) * ready, scores)
    add(len(results.rows) * ready, results.column('dev_accuracy'))
  return spent, best


def one_search(strategy: str, seed: int, splits, trials: int) -> dict:
  """One search (Hyperband: `--hyperband_runs` of them); its winner and its best-so-far curve."""
  epochs = EPOCHS.value
  base = os.path.join(OUTPUT_DIR.value, f'{strategy}_seed{seed}')
  start = time.perf_counter()
  parts = []
  if strategy == 'hyperband':
    for run in range(HYPERBAND_RUNS.value):
      options = dict(max_epochs=epochs, min_epochs=1, eta=3, top_k=1)
      output_dir = f'{base}_run{run}'
      parts.append(
        search.run(
          strategy, SPACE.value, splits, seed=seed * 1000 + run, output_dir=output_dir, **options
        )
      )
  elif strategy == 'pbt':
    options = dict(population_size=trials, epochs=epochs, ready=READY.value, top_k=1)
    parts.append(search.run(strategy, SPACE.value, splits, seed=seed, output_dir=base, **options))
  else:
    options = dict(num_trials=trials, epochs=epochs, top_k=1)
    parts.append(search.run(strategy, SPACE.value, splits, seed=seed, output_dir=base, **options))
  seconds = time.perf_counter() - start
  spent, best = [], []
  for results in parts:
    x, y = best_so_far(strategy, results, epochs)
    offset, floor = (spent[-1] if spent else 0), (best[-1] if best else 0.0)
    spent += [offset + v for v in x]
    best += [max(floor, v) for v in y]
  # The winner: the best of the runs by dev accuracy (each tested its own top 1).
  winners = [results.best(1)[0] for results in parts]
  winner = max(winners, key=lambda row: np.nan_to_num(row['dev_accuracy'], nan=-1.0))
  return {
    'strategy': strategy,
    'seed': seed,
    'seconds': seconds,
    'trial_epochs': spent[-1],
    'winner_trial': winner['trial_id'],
    'winner_dev_accuracy': winner['dev_accuracy'],
    'winner_test_accuracy': winner['test_accuracy'],
    'spent': spent,
    'best_so_far': best,
    'checkpoint_seconds': sum(r.info.get('checkpoint_seconds', 0.0) for r in parts),
  }


def summary(runs: list[dict], key: str, digits: int = 4) -> str:
  values = np.asarray([run[key] for run in runs], np.float64)
  return f'{np.median(values):.{digits}f} ({values.min():.{digits}f}..{values.max():.{digits}f})'


def plot(runs: list[dict], budget: int, path: str) -> None:
  import matplotlib

  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  grid = np.linspace(0, max(run['spent'][-1] for run in runs), 200)
  for strategy in STRATEGY_LIST.value:
    mine = [run for run in runs if run['strategy'] == strategy]
    if not mine:
      continue
    # Best so far as a step function of trial-epochs (0 before the first result).
    curves = np.asarray(
      [
        np.concatenate([[0.0], run['best_so_far']])[
          np.searchsorted(run['spent'], grid, side='right')
        ]
        for run in mine
      ]
    )
    ax.plot(grid, np.median(curves, axis=0), label=f'{strategy} (median)')
    ax.fill_between(grid, curves.min(axis=0), curves.max(axis=0), alpha=0.15)
  finished = [v for run in runs for v in run['best_so_far'] if v > 0]
  ax.set_ylim(min(finished) - 0.02 if finished else 0, None)
  ax.set_xlabel('trial-epochs spent')
  ax.set_ylabel('best dev accuracy so far')
  ax.set_title(
    f'{DATASET.value}: budget {budget} trial-epochs, {EPOCHS.value} epochs a full trial, '
    f'{SEEDS.value} seeds',
    fontsize=9,
  )
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.tight_layout()
  with files.atomic_open(path, 'wb') as f:
    fig.savefig(f, format='png', dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  splits = bnjax.data.load(DATASET.value)
  budget = HYPERBAND_RUNS.value * hyperband_budget(EPOCHS.value)
  trials = max(4, round(budget / EPOCHS.value))
  print(
    f'{DATASET.value}: budget {budget} trial-epochs ({HYPERBAND_RUNS.value} Hyperband runs from 1 '
    f'to {EPOCHS.value} epochs; {trials} trials or members of {EPOCHS.value} epochs), seeds '
    f'0..{SEEDS.value - 1}, on {len(jax.devices())} {jax.default_backend()} device(s), load '
    f'{timing.load_average():.1f}'
  )
  runs = []
  for seed in range(SEEDS.value):
    for strategy in STRATEGY_LIST.value:
      run = one_search(strategy, seed, splits, trials)
      runs.append(run)
      print(
        f'  {strategy:>9} seed {seed}: winner trial {run["winner_trial"]:>3}  '
        f'dev {run["winner_dev_accuracy"]:.4f}  test {run["winner_test_accuracy"]:.4f}  '
        f'{run["trial_epochs"]} trial-epochs  {run["seconds"]:.0f} s  '
        f'(load {timing.load_average():.1f})',
        flush=True,
      )
  os.makedirs(OUTPUT_DIR.value, exist_ok=True)
  files.write_json(os.path.join(OUTPUT_DIR.value, 'strategies.json'), runs)
  print(
    '| strategy | winner test accuracy, median (min..max) | winner dev accuracy | '
    'trial-epochs | seconds |'
  )
  print('| --- | --- | --- | --- | --- |')
  for strategy in STRATEGY_LIST.value:
    mine = [run for run in runs if run['strategy'] == strategy]
    print(
      f'| {strategy} | {summary(mine, "winner_test_accuracy")} | '
      f'{summary(mine, "winner_dev_accuracy")} | {summary(mine, "trial_epochs", 0)} | '
      f'{summary(mine, "seconds", 0)} |'
    )
  plot(runs, budget, os.path.join(OUTPUT_DIR.value, 'strategies.png'))
  print(f'wrote {OUTPUT_DIR.value}/strategies.png, strategies.json')


if __name__ == '__main__':
  app.run(main)

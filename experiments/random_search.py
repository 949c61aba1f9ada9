r"""Hyperparameter search: hundreds of BN-MLPs trained at once, one command.

  python experiments/random_search.py                       # MNIST-1D, defaults
  python experiments/random_search.py --dataset=digits --num_trials=64
  python experiments/random_search.py \
      --space='learning_rate=log:1e-4:1,beta1=1mlog:0.9:0.999,hidden_units=int:50:100'
  python experiments/random_search.py --strategy=coarse_to_fine --rounds=3

Selection uses the dev split only; the top configurations are evaluated on the
test split once, at the end. Writes <output_dir>/results.csv (one row per
trial), best.json and the plots.
"""

import math
import os
import sys
import time

if __package__ in (None, ''):  # Run as a script: make `experiments` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
from absl import app, flags

from bnjax import search
from bnjax.search import plots
from bnjax.space import SpaceError
from experiments import common

DEFAULT_SPACE = search.DEFAULT_SPACE

SPACE = flags.DEFINE_string(
  'space',
  DEFAULT_SPACE,
  'The search space: comma-separated name=KIND:ARGS with kinds uniform:LOW:HIGH, '
  'log:LOW:HIGH (10**r), 1mlog:LOW:HIGH (beta = 1 - 10**r), int:LOW:HIGH, intlog:LOW:HIGH, '
  'choice:A|B|C, fixed:V; or a path to a .json space. Names not given take their defaults '
  '(bnjax.space.DEFAULTS).',
)
STRATEGY = flags.DEFINE_enum(
  'strategy', 'random', ['random', 'grid', 'coarse_to_fine'], 'How trials are chosen.'
)
NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Trials (per round for coarse_to_fine).')
EPOCHS = flags.DEFINE_integer('epochs', 40, 'Epochs per trial.')
EXECUTIONS = flags.DEFINE_integer(
  'executions_per_trial', 1, 'Seeds per configuration; rows report mean and spread.'
)
SELECT = flags.DEFINE_enum(
  'select',
  'final',
  ['final', 'best'],
  "Rank by the final epoch's dev accuracy or the best epoch's.",
)
TOP_K = flags.DEFINE_integer('top_k', 10, 'Configurations shown and evaluated on test.')
CHUNK_SIZE = flags.DEFINE_integer('chunk_size', 0, 'Trials per program; 0: from memory.')
POINTS = flags.DEFINE_integer('points_per_axis', 3, 'grid: values per searched name.')
ROUNDS = flags.DEFINE_integer('rounds', 2, 'coarse_to_fine: rounds.')
KEEP = flags.DEFINE_float('keep', 0.1, 'coarse_to_fine: share of trials the next round centres on.')
SHRINK = flags.DEFINE_float('shrink', 0.5, 'coarse_to_fine: range shrink per round.')
OUTPUT_DIR = flags.DEFINE_string(
  'output_dir', 'runs/random_search', 'Where results.csv, best.json and plots go.'
)


class ProgressBar:
  """`[#####-----] 12/48 trials  0.9 trials/s  ETA 40 s` on one line of stderr."""

  def __init__(self, width: int = 30):
    self.width, self.start = width, time.perf_counter()

  def __call__(self, done: int, total: int) -> None:
    elapsed = time.perf_counter() - self.start
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else math.inf
    filled = int(self.width * done / total)
    sys.stderr.write(
      f'\r[{"#" * filled}{"-" * (self.width - filled)}] {done}/{total} trials  '
      f'{rate:.2f} trials/s  ETA {eta:.0f} s   '
    )
    if done == total:
      sys.stderr.write('\n')
    sys.stderr.flush()


def default_chunk_size() -> int | None:
  """On a CPU, about eight chunks so the progress bar moves; elsewhere, memory decides.

  A CPU is as busy with 8 trials at once as with 800, so small chunks cost
  nothing there; an accelerator needs big ones to be busy.
  """
  if jax.default_backend() != 'cpu':
    return None
  return max(len(jax.devices()), math.ceil(NUM_TRIALS.value / 8))


def run(splits):
  options = dict(
    seed=common.SEED.value,
    epochs=EPOCHS.value,
    executions_per_trial=EXECUTIONS.value,
    select=SELECT.value,
    top_k=TOP_K.value,
    chunk_size=CHUNK_SIZE.value or default_chunk_size(),
    progress=ProgressBar(),
  )
  space = search.as_space(SPACE.value)
  if STRATEGY.value == 'grid':
    return search.grid_search(space, splits, POINTS.value, **options)
  if STRATEGY.value == 'coarse_to_fine':
    return search.coarse_to_fine(
      space,
      splits,
      NUM_TRIALS.value,
      rounds=ROUNDS.value,
      keep=KEEP.value,
      shrink=SHRINK.value,
      **options,
    )
  return search.random_search(space, splits, NUM_TRIALS.value, **options)


def main(argv):
  del argv
  splits = common.load_data()
  print(common.describe(splits))
  print(
    f'{STRATEGY.value} search on {len(jax.devices())} {jax.default_backend()} device(s); '
    f'space: {SPACE.value}'
  )
  try:
    results = run(splits)
  except (SpaceError, ValueError) as error:
    raise SystemExit(f'error: {error}') from None
  info = results.info
  print(
    f'{len(results)} trials in {info["seconds"]:.1f} s ({info["buckets"]} bucket(s), '
    f'{info["compiles"]} compile(s), {info["chunks"]} chunk(s))'
  )
  print(results.summary(TOP_K.value))
  winner = results.best(1)[0]
  print(
    f'winner: trial {winner["trial_id"]}  dev_accuracy {winner["dev_accuracy"]:.4f}  '
    f'test_accuracy {winner["test_accuracy"]:.4f}  (dev selects, test measured once)'
  )
  os.makedirs(OUTPUT_DIR.value, exist_ok=True)
  results.to_csv(os.path.join(OUTPUT_DIR.value, 'results.csv'))
  common.write_json(
    OUTPUT_DIR.value,
    'best.json',
    {
      'hyperparameters': {name: winner[name] for name in results.hyperparameters},
      'trial_id': winner['trial_id'],
      'dev_accuracy': winner['dev_accuracy'],
      'test_accuracy': winner['test_accuracy'],
      'select': results.select,
      'dataset': splits.name,
      'strategy': STRATEGY.value,
      'space': SPACE.value,
    },
  )
  paths = plots.plot_all(results, OUTPUT_DIR.value)
  print(
    f'wrote {OUTPUT_DIR.value}/results.csv, best.json, '
    f'{", ".join(os.path.basename(p) for p in paths)}'
  )


if __name__ == '__main__':
  app.run(main)

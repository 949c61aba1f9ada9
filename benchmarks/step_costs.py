r"""Where a training step's time goes, and which chunk size a CPU runs best.

  python benchmarks/step_costs.py                      # both parts, defaults
  python benchmarks/step_costs.py --parts_only --width=448 --num_trials=4

The BN-MLP 40 -> 3 x width -> 10 on MNIST-1D, batch 128, Adam, dropout
with keep_prob 0.8 (the default search's kind of trial), timed as
`benchmarks.fixed_shape.vectorized` times it: ms per trial-epoch, median
and range of `--repeats` calls, the 1-minute load beside it.

* **Chunk sizes**: the same trial vmapped N at a time, for each width:
  where a run's parameters, gradients and Adam moments fall out of cache,
  a bigger chunk gets slower per trial (`bnjax.search.chunks.cpu_chunk`).
* **Parts**: the step with one part removed or changed at a time (dropout
  off, BN off, SGD for Adam, bfloat16 matmuls); what a part costs is the
  difference from the full step. The variants alternate for `--rounds`
  rounds, so a change of load hits them alike.
"""

import os
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logging

from absl import app, flags

import bnjax.data
from benchmarks import fixed_shape

WIDTHS = flags.DEFINE_list('widths', ['256', '448'], 'Chunk sizes: hidden widths (3 layers).')
CHUNKS = flags.DEFINE_list('chunks', ['2', '4', '8', '16'], 'Chunk sizes: N runs per program.')
WIDTH = flags.DEFINE_integer('width', 448, 'Parts: hidden width (3 layers).')
NUM_TRIALS = flags.DEFINE_integer('num_trials', 4, 'Parts: N runs per program.')
REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed calls per figure.')
ROUNDS = flags.DEFINE_integer('rounds', 2, 'Parts: rounds of the alternating variants.')
PARTS_ONLY = flags.DEFINE_bool('parts_only', False, 'Skip the chunk sizes.')

DROPOUT = ({'dropout': True}, {'keep_prob': 0.8})
PARTS = {
  'full step (Adam, BN, dropout)': DROPOUT,
  'without dropout': ({}, None),
  'without BN': ({'dropout': True, 'batch_norm': False}, {'keep_prob': 0.8}),
  'SGD instead of Adam': ({'dropout': True}, {'keep_prob': 0.8, 'optimizer': 'sgd'}),
  'bfloat16 matmuls': ({'dropout': True, 'matmul_dtype': 'bfloat16'}, {'keep_prob': 0.8}),
}


def _time(splits, width: int, num_trials: int, options: dict, hp_values: dict | None) -> str:
  epochs = max(2, 16 // num_trials)  # at least 16 trial-epochs per call
  measured = fixed_shape.vectorized(
    splits, num_trials, epochs, REPEATS.value, hp_values, hidden_sizes=(width,) * 3, **options
  )
  per = lambda seconds: 1e3 * seconds / measured['trial_epochs']
  return (
    f'{per(measured["median"]):6.1f} ms per trial-epoch '
    f'({per(measured["min"]):.1f}-{per(measured["max"]):.1f}), load {measured["load"]:.1f}'
  )


def main(argv):
  del argv
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  splits = bnjax.data.load('mnist1d')
  if not PARTS_ONLY.value:
    print('chunk sizes (3 x width, Adam, dropout 0.8):')
    for width in map(int, WIDTHS.value):
      for n in map(int, CHUNKS.value):
        print(f'  width {width:4d}, N = {n:3d}: {_time(splits, width, n, *DROPOUT)}', flush=True)
  print(f'parts (3 x {WIDTH.value}, N = {NUM_TRIALS.value}):')
  for round_ in range(ROUNDS.value):
    for name, (options, hp_values) in PARTS.items():
      timing = _time(splits, WIDTH.value, NUM_TRIALS.value, options, hp_values)
      print(f'  round {round_ + 1}, {name:30s} {timing}', flush=True)


if __name__ == '__main__':
  app.run(main)

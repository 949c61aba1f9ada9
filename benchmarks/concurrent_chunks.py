r"""One chunk at a time against two side by side: the default search end to end, back to back.

  python benchmarks/concurrent_chunks.py               # seeds 0, 1, 2; 24 trials x 40 epochs
  python benchmarks/concurrent_chunks.py --seeds=0 --epochs=4

Per seed, `experiments/random_search.py --nocompile_cache` runs with
`--concurrent_chunks=1` and `=2`, each in its own process (interpreter,
imports, data and compiles included), the two back to back so that the
machine's load hits them alike; the order alternates from seed to seed.
Prints wall seconds, the load beside them, the ratio, and whether the two
`results.csv` are byte for byte the same (they should be: each chunk is its
own program call on its own inputs).
"""

import os
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import filecmp
import statistics
import tempfile

from absl import app, flags

from benchmarks import end_to_end

SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'Seeds of the search.')
NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Trials per search.')
EPOCHS = flags.DEFINE_integer('epochs', 40, 'Epochs per trial.')


def main(argv):
  del argv
  ratios = []
  with tempfile.TemporaryDirectory(prefix='bnjax-bench-') as work:
    for i, seed in enumerate(map(int, SEEDS.value)):
      seconds, csv = {}, {}
      for workers in (1, 2) if i % 2 == 0 else (2, 1):
        output_dir = os.path.join(work, f'seed{seed}-{workers}')
        flag = f'--concurrent_chunks={workers}'
        run = end_to_end.bnjax_search(
          seed, NUM_TRIALS.value, EPOCHS.value, None, output_dir, (flag,)
        )
        seconds[workers], csv[workers] = run['seconds'], os.path.join(output_dir, 'results.csv')
        print(
          f'seed {seed}, {workers} at once: {run["seconds"]:6.1f} s, load {run["load"]:.1f}, '
          f'winner test {run["test_accuracy"]:.4f}',
          flush=True,
        )
      ratios.append(seconds[1] / seconds[2])
      same = filecmp.cmp(csv[1], csv[2], shallow=False)
      print(f'seed {seed}: one / two = {ratios[-1]:.3f}, results.csv identical: {same}', flush=True)
  print(f'median ratio {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})')


if __name__ == '__main__':
  app.run(main)

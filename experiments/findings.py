r"""The notes' claims, tested on MNIST-1D with the vectorized engine, one command each.

  python experiments/findings.py --claim=bn_learning_rate         # one claim, ~1-3 min
  python experiments/findings.py --claim=all --quick              # every claim, smoke sizes

Each claim trains its configurations over several seeds at once and writes
<output_dir>/<claim>.json (its numbers, with 95% intervals over seeds) and
<claim>.png. docs/findings.md reports the default runs.
"""

import os
import sys
import time

if __package__ in (None, ''):  # Run as a script: make `experiments` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags

from experiments import claims, common
from experiments.claims import common as claim_files

CLAIM = flags.DEFINE_string(
  'claim', None, f'Which claim: {", ".join(claims.NAMES)}, or all.', required=True
)
QUICK = flags.DEFINE_boolean('quick', False, 'Smoke-test sizes: seconds, not minutes.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', 'runs/findings', 'Where the JSON and PNG go.')


def main(argv):
  del argv
  names = claims.NAMES if CLAIM.value == 'all' else [CLAIM.value]
  unknown = [name for name in names if name not in claims.NAMES]
  if unknown:
    common.fail(f'unknown claim {unknown[0]!r}; choose from {", ".join(claims.NAMES)} or all')
  output_dir = common.output_dir_or_exit(OUTPUT_DIR.value)
  for name in names:
    module = claims.load(name)
    start = time.perf_counter()
    numbers, figure = module.run(quick=QUICK.value)
    numbers['seconds'] = time.perf_counter() - start
    numbers['load_average'] = os.getloadavg()[0]
    paths = claim_files.write(output_dir, name, numbers, figure)
    print(f'{name}: {numbers["seconds"]:.0f} s; wrote {", ".join(paths)}')
    for line in numbers.get('summary', []):
      print(f'  {line}')


if __name__ == '__main__':
  common.run(main)

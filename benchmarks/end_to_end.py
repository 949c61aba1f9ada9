"""End to end: the default search against Optuna (TPE) + PyTorch eager at equal budget.

Each side runs as its own process, as a user would run it, and is timed from
the outside (interpreter start, imports and data loading included on both
sides). bnjax runs `experiments/random_search.py` twice per seed, with the
launcher's persistent compilation cache in a fresh directory: the first run
compiles every program (what a first search costs), the second finds them
in the cache (a rerun or a resumed search). Both sides select on the dev split and
report the winner's test accuracy, measured once.
"""

import json
import os
import re
import subprocess
import sys
import tempfile

from benchmarks import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WINNER = re.compile(r'winner: trial (\d+)\s+dev_accuracy ([\d.]+)\s+test_accuracy ([\d.]+)')
SEARCH = re.compile(r'(\d+) trials in ([\d.]+) s \((\d+) bucket\(s\), (\d+) compile\(s\)')

# The searches compared, by the key results.json keeps, and as a figure names them.
SEARCH_LABELS = {
  'bnjax_cold': 'bnjax, first run',
  'bnjax_warm': 'bnjax, cache warm',
  'bnjax_bfloat16_cold': 'bnjax, bfloat16, first run',
  'optuna_torch': 'Optuna + PyTorch',
}


def _run(command: list[str]) -> tuple[str, float]:
  env = dict(os.environ, PYTHONPATH=ROOT)
  out, seconds = timing.timed(
    lambda: subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
  )
  if out.returncode != 0:
    raise RuntimeError(f'{" ".join(command)} failed:\n{out.stderr[-2000:]}')
  return out.stdout, seconds


def bnjax_search(
  seed: int,
  num_trials: int,
  epochs: int,
  cache_dir: str | None,
  output_dir: str,
  flags: tuple[str, ...] = (),
) -> dict:
  """`experiments/random_search.py` in its own process: wall seconds and the winner.

  `cache_dir` None runs without the persistent compilation cache; `flags`
  go to the launcher as they are.
  """
  cache = f'--compile_cache_dir={cache_dir}' if cache_dir else '--nocompile_cache'
  stdout, seconds = _run(
    [
      sys.executable,
      'experiments/random_search.py',
      f'--seed={seed}',
      f'--num_trials={num_trials}',
      f'--epochs={epochs}',
      f'--output_dir={output_dir}',
      cache,
      *flags,
    ]
  )
  winner, search = WINNER.search(stdout), SEARCH.search(stdout)
  return {
    'seconds': seconds,
    'search_seconds': float(search.group(2)),
    'compiles': int(search.group(4)),
    'dev_accuracy': float(winner.group(2)),
    'test_accuracy': float(winner.group(3)),
    'load': timing.load_average(),
  }


def peer_search(seed: int, num_trials: int, epochs: int, torch_threads: int) -> dict:
  """`benchmarks/optuna_peer.py` in its own process: wall seconds and the winner."""
  stdout, seconds = _run(
    [
      sys.executable,
      '-m',
      'benchmarks.optuna_peer',
      f'--seed={seed}',
      f'--num_trials={num_trials}',
      f'--epochs={epochs}',
      f'--torch_threads={torch_threads}',
    ]
  )
  out = json.loads(stdout.strip().splitlines()[-1])
  return {
    'seconds': seconds,
    'search_seconds': out['seconds'],
    'dev_accuracy': out['dev_accuracy'],
    'test_accuracy': out['test_accuracy'],
    'torch_threads': out['torch_threads'],
    'load': timing.load_average(),
  }


def compare(
  seeds: list[int], num_trials: int, epochs: int, *, torch_threads: int = 0, report=print
) -> dict:
  """Per seed, side by side: bnjax's first run, its rerun (cache warm), the peer.

  A fourth row is bnjax's first run with bfloat16 matmuls (`--matmul_dtype`,
  its own cache): what the option buys in time, and what it costs in the
  winner's accuracy, on the same seeds.
  """
  runs = {name: [] for name in SEARCH_LABELS}
  bfloat16 = ('--matmul_dtype=bfloat16',)
  with tempfile.TemporaryDirectory(prefix='bnjax-bench-') as work:
    for seed in seeds:
      for name, cache, flags in (
        ('bnjax_cold', f'cache-{seed}', ()),
        ('bnjax_warm', f'cache-{seed}', ()),
        ('bnjax_bfloat16_cold', f'cache-bfloat16-{seed}', bfloat16),
      ):
        output_dir = os.path.join(work, f'{name}-{seed}')
        cache_dir = os.path.join(work, cache)
        runs[name].append(bnjax_search(seed, num_trials, epochs, cache_dir, output_dir, flags))
      runs['optuna_torch'].append(peer_search(seed, num_trials, epochs, torch_threads))
      times = ', '.join(f'{name} {rows[-1]["seconds"]:.1f} s' for name, rows in runs.items())
      report(f'  seed {seed}: {times}, load {timing.load_average():.1f}')
  return {name: _summarize(rows) for name, rows in runs.items()}


def _summarize(rows: list[dict]) -> dict:
  out = timing.summary([r['seconds'] for r in rows], [r['load'] for r in rows])
  tests = [r['test_accuracy'] for r in rows]
  out |= {
    'test_accuracy_median': sorted(tests)[len(tests) // 2],
    'test_accuracy_min': min(tests),
    'test_accuracy_max': max(tests),
    'seeds': rows,
  }
  return out

r"""Scaling: N trials of the default space for a few epochs, each N in its own process.

  python -m benchmarks.scaling --num_trials=96 --epochs=2     # one N, one JSON line

A fresh process per N gives each its own peak memory (the resident set's
high-water mark, data and imports included: `peak_memory_mb`) and its own
compiles (the persistent cache is off here). Compile seconds are the backend compile
times JAX reports (`jax.monitoring`), summed.
"""

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax

import bnjax.data
from benchmarks import timing
from bnjax import search

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILE_EVENT = '/jax/core/compile/backend_compile_duration'


def measure(num_trials: list[int], epochs: int, report=print) -> list[dict]:
  """One process per N; returns their JSON lines, the load average beside each."""
  out = []
  for n in num_trials:
    command = [sys.executable, '-m', 'benchmarks.scaling', f'--num_trials={n}']
    command.append(f'--epochs={epochs}')
    done = subprocess.run(
      command, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True
    )
    if done.returncode != 0:
      raise RuntimeError(f'{" ".join(command)} failed:\n{done.stderr[-2000:]}')
    row = json.loads(done.stdout.strip().splitlines()[-1]) | {'load': timing.load_average()}
    report(
      f'  N={n}: {row["trials_per_second"]:.2f} trials/s, {row["compiles"]} compiles '
      f'({row["compile_seconds"]:.1f} s), peak {row["peak_memory_mb"]:.0f} MB, '
      f'load {row["load"]:.1f}'
    )
    out.append(row)
  return out


def peak_memory_mb() -> float:
  """This process's resident-set high-water mark in MB.

  Linux's `VmHWM` belongs to the process's own address space. `ru_maxrss`
  does not: a child started by a large parent inherits the parent's high
  water at `exec`, so every N would report the benchmark runner's size.
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024  # kB
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux (bytes on macOS)


def main():
  # argparse, not absl flags: `benchmarks/run.py` imports this module beside its own flags.
  parser = argparse.ArgumentParser(description='One N of the scaling section.')
  parser.add_argument('--num_trials', type=int, default=24, help='Trials of the default space.')
  parser.add_argument('--epochs', type=int, default=2, help='Epochs per trial.')
  parser.add_argument('--seed', type=int, default=0, help='Seed of the sampling and the trials.')
  args = parser.parse_args()
  logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)
  compile_seconds = []

  def on_event(event, duration, **_):
    if event == COMPILE_EVENT:
      compile_seconds.append(duration)

  jax.monitoring.register_event_duration_secs_listener(on_event)
  splits = bnjax.data.load('mnist1d')
  before = peak_memory_mb()
  start = time.perf_counter()
  results = search.run(
    'random',
    search.DEFAULT_SPACE,
    splits,
    num_trials=args.num_trials,
    seed=args.seed,
    epochs=args.epochs,
    top_k=0,
    test=False,
  )
  seconds = time.perf_counter() - start
  print(
    json.dumps(
      {
        'num_trials': args.num_trials,
        'epochs': args.epochs,
        'seconds': seconds,
        'trials_per_second': args.num_trials / seconds,
        'compiles': results.info['compiles'],
        'chunks': results.info['chunks'],
        'compile_seconds': sum(compile_seconds),
        'peak_memory_mb': peak_memory_mb(),
        'memory_before_search_mb': before,
        'device': str(jax.devices()[0].device_kind),
      }
    )
  )


if __name__ == '__main__':
  main()

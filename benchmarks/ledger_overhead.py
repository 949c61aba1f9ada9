r"""What the ledger costs: per ask, per tell, per chunk, and its share of a whole search.

  python benchmarks/ledger_overhead.py                      # the launcher's default search
  python benchmarks/ledger_overhead.py --storage=postgresql+psycopg://user@host/db

Part 1 times the ledger's own operations on an empty study in `--storage`
(default: a journal file in a temporary directory): enqueueing a trial,
claiming one (WAITING -> RUNNING), telling one (its metrics, three curves of
`--epochs` points, then `tell`), and asking TPE for one with constant liar
over `--num_trials` told trials.

Part 2 runs the launcher's default search (`search.DEFAULT_SPACE`,
`--num_trials` x `--epochs` on `--dataset`, the CPU's default chunks)
through a study and splits its wall time: the engine (`run_trials` minus
the ledger's claim and tell callbacks inside it), the test of the top k,
and the ledger (everything else: opening, enqueueing, claims, tells,
candidates on disk, the final view).
"""

import contextlib
import logging
import os
import sys
import tempfile
import time

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import optuna
from absl import app, flags

import bnjax.data
from bnjax import search
from bnjax.search import ledger, rounds, storages, workers

NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Trials (as random_search.py).')
EPOCHS = flags.DEFINE_integer('epochs', 40, 'Epochs per trial (as random_search.py).')
DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')
STORAGE = flags.DEFINE_string('storage', None, 'An Optuna storage URL; default: a journal file.')
SKIP_SEARCH = flags.DEFINE_bool('skip_search', False, 'Part 1 only.')

logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


class Clock:
  """Sums the wall time spent inside wrapped functions, by name."""

  def __init__(self):
    self.seconds, self.calls = {}, {}

  def wrap(self, owner, name: str, label: str):
    inner = getattr(owner, name)

    def timed(*args, **kwargs):
      start = time.perf_counter()
      try:
        return inner(*args, **kwargs)
      finally:
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - start
        self.calls[label] = self.calls.get(label, 0) + 1

    setattr(owner, name, timed)
    return inner


def operations(storage_url: str | None, directory: str) -> None:
  """Part 1: milliseconds per ledger operation."""
  space = search.as_space(search.DEFAULT_SPACE)
  url = storage_url or os.path.join(directory, 'ops.journal')
  name = f'ops-{os.getpid()}-{time.time_ns()}'
  made, _ = ledger.open_study(storages.open_storage(url, None), name, {'strategy': 'benchmark'})
  n = NUM_TRIALS.value
  rows = space.sample(search.cohorts.sampling_key(0, 0), n)
  rows = [{k: v[i] for k, v in rows.items()} for i in range(n)]
  curve = np.linspace(0, 1, EPOCHS.value, dtype=np.float32)
  row = {
    'bucket': 0,
    'status': 'ok',
    'dev_accuracy': 0.5,
    'dev_accuracy_std': 0.0,
    'dev_loss': 1.0,
    'best_epoch': 3,
    'train_loss': 1.0,
    'diverged_step': -1,
  }
  timings = {}
  start = time.perf_counter()
  ledger.enqueue(made, space, rows, 0, 0)
  timings['enqueue'] = (time.perf_counter() - start) / n
  with workers.Worker(made, exclusive=storage_url is None) as worker:
    start = time.perf_counter()
    got = worker.claim(list(range(n)))
    timings['claim'] = (time.perf_counter() - start) / n
    assert len(got) == n
    curves = {'train_loss': curve, 'dev_loss': curve, 'dev_accuracy': curve}
    start = time.perf_counter()
    for number in got:
      ledger.record(made, worker.storage, worker.trial_id(number), number, row, curves)
    timings['tell'] = (time.perf_counter() - start) / n
    worker.done(got)
    made.sampler = optuna.samplers.TPESampler(seed=0, constant_liar=True)
    dists = ledger.distributions(space)
    asks = 8
    start = time.perf_counter()
    for _ in range(asks):
      trial = made.ask(dists)
      worker.hold([trial.number])
    timings[f'ask (TPE, {n} told)'] = (time.perf_counter() - start) / asks
  where = storages.redacted(storage_url) if storage_url else 'journal file'
  print(f'ledger operations on {where} ({EPOCHS.value}-point curves):')
  for label, seconds in timings.items():
    print(f'  {label:<24} {1e3 * seconds:8.2f} ms per trial')


def whole_search(storage_url: str | None, directory: str) -> None:
  """Part 2: the ledger's share of the default search's wall time."""
  splits = bnjax.data.load(DATASET.value)
  clock = Clock()
  run_trials = rounds.run_trials
  clock.wrap(rounds, 'test_top_k', 'test_top_k')
  callbacks = {}

  def run_trials_timed(*args, claim=None, on_chunk=None, **kwargs):
    def timed(label, fn):
      def inner(*a):
        start = time.perf_counter()
        try:
          return fn(*a)
        finally:
          callbacks[label] = callbacks.get(label, 0.0) + time.perf_counter() - start

      return inner

    return run_trials(
      *args, claim=timed('claim', claim), on_chunk=timed('on_chunk', on_chunk), **kwargs
    )

  rounds.run_trials = lambda *a, **k: _timed(clock, 'run_trials', run_trials_timed, *a, **k)
  name = f'search-{os.getpid()}-{time.time_ns()}'
  options = dict(num_trials=NUM_TRIALS.value, epochs=EPOCHS.value, top_k=10, seed=0)
  if storage_url:
    options |= dict(storage=storage_url, study_name=name)
  else:
    options |= dict(output_dir=os.path.join(directory, 'search'))
  start = time.perf_counter()
  results = search.run('random', search.DEFAULT_SPACE, splits, **options)
  total = time.perf_counter() - start
  inside = sum(callbacks.values())
  engine = clock.seconds['run_trials'] - inside
  test = clock.seconds.get('test_top_k', 0.0)
  ledger_seconds = total - engine - test
  chunks = results.info['chunks']
  print(
    f'{NUM_TRIALS.value} trials x {EPOCHS.value} epochs on {DATASET.value}, {chunks} chunks: '
    f'{total:.1f} s in all'
  )
  print(f'  engine (compile + train)  {engine:8.2f} s')
  print(f'  test of the top k         {test:8.2f} s')
  print(
    f'  ledger                    {ledger_seconds:8.2f} s  ({100 * ledger_seconds / total:.2f}%; '
    f'claims {callbacks.get("claim", 0):.2f} s, tells and candidates '
    f'{callbacks.get("on_chunk", 0):.2f} s, {1e3 * inside / max(chunks, 1):.0f} ms per chunk)'
  )


def _timed(clock, label, fn, *args, **kwargs):
  start = time.perf_counter()
  try:
    return fn(*args, **kwargs)
  finally:
    clock.seconds[label] = clock.seconds.get(label, 0.0) + time.perf_counter() - start


def main(argv):
  del argv
  with contextlib.ExitStack() as stack:
    directory = stack.enter_context(tempfile.TemporaryDirectory())
    operations(STORAGE.value, directory)
    if not SKIP_SEARCH.value:
      whole_search(STORAGE.value, directory)


if __name__ == '__main__':
  app.run(main)

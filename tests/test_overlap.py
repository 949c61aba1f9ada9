"""Chunks side by side (`bnjax.search.overlap`): plan order, equal numbers, no stray thread.

The first tests drive `overlap.in_order` with plain Python tasks, whose
timing the test controls with events; the last run `run_trials` with one and
two chunks at a time on one CPU device and compare everything it returns,
bit for bit (the same programs on the same inputs), and what it tells along
the way.
"""

import os
import threading
import time

import jax
import numpy as np
import pytest

from bnjax.search import SearchError, overlap, run_trials, segments

pytestmark = pytest.mark.usefixtures('search_compile_cache')

WAIT = 10  # seconds a task waits for an event that the test makes happen at once


def chunk_threads() -> list[threading.Thread]:
  return [t for t in threading.enumerate() if t.name.startswith('bnjax-chunk')]


def test_results_come_in_task_order_while_two_tasks_run_at_once():
  second_started, finished = threading.Event(), []

  def first(stopping):
    # Finishes only once the second task runs beside it: two at once, or the wait times out.
    assert second_started.wait(WAIT)
    time.sleep(0.05)  # the second finishes first
    finished.append(0)
    return 'first'

  def second(stopping):
    second_started.set()
    finished.append(1)
    return 'second'

  assert list(overlap.in_order([first, second, None], workers=2)) == ['first', 'second', None]
  assert finished == [1, 0]
  assert not chunk_threads()


def test_tasks_are_made_only_when_a_worker_is_free():
  made, seen = [], []

  def tasks():
    for i in range(5):
      made.append(i)
      yield lambda stopping, i=i: i

  for result in overlap.in_order(tasks(), workers=2):
    seen.append((result, len(made)))
  # Result i is yielded once task i + 2 has been made (its worker freed), never later ones.
  assert seen == [(0, 3), (1, 4), (2, 5), (3, 5), (4, 5)]


def test_one_worker_runs_each_task_on_the_calling_thread_in_turn():
  caller, order = threading.current_thread(), []

  def task(i):
    def run(stopping):
      assert stopping is None and threading.current_thread() is caller
      order.append(i)
      return i

    return run

  results = overlap.in_order((task(i) for i in range(3)), workers=1)
  assert next(results) == 0 and order == [0]  # the next one has not started
  assert list(results) == [1, 2] and order == [0, 1, 2]


def test_a_failing_task_stops_the_one_beside_it_and_no_thread_outlives_the_call():
  class Failed(Exception):
    pass

  started, stopped = threading.Event(), threading.Event()

  def long_running(stopping):
    started.set()
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:  # a chunk polls between segments
      if stopping():
        stopped.set()
        raise overlap.Stopped('stopped')
      time.sleep(0.01)
    return 'never stopped'

  def failing(stopping):
    assert started.wait(WAIT)
    raise Failed('boom')

  def never(stopping):
    raise AssertionError('a task after the failure ran')

  results = overlap.in_order([failing, long_running, never], workers=2)
  with pytest.raises(Failed, match='boom'):
    list(results)
  assert stopped.is_set()
  assert not chunk_threads()


def test_leaving_the_results_early_stops_the_tasks_still_running():
  started, stopped = threading.Event(), threading.Event()

  def quick(stopping):
    return 'quick'

  def slow(stopping):
    started.set()
    deadline = time.monotonic() + WAIT
    while not stopping():
      assert time.monotonic() < deadline, 'never asked to stop'
      time.sleep(0.01)
    stopped.set()
    raise overlap.Stopped('stopped')

  results = overlap.in_order([quick, slow], workers=2)
  assert next(results) == 'quick' and started.wait(WAIT)  # one not started would be cancelled
  results.close()
  assert stopped.is_set() and not chunk_threads()


def test_two_at_once_by_default_only_on_one_cpu_device():
  assert overlap.default_workers(jax.devices()[:1]) == 2
  assert overlap.default_workers(jax.devices()) == 1  # the four test devices shard a chunk
  with pytest.raises(SearchError, match='concurrent_chunks'):
    run_trials({'learning_rate': np.asarray([1e-2])}, None, concurrent_chunks=0)


# ---------------------------------------------------------------------------- run_trials

TABLE = {
  'hidden_units': np.asarray([12, 10, 11, 12, 10, 12]),
  'num_layers': np.asarray([2, 1, 2, 1, 2, 2]),
  'learning_rate': np.asarray([1e-2, 3e-2, 3e-3, 1e-1, 2e-2, 5e-3]),
  'keep_prob': np.asarray([1.0, 0.8, 1.0, 0.9, 1.0, 0.7]),
  'batch_size': np.asarray([32] * 6),
}
# Three chunks of two on one device, in segments of one epoch.
OPTIONS = dict(
  epochs=2,
  chunk_size=2,
  segment_epochs=1,
  width_ratio=None,
  select='best',
  top_k=3,
  test=False,
)


@pytest.fixture(scope='module')
def splits(blob_splits):
  return blob_splits


def told(workers, splits, **options):
  """`run_trials` with `workers` chunks at once; its results, and what it told, in order."""
  events = []
  results = run_trials(
    TABLE,
    splits,
    devices=jax.devices()[:1],
    concurrent_chunks=workers,
    on_chunk=lambda rows, curves, best: events.append(('chunk', [r['trial_id'] for r in rows])),
    progress=lambda done, total: events.append(('progress', done, total)),
    **OPTIONS,
    **options,
  )
  return results, events


def assert_same(got, want):
  assert got.rows == want.rows and got.info['chunks'] == want.info['chunks'] == 3
  for name in want.curves:
    np.testing.assert_array_equal(got.curves[name], want.curves[name])
  by_id = lambda results: {c.row['trial_id']: c.params for c in results.candidates}
  jax.tree.map(np.testing.assert_array_equal, by_id(got), by_id(want))


def test_two_chunks_at_once_give_the_numbers_and_tell_them_in_the_order_of_one(splits):
  alone, told_alone = told(1, splits)
  side_by_side, told_side_by_side = told(2, splits)
  assert_same(side_by_side, alone)
  assert told_side_by_side == told_alone
  # Plan order: the one-layer trials 1 and 3 first (a bucket lists its trials shallowest first).
  assert [e[1] for e in told_alone if e[0] == 'chunk'] == [[1, 3], [0, 2], [4, 5]]
  assert not chunk_threads()


def test_a_crash_beside_a_chunk_in_flight_stops_both_and_loses_no_saved_segment(splits, tmp_path):
  class Crash(Exception):
    pass

  saves, saved, crashed = [], threading.Event(), threading.Event()

  def crash(chunk, segment):
    saves.append((chunk, segment))
    if chunk == 0:  # still in flight when chunk 1 fails: its error surfaces at once
      saved.set()
      assert crashed.wait(WAIT)
    else:  # once chunk 0 has saved a segment (else it may stop before its first)
      assert saved.wait(WAIT)
      crashed.set()
      raise Crash

  with pytest.raises(Crash):
    told(2, splits, in_flight=segments.InFlight(tmp_path, on_save=crash))
  assert not chunk_threads()
  assert sorted(saves) == [(0, 0), (1, 0)]  # chunk 2 never started; chunk 0 was not told
  assert len(os.listdir(tmp_path)) == 2
  restored = []
  in_flight = segments.InFlight(tmp_path, on_restore=lambda *epochs: restored.append(epochs))
  resumed, _ = told(2, splits, in_flight=in_flight)
  assert restored == [(1, 2), (1, 2)] and os.listdir(tmp_path) == []
  assert_same(resumed, told(1, splits)[0])


def test_an_error_while_telling_a_chunk_stops_the_one_in_flight_before_run_trials_returns(
  splits, tmp_path
):
  class Told(Exception):
    pass

  def on_chunk(rows, curves, best):
    raise Told

  def on_save(chunk, segment):
    if chunk == 1:
      time.sleep(2)  # chunk 1 is still in flight when telling chunk 0 fails

  # Keeps the error, so its traceback keeps run_trials' frame: no refcount closes the chunks.
  with pytest.raises(Told) as error:
    run_trials(
      TABLE,
      splits,
      devices=jax.devices()[:1],
      concurrent_chunks=2,
      on_chunk=on_chunk,
      in_flight=segments.InFlight(tmp_path, on_save=on_save),
      **OPTIONS,
    )
  assert error.tb is not None
  assert not chunk_threads()  # stopped and joined before the error left run_trials

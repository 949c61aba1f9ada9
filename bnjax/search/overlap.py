"""Chunks trained side by side in threads, their results taken in plan order.

On a CPU one chunk leaves the cores idle part of the time: many of a step's
operations are small and run on one thread while the other waits, and
between segments the host fetches curves and saves checkpoints. A second
chunk in flight fills those gaps, and compiles the next bucket's program
while the current one trains. Every chunk is still its own program call on
its own inputs, so its numbers do not depend on what runs beside it.

`in_order` keeps up to `workers` tasks in flight and yields their results in
the order the tasks were given, so what follows a chunk (telling its trials,
the progress line, removing its checkpoint) happens in plan order on the
calling thread. If any task fails, or the caller stops taking results, the
tasks still running are asked to stop (`stopping()`, polled between
segments, raises `Stopped` there) and waited for before the error goes on: no
thread outlives the call, and what they saved stays for a rerun.
"""

import collections
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import TypeVar

import jax

T = TypeVar('T')
_DONE = object()
# A task: called as `task(stopping=...)`, where `stopping()` turns True once it
# should stop (None: it never will), and returns its result.
Task = Callable[..., T]


class Stopped(Exception):
  """Raised inside a task that was asked to stop because another failed."""


def default_workers(devices) -> int:
  """2 on one CPU device, where a second chunk fills idle cores; 1 elsewhere.

  Several devices already run a chunk's shards side by side, and every
  process of a multi-host search must call its programs in the same order.
  """
  one_cpu = len(devices) == 1 and devices[0].platform == 'cpu'
  return 2 if one_cpu and jax.process_count() == 1 else 1


def in_order(tasks: Iterable[Task | None], workers: int) -> Iterator[T | None]:
  """Runs up to `workers` of `tasks` at once; yields each result (None for a None task) in order.

  `tasks` is read lazily, one task ahead of those running: a task is made
  (and, in the engine, its trials claimed) only when a worker is free for it.
  With `workers == 1` each task runs on the calling thread.
  """
  if workers == 1:
    for task in tasks:
      yield None if task is None else task(stopping=None)
    return
  stop = threading.Event()
  running: collections.deque[futures.Future | None] = collections.deque()
  pending = iter(tasks)
  with futures.ThreadPoolExecutor(workers, thread_name_prefix='bnjax-chunk') as pool:

    def fill() -> None:
      while sum(entry is not None for entry in running) < workers:
        task = next(pending, _DONE)
        if task is _DONE:
          return
        running.append(None if task is None else pool.submit(task, stopping=stop.is_set))

    def result_of(head: futures.Future):
      """`head`'s result, or the first error among the tasks running (in task order), at once."""
      while True:
        for entry in (head, *running):
          if entry is not None and entry.done() and entry.exception() is not None:
            raise entry.exception()
        if head.done():
          return head.result()
        futures.wait([head, *(e for e in running if e is not None)], return_when='FIRST_COMPLETED')

    try:
      fill()
      while running:
        head = running.popleft()
        result = None if head is None else result_of(head)
        fill()
        yield result
    finally:
      stop.set()  # nothing runs after the last result; after an error the others stop
      started = [entry for entry in running if entry is not None and not entry.cancel()]
      futures.wait(started)

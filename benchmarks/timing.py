"""Timing on a shared machine: repeat, keep the median and range, note the load beside it."""

import os
import statistics
import time
from collections.abc import Callable


def load_average() -> float:
  """The 1-minute load average (other users of the machine), or NaN where unknown."""
  try:
    return os.getloadavg()[0]
  except OSError:
    return float('nan')


def repeat(fn: Callable[[], object], repeats: int) -> dict:
  """Runs `fn` `repeats` times: median, min and max seconds, and the median load beside them."""
  seconds, loads = [], []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    seconds.append(time.perf_counter() - start)
    loads.append(load_average())
  return summary(seconds, loads)


def summary(seconds: list[float], loads: list[float]) -> dict:
  return {
    'median': statistics.median(seconds),
    'min': min(seconds),
    'max': max(seconds),
    'runs': list(seconds),
    'load': statistics.median(loads),
  }


def timed(fn: Callable[[], object]) -> tuple[object, float]:
  """`(fn(), seconds)`."""
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start

"""A chunk trained in segments of epochs, saved at each boundary so that a crash loses one segment.

`run_trials` trains a chunk as a population (`bnjax.search.population`):
`init`, then `segment` after `segment` of a few epochs each, then `finish`.
On one machine that is bitwise the one `jit(vmap(train))` call it replaces
(`tests/test_search_engine.py`), and a bucket's segment program compiles
once per chunk shape and segment length, however many segments run, and
however many `run_trials` calls use it: a search in rounds (a study,
coarse-to-fine) calls `run_trials` once a round, and `programs` keeps each
bucket's jitted programs for the next round instead of compiling them again.

Inside a study with an output directory, `InFlight` saves the chunk at each
boundary (its population, with the best-epoch snapshot the top-k test may
need, and its curves so far), one file per chunk, replaced each time and
removed once its trials are told. A rerun of the same chunk (same program,
hyperparameters, keys, data, devices and segments: the file's name is a hash
of them) starts from the file instead of from scratch.

A segment runs its steps unchecked (`bnjax.training.train_step`'s
`checked=False`): no step tests its result for NaN and infinity and keeps
the old state where it finds one, a test and a select over every parameter
and moment that cost 15 to 18% of a 3 x 448 chunk's time with two chunks
side by side, and 13 to 14% of the default search's (docs/performance.md,
"Segments checked once"). Instead the segment ends by asking whether every
step stayed finite (`training.steps_were_finite`). Where some trial's did
not, the segment runs again from its start with every step checked, which
is what makes a diverged trial keep its last finite state, and so does
every later segment of that chunk (`population.checked_at_end`, which the
adaptive searches' cohorts use too). Both programs do the same arithmetic;
where no step fails they agree bit for bit with XLA's optimizations on
(`tests/test_search_engine.py`; docs/design.md, "Divergent trials").

`SEGMENT_EPOCHS` bounds the work a crash can lose while keeping the saves
cheap (`benchmarks/checkpoint_overhead.py`). Measured on this project's
2-core CPU under a load average of 17 to 20: a chunk of 8 runs of the default
search's widest shape (3 x 448 units, Adam; 41 MB) saves in 2.4 s (median
of 3; 1.3 to 2.5 s) against 114 s for a segment of 10 epochs: 2.1%, so under
5% from segments of 5 epochs on (20.7% at one epoch). The default never goes
below 6 epochs a segment, and the last segment is never saved.
"""

import contextlib
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from bnjax.model import vmap_chunk
from bnjax.search import checkpoints
from bnjax.search import population as pop
from bnjax.search.folds import fold_data
from bnjax.search.overlap import Stopped
from bnjax.training import TrainConfig, TrainResult, init_trial, train_epochs

# Epochs per segment by default (see `segment_lengths`).
SEGMENT_EPOCHS = 10
CURVES = ('train_loss', 'dev_loss', 'dev_accuracy')
# Bucket programs kept by `programs` (each holds its compiled executables).
KEPT_PROGRAMS = 64
_segment_traces = 0  # times any segment program traced (compiled) in this process
_traces_lock = threading.Lock()  # chunks side by side (`overlap`) trace in their own threads


def segment_lengths(epochs: int, segment_epochs: int | None = None) -> tuple[int, ...]:
  """The epochs of each segment of a run of `epochs`.

  `segment_epochs` each, and the remainder last (a second program). By
  default, the largest divisor of `epochs` between `SEGMENT_EPOCHS / 2` and
  `SEGMENT_EPOCHS` (one program), else `SEGMENT_EPOCHS` and a remainder;
  runs of at most `SEGMENT_EPOCHS` epochs are one segment.
  """
  if segment_epochs is None:
    divisors = [d for d in range(SEGMENT_EPOCHS, SEGMENT_EPOCHS // 2, -1) if epochs % d == 0]
    segment_epochs = min(epochs, divisors[0] if divisors else SEGMENT_EPOCHS)
  full, rest = divmod(epochs, segment_epochs)
  return (segment_epochs,) * full + ((rest,) if rest else ())


class Programs(NamedTuple):
  """A bucket's programs for one search: a chunk's init, one segment, and its result."""

  config: TrainConfig
  init: Callable  # (hp, keys, data, fold) -> population
  # (hp, population, data, fold, epochs, checked) -> (population, metrics [runs, epochs],
  # finite [runs] where not checked: `training.steps_were_finite`, else None)
  segment: Callable
  finish: Callable  # (population, metrics [runs, all epochs]) -> TrainResult


@functools.lru_cache(maxsize=KEPT_PROGRAMS)
def programs(
  config: TrainConfig, sharding: jax.sharding.Sharding, *, folds: bool = False
) -> Programs:
  """`config`'s population programs, every output on the trial-axis `sharding`.

  Kept per `(config, sharding, folds)`, so a later search (or round) with the
  same bucket reuses their compiled executables. A segment program traces
  (compiles) once per chunk shape and segment length; `segment_traces`
  counts it. Without `folds` the programs are `bnjax.search.population`'s,
  every run on the same data, and `fold` is None; with `folds` the data is
  stacked `[K, ...]` (`bnjax.search.folds`) and `fold` is each run's `[runs]`
  fold index: the same loop, each run on its own fold.
  """

  def init(hp, keys, data, fold):
    if not folds:
      return pop.init_population(config, hp, keys, data)
    init_run = lambda hp, key, fold: init_trial(config, hp, key, fold_data(data, fold))
    return jax.vmap(init_run)(hp, keys, fold)

  def segment(hp, population, data, fold, epochs, checked):
    global _segment_traces
    with _traces_lock:
      _segment_traces += 1
    if not folds:
      return pop.segment_program(config, hp, population, data, epochs, checked)
    run = lambda hp, trial, fold: train_epochs(
      config, hp, trial, fold_data(data, fold), epochs, checked=checked
    )
    population, metrics = vmap_chunk(run)(hp, population, fold)
    return population, metrics, pop.finite_unless(checked, population, metrics)

  def finish(population, metrics):
    return pop.finish_population(config, population, metrics)

  return Programs(
    config,
    jax.jit(init, out_shardings=sharding),
    jax.jit(segment, static_argnums=(4, 5), out_shardings=sharding),
    jax.jit(finish),
  )


def segment_traces() -> int:
  """How many times a segment program traced (compiled) in this process so far."""
  return _segment_traces


def train(
  programs: Programs,
  hp: dict,
  keys: jax.Array,
  data: Any,
  lengths: tuple[int, ...],
  *,
  fold: jax.Array | None = None,
  in_flight: 'InFlight | None' = None,
  identity: str | None = None,
  number: int = 0,
  stopping: Callable[[], bool] | None = None,
) -> TrainResult:
  """A chunk's `TrainResult`: init, the segments `lengths`, finish; saved between segments.

  `fold`: each run's fold with cross-validation (`programs(folds=True)`).
  With `in_flight`, a chunk saved under `identity` (`chunk_identity`) goes on
  from its last saved segment, and each boundary but the last is saved;
  `number` is the chunk's place among those its search trains, for
  `InFlight.on_save`. `stopping`: polled before each segment; True raises `overlap.Stopped`
  (a chunk beside this one failed), leaving the last boundary saved.
  """
  population = programs.init(hp, keys, data, fold)
  curves = {name: np.zeros((len(keys), 0), np.float32) for name in CURVES}
  done = 0
  if in_flight is not None:
    restored = in_flight.restore(identity, (population, curves), sum(lengths), keys.sharding)
    if restored is not None:
      (population, curves), done = restored
  boundaries = np.cumsum(lengths)
  for index, length in enumerate(lengths):
    if boundaries[index] <= done:
      continue
    if stopping is not None and stopping():
      raise Stopped(f'stopped before segment {index} of {len(lengths)}')
    segment = functools.partial(programs.segment, hp, population, data, fold, length)
    population, metrics = pop.checked_at_end(segment, population)
    curves = {name: np.concatenate([curves[name], metrics[name]], axis=1) for name in CURVES}
    if in_flight is not None and index < len(lengths) - 1:
      in_flight.save(identity, (population, curves), int(boundaries[index]), number, index)
  return programs.finish(population, curves)


def chunk_identity(
  config: TrainConfig, hp: dict, keys: jax.Array, lengths, devices: int, data_digest: str
) -> str:
  """A hash of what decides a chunk's numbers: program, hyperparameters, keys, data, segments."""
  digest = hashlib.sha256(repr((config, tuple(lengths), devices, data_digest)).encode())
  arrays = [hp[name] for name in sorted(hp)] + [jax.random.key_data(keys)]
  for array in arrays:
    array = np.ascontiguousarray(jax.device_get(array))
    digest.update(f'{array.dtype}{array.shape}'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()[:32]


def data_digest(arrays) -> str:
  """A hash of the data a chunk trains on (for `chunk_identity`)."""
  digest = hashlib.sha256()
  for array in arrays:
    array = np.ascontiguousarray(jax.device_get(array))
    digest.update(f'{array.dtype}{array.shape}'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


class InFlight:
  """The chunks in flight in `directory`, one checkpoint each, replaced at every segment boundary.

  Args:
    directory: where the checkpoints live (made at the first save).
    on_save: called as `on_save(chunk, segment)` after segment `segment` (from 0)
      of a chunk is saved, `chunk` its place among the chunks its
      `run_trials` call trains (the study's crash points for tests). With
      chunks side by side it is called from their threads.
    on_restore: called as `on_restore(epochs_done, epochs)` when a chunk
      goes on from its checkpoint.
  """

  def __init__(
    self,
    directory: str | os.PathLike,
    *,
    on_save: Callable[[int, int], None] | None = None,
    on_restore: Callable[[int, int], None] | None = None,
  ):
    self.directory = os.fspath(directory)
    self.on_save, self.on_restore = on_save, on_restore

  def path(self, identity: str) -> str:
    return os.path.join(self.directory, f'chunk_{identity}.msgpack')

  def restore(
    self, identity: str, like: Any, epochs: int, sharding: jax.sharding.Sharding
  ) -> tuple[Any, int] | None:
    """`((population, curves), epochs done)` saved for `identity`; None if there is none.

    `like` is `(population, curves)` of the chunk's structure; the population
    goes onto `sharding`, the curves stay on the host.
    """
    path = self.path(identity)
    if not os.path.exists(path):
      return None
    (population, curves), meta = checkpoints.restore_population(path, like)
    population = jax.device_put(population, sharding)
    if self.on_restore is not None:
      self.on_restore(meta['epochs'], epochs)
    return (population, curves), int(meta['epochs'])

  def save(self, identity: str, state: Any, epochs: int, chunk: int, segment: int) -> None:
    os.makedirs(self.directory, exist_ok=True)  # made at the first save: none, no folder
    meta = {'epochs': epochs, 'identity': identity}
    checkpoints.save_population(self.path(identity), state, meta)
    if self.on_save is not None:
      self.on_save(chunk, segment)

  def finished(self, identity: str) -> None:
    """Removes the checkpoint of chunk `identity` (call once its trials are told)."""
    with contextlib.suppress(FileNotFoundError):  # a chunk of one segment saves none
      os.unlink(self.path(identity))

  def clear(self) -> None:
    """Removes every checkpoint and the folder (when no chunk is in flight: all trials told)."""
    if not os.path.isdir(self.directory):
      return
    for name in os.listdir(self.directory):
      if name.startswith(('chunk_', '.chunk_')):
        os.unlink(os.path.join(self.directory, name))
    with contextlib.suppress(OSError):  # a file not ours stays, and so does the folder
      os.rmdir(self.directory)

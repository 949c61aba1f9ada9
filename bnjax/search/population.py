"""A population: one bucket's chunk of trials as one `TrialState` with a leading trial axis.

Adaptive searches (successive halving, Hyperband, population-based training)
train a population in *segments* of epochs and decide between segments. The
population is `bnjax.training.TrialState` with a leading `[trials]` axis:
params, BN statistics, optimizer state (its step count drives the learning-rate
schedule), the loop key, the epochs done (`epoch`: each epoch draws its
permutation and dropout from `fold_in(key, epoch)`), divergence and the
best-epoch snapshot. So a segment starts exactly where the last one stopped.

A search runs each segment through `checked_at_end`: its steps unchecked,
then once checked where some trial's were not all finite (see there).

`init_population` and `run_segment` are `jit(vmap(...))` programs, compiled
once per bucket config, chunk shape (and sharding) and segment length, however
many segments run: jit's cache holds them, keyed on those static values.

What holds bitwise, measured on this machine's CPU (XLA, 2 cores; hidden sizes
(8, 8) and (96, 96, 96), select 'final' and 'best', four trials mixing
optimizers, schedules, dropout and one divergence): `k` segments of `e` epochs
give bitwise the same params, BN state, optimizer state, step, epoch, best
snapshot and per-epoch metrics as one `lax.scan` of `k * e` epochs, and as
`make_train`'s `train` (init and the whole scan in one program), for `(k, e)`
in `{(4, 1), (2, 2), (1, 4)}`: the epoch is one loop body, and XLA compiled it
alike whatever the trip count (one-epoch scans included);
`tests/test_population.py` pins it, and would catch a compiler that does not.
It is a claim about equal shapes on one machine: segments are as exact with
the trial axis sharded over four devices (4 x 1 against 2 x 2 epochs,
measured), but a sharded population (one trial per device) and an unsharded
one (four trials on one device) differ in the last bits; so may another chunk
shape or backend (docs/design.md, "Reproducibility").
"""

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

from bnjax import distributed
from bnjax.model import vmap_chunk
from bnjax.training import (
  TrainConfig,
  TrainData,
  TrainResult,
  TrialState,
  finish,
  init_trial,
  steps_were_finite,
  train_epochs,
)

# XLA programs lowered (built for compilation), counted by `count_lowerings`.
_LOWERING_EVENT = '/jax/core/compile/jaxpr_to_mlir_module_duration'


@functools.partial(jax.jit, static_argnums=0)
def _init(config: TrainConfig, hp: dict, keys: jax.Array, data: TrainData) -> TrialState:
  init = lambda hp, key: init_trial(config, hp, key, data)
  return jax.vmap(init)(hp, keys)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def segment_program(
  config: TrainConfig,
  hp: dict,
  population: TrialState,
  data: TrainData,
  epochs: int,
  checked: bool,
) -> tuple[TrialState, dict, jax.Array | None]:
  """The jitted segment behind `run_segment`: its result and, unchecked, `finite_unless`'s.

  `epochs` and `checked` are static; `segment(checked)` for `checked_at_end`.
  """
  segment = lambda hp, trial: train_epochs(config, hp, trial, data, epochs, checked=checked)
  population, metrics = vmap_chunk(segment)(hp, population)
  return population, metrics, finite_unless(checked, population, metrics)


def finite_unless(checked: bool, population: TrialState, metrics: dict) -> jax.Array | None:
  """None after checked steps; else each trial's `steps_were_finite`, `[trials]`."""
  return None if checked else jax.vmap(steps_were_finite)(population, metrics)


def init_population(config: TrainConfig, hp: dict, keys: jax.Array, data: TrainData) -> TrialState:
  """Every trial of a chunk before its first epoch.

  Args:
    config: the bucket's static settings (`config.epochs` is not used here).
    hp: traced hyperparameters, each `[trials, ...]` (`buckets.traced_hparams`).
    keys: `[trials]` trial keys (`chunks.trial_keys`).
    data: train and dev splits, shared by every trial (never broadcast).

  Returns:
    The population: a `TrialState` whose leaves have a leading `[trials]` axis,
    sharded like `keys` where that is a `NamedSharding` over the trial axis.
  """
  population = _init(config, hp, keys, data)
  sharding = getattr(keys, 'sharding', None)
  if isinstance(sharding, jax.sharding.NamedSharding):
    # XLA may replicate leaves that start equal (the epoch, the step): put
    # them on the trial axis like the rest, so the first segment's program is
    # every later segment's.
    population = jax.device_put(population, sharding)
  return population


def run_segment(
  config: TrainConfig,
  hp: dict,
  population: TrialState,
  data: TrainData,
  epochs: int,
  *,
  checked: bool = True,
) -> tuple[TrialState, dict]:
  """`epochs` more epochs of every trial, from where each stopped.

  Args:
    config: the bucket's static settings.
    hp: `[trials, ...]` traced hyperparameters (they may change between
      segments, as population-based training does, without a new compile).
    population: from `init_population` or an earlier `run_segment`.
    data: train and dev splits.
    epochs: the segment's length (static: each length is one program).
    checked: False leaves every step's divergence check out
      (`bnjax.training.train_step`): only for a population none of whose
      trials has diverged, and whose result the caller keeps only where
      `steps_were_finite` holds for every trial, else it runs the segment
      again checked. `checked_at_end` does both.

  Returns:
    The population after the segment, and its metrics: 'train_loss',
    'dev_loss', 'dev_accuracy', each `[trials, epochs]` (NaN once diverged).
  """
  epochs = _length(epochs)
  population, metrics, _ = segment_program(config, hp, population, data, epochs, bool(checked))
  return population, metrics


def _length(epochs: int) -> int:
  if epochs < 1:
    raise ValueError(f'a segment needs epochs >= 1; got {epochs}.')
  return int(epochs)


def run_segment_checked_at_end(
  config: TrainConfig, hp: dict, population: TrialState, data: TrainData, epochs: int
) -> tuple[TrialState, dict]:
  """`run_segment`'s result, its steps checked only where a trial diverges; metrics on the host."""
  segment = functools.partial(segment_program, config, hp, population, data, _length(epochs))
  return checked_at_end(segment, population)


def checked_at_end(
  segment: Callable[[bool], tuple[TrialState, dict, jax.Array | None]], population: TrialState
) -> tuple[TrialState, dict]:
  """A segment from `population` that checks its steps only where it must; metrics on the host.

  `segment(checked)` runs it (`run_segment`'s `checked`) and returns the
  population after it, its metrics and, unchecked, each trial's
  `steps_were_finite` (`finite_unless`). Where no trial has diverged yet,
  the segment runs unchecked (a check and a select over the whole state
  fewer per step) and is kept if every trial's steps stayed finite; else,
  and wherever a trial had diverged before, it runs with every step
  checked, which freezes a diverging trial at its last finite state. Both
  do the same arithmetic: where no step fails they agree bit for bit with
  XLA's optimizations on (docs/design.md, "Divergent trials").
  """
  if not np.any(distributed.fetch(population.diverged_step) >= 0):
    after, metrics, finite = segment(False)
    metrics, finite = distributed.fetch((metrics, finite))
    if np.all(finite):
      return after, metrics
    del after  # its memory, before the checked run needs its own
  after, metrics, _ = segment(True)
  return after, distributed.fetch(metrics)


@functools.partial(jax.jit, static_argnums=0)
def _finish(config: TrainConfig, population: TrialState, metrics: dict) -> TrainResult:
  return jax.vmap(lambda trial, metrics: finish(config, trial, metrics))(population, metrics)


def finish_population(config: TrainConfig, population: TrialState, metrics: dict) -> TrainResult:
  """Each trial's `TrainResult`, from its state and its whole curves (`[trials, epochs]`).

  The segments' metrics joined along the epoch axis give what `make_train`'s
  `train` returns for the same epochs (bitwise; see the module docstring).
  """
  return _finish(config, population, metrics)


def num_members(population: Any) -> int:
  """The length of the leading trial axis."""
  return int(jax.tree.leaves(population)[0].shape[0])


def take(tree: Any, indices: np.ndarray) -> Any:
  """Rows `indices` of every leaf of `tree` (a population, hyperparameters, curves), on the host.

  A gather along the trial axis in numpy: it copies the rows bitwise and
  compiles nothing, whatever the number of rows (typed PRNG keys stay keys).
  """
  indices = np.asarray(indices, np.int64)
  return jax.tree.map(lambda leaf: _take_leaf(leaf, indices), tree)


def _take_leaf(leaf: Any, indices: np.ndarray) -> Any:
  if is_key(leaf):
    data = on_host(jax.random.key_data(leaf))[indices]
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaf))
  return on_host(leaf)[indices]


def concatenate(trees: list) -> Any:
  """Trees of equal structure joined along the trial axis, on the host (compiles nothing)."""

  def join(*leaves):
    if is_key(leaves[0]):
      data = np.concatenate([on_host(jax.random.key_data(leaf)) for leaf in leaves])
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(leaves[0]))
    return np.concatenate([on_host(leaf) for leaf in leaves])

  return jax.tree.map(join, *trees)


def is_key(leaf: Any) -> bool:
  """Whether `leaf` is an array of typed PRNG keys."""
  return isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key)


def on_host(leaf: Any) -> np.ndarray:
  """`leaf` whole on the host, on every process (a collective where it spans processes)."""
  return np.asarray(distributed.fetch(leaf))


class LoweringCount:
  """How many XLA programs were lowered inside a `count_lowerings` block."""

  def __init__(self) -> None:
    self.value = 0


@contextlib.contextmanager
def count_lowerings() -> Iterator[LoweringCount]:
  """Counts the programs JAX lowers for compilation while the block runs.

  A jitted function lowers once per new static value, shape or sharding; a
  call that its cache serves lowers nothing. Counting lowerings (not XLA
  compiles) also counts programs that a persistent compilation cache serves.
  """
  count = LoweringCount()

  def listen(event: str, duration: float, **kwargs) -> None:
    del duration, kwargs
    if event == _LOWERING_EVENT:
      count.value += 1

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    yield count
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)

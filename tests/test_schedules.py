"""Tests for bnjax.schedules against the notes' formulas and optax.exponential_decay."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnjax
from bnjax.optim import schedules

FAST = settings(max_examples=15, deadline=None)
STEPS = np.arange(0, 41, dtype=np.int32)  # several epochs for steps_per_epoch <= 10


def _np_epoch(step, steps_per_epoch, staircase):
  step = np.asarray(step, np.float64)
  return step // steps_per_epoch if staircase else step / steps_per_epoch


def _np_inverse_time(init, rate, steps_per_epoch, step, staircase=True):
  return init / (1.0 + rate * _np_epoch(step, steps_per_epoch, staircase))


def _np_exponential(init, rate, steps_per_epoch, step, staircase=True):
  return init * rate ** _np_epoch(step, steps_per_epoch, staircase)


def _evaluate(make, staircase):
  return jax.jit(
    lambda init, rate, spe, steps: jax.vmap(make(init, rate, spe, staircase=staircase))(steps)
  )


_JITTED = {
  (kind, staircase): _evaluate(make, staircase)
  for kind, make in [
    ('inverse', bnjax.inverse_time_decay),
    ('exponential', bnjax.exponential_decay),
  ]
  for staircase in (True, False)
}
_REFERENCE = {'inverse': _np_inverse_time, 'exponential': _np_exponential}


@FAST
@given(
  kind=st.sampled_from(['inverse', 'exponential']),
  staircase=st.booleans(),
  init=st.floats(1e-4, 1.0),
  rate=st.floats(0.3, 0.99),
  spe=st.integers(1, 10),
)
def test_schedules_equal_formulas(kind, staircase, init, rate, spe):
  got = _JITTED[kind, staircase](init, rate, spe, STEPS)
  chex.assert_shape(got, STEPS.shape)
  expect = _REFERENCE[kind](init, rate, spe, STEPS, staircase)
  # float32 against float64: rate ** epoch in float32 is off by about
  # epoch * |log rate| * 6e-8 relative, at most 3e-6 over these 40 epochs.
  np.testing.assert_allclose(got, expect, rtol=1e-5)


def test_staircase_epochs_count_from_zero():
  schedule = bnjax.exponential_decay(1.0, 0.5, 3)
  np.testing.assert_allclose(
    jax.vmap(schedule)(jnp.arange(10)), [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]
  )
  schedule = bnjax.inverse_time_decay(1.0, 1.0, 2, staircase=False)
  np.testing.assert_allclose(
    jax.vmap(schedule)(jnp.arange(5)), [1, 1 / 1.5, 0.5, 0.4, 1 / 3], rtol=1e-6
  )


@jax.jit
@chex.assert_max_traces(n=1)
def _sweep(init, rate, spe, steps):
  def per_trial(i, r, s):
    return {
      'inverse': jax.vmap(bnjax.inverse_time_decay(i, r, s))(steps),
      'exponential': jax.vmap(bnjax.exponential_decay(i, r, s))(steps),
    }

  return jax.vmap(per_trial)(init, rate, spe)


def test_traced_in_every_argument():
  rng = np.random.default_rng(0)
  for _ in range(2):  # New values, same compiled program (assert_max_traces).
    init = rng.uniform(1e-3, 1.0, 5).astype(np.float32)
    rate = rng.uniform(0.1, 0.95, 5).astype(np.float32)
    spe = rng.integers(1, 8, 5).astype(np.int32)
    got = _sweep(init, rate, spe, STEPS)
    for kind in ('inverse', 'exponential'):
      chex.assert_shape(got[kind], (5, STEPS.size))
      for i in range(5):
        np.testing.assert_allclose(
          got[kind][i],
          _REFERENCE[kind](float(init[i]), float(rate[i]), int(spe[i]), STEPS),
          rtol=1e-5,
        )


@pytest.mark.parametrize('init, rate, spe', [(0.1, 0.95, 3), (1.0, 0.5, 1), (0.02, 0.9, 7)])
def test_exponential_matches_optax_staircase(init, rate, spe):
  ours = jax.vmap(bnjax.exponential_decay(init, rate, spe))(STEPS)
  theirs = jax.vmap(
    optax.exponential_decay(init, transition_steps=spe, decay_rate=rate, staircase=True)
  )(STEPS)
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)


@jax.jit
@chex.assert_max_traces(n=1)
def _decayed_sweep(kind, init, decay, spe, steps):
  per_trial = lambda k, i, d, s: jax.vmap(schedules.decayed(k, i, d, s))(steps)
  return jax.vmap(per_trial)(kind, init, decay, spe)


def test_decayed_kind_is_traced_and_selects_the_schedule():
  assert schedules.SCHEDULES == ('constant', 'inverse_time', 'exponential')
  rng = np.random.default_rng(1)
  for _ in range(2):
    trials = 6
    kind = np.arange(trials, dtype=np.int32) % 3
    init = rng.uniform(1e-3, 1.0, trials).astype(np.float32)
    decay = rng.uniform(0.05, 0.5, trials).astype(np.float32)
    spe = rng.integers(1, 6, trials).astype(np.int32)
    got = _decayed_sweep(kind, init, decay, spe, STEPS)
    for i in range(trials):
      a, d, s = float(init[i]), float(decay[i]), int(spe[i])
      expect = [
        np.full(STEPS.shape, a),
        _np_inverse_time(a, d, s, STEPS),
        _np_exponential(a, 1.0 - d, s, STEPS),
      ][kind[i]]
      np.testing.assert_allclose(got[i], expect, rtol=1e-5)
  # decay = 0 is no decay for every kind.
  flat = _decayed_sweep(
    kind, np.full(trials, 0.3, np.float32), np.zeros(trials, np.float32), spe, STEPS
  )
  np.testing.assert_allclose(flat, np.full((trials, STEPS.size), 0.3), rtol=1e-6)

"""Learning-rate decay schedules, traceable in every argument.

optax's `exponential_decay` branches in Python on its rate, so it cannot be
vmapped over that rate; these are plain arithmetic on arrays and can.
`epoch = step // steps_per_epoch` counts from 0, so the first epoch runs at
`init_value` (the notes' table counts epochs from 1; shift `init_value` by one
decay step to match it).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from bnjax import registry

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]

# The schedule kinds; a search traces the choice as an index into this tuple.
SCHEDULES = registry.choices('lr_schedule')


def epoch_of(
  step: jax.typing.ArrayLike, steps_per_epoch: jax.typing.ArrayLike, *, staircase: bool = True
) -> jax.Array:
  """Epoch number of an optimizer step: whole epochs, or fractional if not staircase."""
  step = jnp.asarray(step, jnp.float32)
  epoch = step / jnp.asarray(steps_per_epoch, jnp.float32)
  return jnp.floor(epoch) if staircase else epoch


def inverse_time_decay(
  init_value: jax.typing.ArrayLike,
  decay_rate: jax.typing.ArrayLike,
  steps_per_epoch: jax.typing.ArrayLike,
  *,
  staircase: bool = True,
) -> Schedule:
  """`alpha = alpha0 / (1 + decay_rate * epoch)` (the notes' learning-rate decay)."""

  def schedule(step):
    return init_value / (1.0 + decay_rate * epoch_of(step, steps_per_epoch, staircase=staircase))

  return schedule


def exponential_decay(
  init_value: jax.typing.ArrayLike,
  rate: jax.typing.ArrayLike,
  steps_per_epoch: jax.typing.ArrayLike,
  *,
  staircase: bool = True,
) -> Schedule:
  """`alpha = alpha0 * rate ** epoch` (the notes: `0.95 ** epoch * alpha0`)."""

  def schedule(step):
    return init_value * jnp.power(rate, epoch_of(step, steps_per_epoch, staircase=staircase))

  return schedule


def decayed(
  kind: jax.typing.ArrayLike,
  init_value: jax.typing.ArrayLike,
  decay: jax.typing.ArrayLike,
  steps_per_epoch: jax.typing.ArrayLike,
) -> Schedule:
  """One schedule whose kind is a traced index into `SCHEDULES`.

  `decay` means the same thing to every kind: 0 is no decay, and for small
  values the two decaying kinds agree to first order. `inverse_time` is
  `alpha0 / (1 + decay * epoch)`; `exponential` is `alpha0 * (1 - decay) **
  epoch` (decay 0.05 is the notes' `0.95 ** epoch`).
  """
  inverse = inverse_time_decay(init_value, decay, steps_per_epoch)
  exponential = exponential_decay(init_value, 1.0 - decay, steps_per_epoch)

  def schedule(step):
    constant = jnp.broadcast_to(jnp.asarray(init_value, jnp.float32), ())
    candidates = {
      'constant': constant,
      'inverse_time': inverse(step),
      'exponential': exponential(step),
    }
    return registry.lookup('lr_schedule', candidates, kind)

  return schedule

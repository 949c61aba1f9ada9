"""The notes' optimizers as `optax.GradientTransformation`s.

All four are one transform with two exponentially weighted averages:

    v = beta1 * v + (1 - beta1) * g        (momentum; Adam's first moment)
    s = beta2 * s + (1 - beta2) * g^2      (RMSprop; Adam's second moment)
    w -= lr * v_hat / (sqrt(s_hat) + eps)

where sgd uses `v = g` and no `s`, momentum no `s`, RMSprop `v = g`, and only
Adam divides by the bias corrections `1 - beta^t`. When `family` is a Python
string the unused averages are not even stored; when it is a traced integer
(an index into `FAMILIES`) all four share one compiled program, which is what
lets a search put trials of different optimizers in one `vmap`.

Momentum here is an *average* of gradients. `optax.sgd(lr, momentum=b)` and
PyTorch's SGD keep a *sum*, `v = b * v + g`, so their effective step is
`1 / (1 - b)` times larger: `bnjax.momentum(lr, b)` equals
`optax.sgd(lr * (1 - b), momentum=b)`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from bnjax import registry
from bnjax.optim.schedules import Schedule

FAMILIES = registry.choices('optimizer')
# Per family: (keeps the gradient average v, divides by sqrt(s), bias-corrects).
_FLAGS = {
  'sgd': (False, False, False),
  'momentum': (True, False, False),
  'rmsprop': (False, True, False),
  'adam': (True, True, True),
}
LearningRate = jax.typing.ArrayLike | Schedule


class OptimizerState(NamedTuple):
  count: jax.Array  # int32 number of updates so far
  velocity: optax.Updates | None  # v, or None when the family needs none
  square: optax.Updates | None  # s, or None when the family needs none


def _family_flags(family):
  """(uses v, uses s, bias-corrects) as Python bools or traced booleans."""
  if isinstance(family, str):
    return _FLAGS[registry.check('optimizer', family)]
  return tuple(
    registry.lookup('optimizer', {name: flags[k] for name, flags in _FLAGS.items()}, family)
    for k in range(3)
  )


def _learning_rate(learning_rate: LearningRate, count: jax.Array) -> jax.Array:
  return learning_rate(count) if callable(learning_rate) else jnp.asarray(learning_rate)


def optimizer(
  learning_rate: LearningRate,
  family,
  *,
  beta1: jax.typing.ArrayLike = 0.9,
  beta2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
) -> optax.GradientTransformation:
  """The shared transform behind `sgd`, `momentum`, `rmsprop` and `adam`.

  Args:
    learning_rate: a number (traceable) or a schedule `step -> rate`, called
      with the number of updates done before this one.
    family: one of `FAMILIES`, or a traced integer index into it.
    beta1: weight of the old gradient average (momentum beta, Adam beta1).
    beta2: weight of the old squared-gradient average.
    eps: added to `sqrt(s_hat)`, outside the root as in the notes.
  """
  uses_v, uses_s, corrects = _family_flags(family)
  store_v, store_s = uses_v is not False, uses_s is not False

  def init_fn(params):
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    return OptimizerState(
      jnp.zeros([], jnp.int32), zeros() if store_v else None, zeros() if store_s else None
    )

  def update_fn(updates, state, params=None):
    del params
    count = state.count + 1
    t = count.astype(jnp.float32)
    velocity = square = None
    direction = updates
    if store_v:
      velocity = jax.tree.map(lambda v, g: beta1 * v + (1 - beta1) * g, state.velocity, updates)
      correction = jnp.where(corrects, 1 - jnp.power(beta1, t), 1.0)
      direction = jax.tree.map(lambda v, g: jnp.where(uses_v, v / correction, g), velocity, updates)
    if store_s:
      square = jax.tree.map(
        lambda s, g: beta2 * s + (1 - beta2) * jnp.square(g), state.square, updates
      )
      correction = jnp.where(corrects, 1 - jnp.power(beta2, t), 1.0)
      direction = jax.tree.map(
        lambda d, s: jnp.where(uses_s, d / (jnp.sqrt(s / correction) + eps), d), direction, square
      )
    rate = _learning_rate(learning_rate, state.count)
    new_updates = jax.tree.map(lambda d: (-rate * d).astype(d.dtype), direction)
    return new_updates, OptimizerState(count, velocity, square)

  return optax.GradientTransformation(init_fn, update_fn)


def sgd(learning_rate: LearningRate) -> optax.GradientTransformation:
  """`w -= lr * g`."""
  return optimizer(learning_rate, 'sgd')


def momentum(
  learning_rate: LearningRate, beta: jax.typing.ArrayLike = 0.9
) -> optax.GradientTransformation:
  """`v = beta * v + (1 - beta) * g; w -= lr * v` (see the module note on optax/PyTorch)."""
  return optimizer(learning_rate, 'momentum', beta1=beta)


def rmsprop(
  learning_rate: LearningRate, beta2: jax.typing.ArrayLike = 0.999, eps: jax.typing.ArrayLike = 1e-8
) -> optax.GradientTransformation:
  """`s = beta2 * s + (1 - beta2) * g^2; w -= lr * g / (sqrt(s) + eps)`."""
  return optimizer(learning_rate, 'rmsprop', beta2=beta2, eps=eps)


def adam(
  learning_rate: LearningRate,
  beta1: jax.typing.ArrayLike = 0.9,
  beta2: jax.typing.ArrayLike = 0.999,
  eps: jax.typing.ArrayLike = 1e-8,
) -> optax.GradientTransformation:
  """Adam with bias correction; agrees with `optax.adam`."""
  return optimizer(learning_rate, 'adam', beta1=beta1, beta2=beta2, eps=eps)

"""Gradient checking by two-sided differences, as in the notes.

    d_theta_approx[i] = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps)
    difference = ||d_theta_approx - d_theta|| / (||d_theta_approx|| + ||d_theta||)

About 1e-7 is great, 1e-5 worth a look, 1e-3 a bug. Both gradients are
computed in float64, where eps = 1e-7 is far above the rounding error. Turn
dropout off while checking (the notes: grad check doesn't work with dropout).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def grad_check(
  fn: Callable[..., jax.Array], params, *args, eps: float = 1e-7, batch_size: int = 256
) -> float:
  """Relative difference between `jax.grad(fn)` and two-sided differences.

  Args:
    fn: `fn(params, *args) -> scalar` cost.
    params: a pytree of float arrays, the point to check at.
    *args: further arguments to `fn`, held fixed.
    eps: the step of the differences.
    batch_size: parameters perturbed at once (memory against speed).

  Returns:
    `||g_approx - g|| / (||g_approx|| + ||g||)` as a Python float.
  """
  with jax.enable_x64(True):
    to64 = lambda tree: jax.tree.map(
      lambda a: (
        jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a
      ),
      tree,
    )
    flat, unravel = ravel_pytree(to64(params))

    @jax.jit  # One program for the whole check: the gradient and every difference.
    def difference(flat, args):
      cost = lambda theta: fn(unravel(theta), *args)
      exact = jax.grad(cost)(flat)

      def central(i):
        step = jnp.zeros_like(flat).at[i].set(eps)
        return (cost(flat + step) - cost(flat - step)) / (2 * eps)

      approx = jax.lax.map(central, jnp.arange(flat.size), batch_size=batch_size)
      numerator = jnp.linalg.norm(approx - exact)
      denominator = jnp.linalg.norm(approx) + jnp.linalg.norm(exact)
      return numerator / jnp.maximum(denominator, jnp.finfo(jnp.float64).tiny)

    return float(difference(flat, to64(args)))

"""Matmuls at a chosen input precision: float32, or bfloat16 inputs with float32 sums.

bfloat16 rounds both inputs of a matmul and sums the products in float32;
parameters, BN, the optimizer and the loss stay float32. The backward pass
is written out (`jax.custom_vjp`) so that its two matmuls run in bfloat16
too: on a CPU with AMX all three then take XLA's fast bfloat16 kernel
(docs/performance.md, "bfloat16 matmuls on a CPU with AMX").
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from bnjax import registry


def matmul(a: jax.Array, w: jax.Array, dtype: str = 'float32') -> jax.Array:
  """`a @ w`; with `dtype='bfloat16'` both inputs are rounded to bfloat16 and summed in float32.

  With bfloat16 the backward pass's two matmuls round their inputs too (the
  incoming gradient and the saved, rounded `a` and `w`) and sum in float32,
  so that all three matmuls of a layer's step run as bfloat16 dots. JAX's own
  transpose would multiply the float32 gradient by the bfloat16 operand: a
  mixed dot that XLA:CPU runs at float32 speed or slower.
  """
  if registry.check('matmul_dtype', dtype) == 'float32':
    return a @ w
  return _bfloat16_matmul(a, w, a.dtype, w.dtype)


def _dot32(a: jax.Array, b: jax.Array, dims: tuple) -> jax.Array:
  return lax.dot_general(a, b, (dims, ((), ())), preferred_element_type=jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bfloat16_matmul(a: jax.Array, w: jax.Array, a_dtype, w_dtype) -> jax.Array:
  del a_dtype, w_dtype  # the gradients' dtypes
  return _dot32(a.astype(jnp.bfloat16), w.astype(jnp.bfloat16), ((a.ndim - 1,), (0,)))


def _transposed_copy(x: jax.Array) -> jax.Array:
  """`x.T` [cols, rows] laid out with the rows minor in memory, not a strided view of `x`.

  The weight gradient `a.T @ g` contracts over the rows. XLA:CPU (jaxlib
  0.10) gives a bfloat16 dot to its fast kernel (about 3x float32 on AMX) only
  when the contracted axis of the left operand is minor; otherwise it
  computes the dot in float32. A plain transpose is a relabelling of `x`'s
  layout, so the dot would still read the rows as the major axis. Joining two
  halves makes XLA write a new array in the default layout; same values.
  """
  t = x.T
  half = t.shape[1] // 2
  return jnp.concatenate([t[:, :half], t[:, half:]], axis=1)


def _bfloat16_matmul_fwd(a, w, a_dtype, w_dtype):
  del a_dtype, w_dtype
  a16, w16 = a.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  a16_t = _transposed_copy(a16.reshape(-1, a.shape[-1]))
  return _dot32(a16, w16, ((a.ndim - 1,), (0,))), (a16_t, w16)


def _bfloat16_matmul_bwd(a_dtype, w_dtype, residuals, g):
  a16_t, w16 = residuals
  g16 = g.astype(jnp.bfloat16)
  da = _dot32(g16, w16, ((g.ndim - 1,), (1,)))  # g @ w.T, a's shape
  dw = _dot32(a16_t, g16.reshape(-1, g.shape[-1]), ((1,), (0,)))  # a.T @ g over all rows
  return da.astype(a_dtype), dw.astype(w_dtype)


_bfloat16_matmul.defvjp(_bfloat16_matmul_fwd, _bfloat16_matmul_bwd)

"""Channels-last convolution and pooling, and kernel draws that ignore padding.

Shapes are `[batch, length, channels]` (NWC) or `[batch, height, width,
channels]` (NHWC); kernels are `[*kernel, in, out]` (WIO or HWIO). Under a
`vmap` over trials with per-trial kernels and inputs, `conv` lowers to one
convolution with `feature_group_count` equal to the number of trials, not a
loop (`tests/test_cnn.py` checks the HLO).
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from bnjax.nn import stable_random

POOLS = ('max', 'avg', 'none')
_DIMENSIONS = {1: ('NWC', 'WIO', 'NWC'), 2: ('NHWC', 'HWIO', 'NHWC')}


def conv(x: jax.Array, w: jax.Array) -> jax.Array:
  """'SAME', stride-1 convolution of `x [batch, *spatial, in]` with `w [*kernel, in, out]`."""
  spatial_dims = x.ndim - 2
  return lax.conv_general_dilated(
    x, w, (1,) * spatial_dims, 'SAME', dimension_numbers=_DIMENSIONS[spatial_dims]
  )


def pool(x: jax.Array, kind: str) -> jax.Array:
  """'max' or 'avg' over windows of 2 with stride 2 on every spatial axis; 'none' is identity.

  An odd trailing position is dropped ('VALID'), so a length of 5 pools to 2.
  """
  if kind == 'none':
    return x
  window = (1,) + (2,) * (x.ndim - 2) + (1,)
  # Python scalars as initial values, so JAX picks its differentiable max / sum windows.
  if kind == 'max':
    return lax.reduce_window(x, -jnp.inf, lax.max, window, window, 'VALID')
  return lax.reduce_window(x, 0.0, lax.add, window, window, 'VALID') / math.prod(window)


def kernel_normal(key: jax.Array, kernel: tuple[int, ...], rows: int, cols: int) -> jax.Array:
  """`[*kernel, rows, cols]` standard normals, each element fixed by its indices alone.

  `stable_random` draws 2-D matrices; here each kernel tap draws its own
  padding-stable `[rows, cols]` from `fold_in(key, tap)`, so a real weight does
  not move when the channels around it are padded further.
  """
  draw = lambda tap: stable_random.normal(jax.random.fold_in(key, tap), (rows, cols))
  return jax.vmap(draw)(jnp.arange(math.prod(kernel))).reshape(kernel + (rows, cols))

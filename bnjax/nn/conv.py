"""Channels-last convolution and pooling, and kernel draws that ignore padding.

Shapes are `[batch, length, channels]` (NWC) or `[batch, height, width,
channels]` (NHWC); kernels are `[*kernel, in, out]` (WIO or HWIO).

Two ways to convolve, one result (`tests/test_cnn.py` checks both against
flax and their HLO against a loop):

* 'patches' (the default): the input's shifted copies, one per kernel tap,
  side by side on the channel axis (im2col), times the kernel as a
  `[taps * in, out]` matrix. Under a `vmap` over trials with per-trial
  kernels and inputs this is one batched matrix product per block.
* 'lax': `lax.conv_general_dilated`. Under the same `vmap` it lowers to one
  convolution with `feature_group_count` equal to the number of trials.

Both are one op for all trials, never a loop. XLA's CPU backend runs grouped
convolutions slowly (on a 2-core CPU, MNIST-1D shapes, `benchmarks/cnn_vmap.py`:
1485 / 3920 / 6662 ms per trial-epoch at 1 / 8 / 64 trials with 'lax',
against a few hundred with 'patches'), so 'patches' is the default. The
price is memory: the patches hold `taps` copies of each block's input.
"""

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from bnjax.nn import stable_random

POOLS = ('max', 'avg', 'none')
METHODS = ('patches', 'lax')
_DIMENSIONS = {1: ('NWC', 'WIO', 'NWC'), 2: ('NHWC', 'HWIO', 'NHWC')}


def conv(x: jax.Array, w: jax.Array, *, method: str = 'patches') -> jax.Array:
  """'SAME', stride-1 convolution of `x [batch, *spatial, in]` with `w [*kernel, in, out]`.

  `method` is 'patches' (im2col and one matrix product) or 'lax'
  (`lax.conv_general_dilated`); both compute the same (cross-correlation,
  as every deep learning library's "convolution").
  """
  spatial_dims = x.ndim - 2
  if method == 'lax':
    return lax.conv_general_dilated(
      x, w, (1,) * spatial_dims, 'SAME', dimension_numbers=_DIMENSIONS[spatial_dims]
    )
  if method != 'patches':
    raise ValueError(f'conv method must be one of {METHODS}; got {method!r}.')
  kernel = w.shape[:spatial_dims]
  spatial = x.shape[1:-1]
  # 'SAME' as XLA pads it: (k - 1) // 2 before, the rest after.
  padding = [(0, 0)] + [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel] + [(0, 0)]
  padded = jnp.pad(x, padding)
  taps = [
    padded[
      (slice(None), *(slice(o, o + s) for o, s in zip(offset, spatial, strict=True)), slice(None))
    ]
    for offset in itertools.product(*(range(k) for k in kernel))
  ]
  # Taps in the kernel's row-major order, input channels inside: w's own layout.
  patches = jnp.concatenate(taps, axis=-1)
  return patches @ w.reshape(-1, w.shape[-1])


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

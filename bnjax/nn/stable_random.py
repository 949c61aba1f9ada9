"""Random draws that do not depend on how far an array is padded.

A search pads every trial's layers to the widest trial in its bucket. If a
trial's initial weights or dropout masks were drawn with the padded shape,
its numbers would change with the widths of the trials that happen to share
its bucket. Here row `i` is drawn from `fold_in(key, i)` as a 1-D array, and
JAX's partitionable threefry (the default since JAX 0.5) makes element `j` of
a 1-D draw depend on `j` alone, so every element depends only on its index.
`tests/test_stable_random.py` pins that property.
"""

import jax
import jax.numpy as jnp


def _rows(draw, key: jax.Array, shape: tuple[int, int]) -> jax.Array:
  if len(shape) != 2:
    raise ValueError(f'padding-stable draws are 2-D [rows, cols]; got shape {shape}.')
  row_keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(shape[0]))
  return jax.vmap(lambda k: draw(k, (shape[1],)))(row_keys)


def normal(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
  """Standard normal `[rows, cols]` draws, each element fixed by its index.

  The leading `[:r, :c]` block equals the draw of shape `(r, c)`.
  """
  return _rows(lambda k, s: jax.random.normal(k, s, dtype), key, shape)


def uniform(key: jax.Array, shape: tuple[int, int], dtype=jnp.float32) -> jax.Array:
  """Uniform [0, 1) draws with the same padding stability as `normal`."""
  return _rows(lambda k, s: jax.random.uniform(k, s, dtype), key, shape)

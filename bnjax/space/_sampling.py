"""Uniform draws from a jax PRNG key, as float64 numpy arrays that only grow with `n`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from bnjax import registry
from bnjax.space._scalars import SpaceError

_BLOCK = 4096  # draws per jax call: one compiled shape serves every n


def check_key(key: Any) -> Any:
  """`key` if it looks like a jax PRNG key; a `SpaceError` for an int seed and the like."""
  if isinstance(registry.to_python(key), int) or not hasattr(key, 'shape'):
    raise SpaceError(f'sample needs a jax PRNG key, e.g. jax.random.key(0); got {key!r}')
  return key


@jax.jit
def _block_bits(key: Any, i: Any) -> jax.Array:
  return jax.random.bits(jax.random.fold_in(key, i), (_BLOCK, 2), jnp.uint32)


def uniform01(key: Any, n: int) -> np.ndarray:
  """`n` float64 uniforms on [0, 1); the first n of a longer draw (more trials only append).

  53 random bits per draw: float32 uniforms cannot reach every integer of a wide intlog range.
  """
  blocks = [np.asarray(_block_bits(check_key(key), i)) for i in range(-(-n // _BLOCK))]
  bits = np.concatenate([np.zeros((0, 2), np.uint32), *blocks])[:n].astype(np.uint64)
  return ((bits[:, 0] >> 5) * 2**26 + (bits[:, 1] >> 6)).astype(np.float64) * 2.0**-53


def uniform_index(key: Any, n: int, size: int) -> np.ndarray:
  """`n` ints uniform on 0..size-1 (bias below 2**-22 for size <= 2**31)."""
  return np.minimum(np.floor(uniform01(key, n) * size), size - 1).astype(np.int64)

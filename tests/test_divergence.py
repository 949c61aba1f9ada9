"""`all_finite` answers exactly what `jnp.all(jnp.isfinite(...))` answers, under jit and vmap."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnjax.divergence import all_finite

F32_MAX = float(np.finfo(np.float32).max)
SHAPES = ((), (1,), (7,), (3, 5), (2, 3, 4), (300, 40))
SPECIAL = (np.nan, np.inf, -np.inf)


def reference(tree) -> bool:
  return all(bool(np.all(np.isfinite(np.asarray(a, np.float64)))) for a in jax.tree.leaves(tree))


def tree_of(draw, dtype):
  """Three arrays, finite values at every scale up to the dtype's largest, maybe a few specials."""
  leaves = {}
  for name in ('w', 'b', 'm'):
    shape = draw(st.sampled_from(SHAPES))
    size = int(np.prod(shape))
    largest = float(jnp.finfo(dtype).max)
    magnitude = draw(st.sampled_from((1e-30, 1.0, largest**0.5, largest)))
    seed = draw(st.integers(0, 2**31 - 1))
    values = np.random.default_rng(seed).uniform(-1.0, 1.0, size) * magnitude
    for _ in range(draw(st.integers(0, 2))):
      if size:
        values[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIAL))
    leaves[name] = jnp.asarray(values.reshape(shape), dtype)
  return leaves


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from((jnp.float32, jnp.bfloat16, jnp.float16)))
def test_matches_isfinite_on_every_leaf(data, dtype):
  tree = tree_of(data.draw, dtype)
  assert bool(all_finite(tree)) == reference(tree)


def test_largest_finite_values_everywhere_are_finite():
  # The sum a naive check would take overflows here; the scaled dot does not.
  tree = [jnp.full((512, 512), F32_MAX), jnp.full((512,), -F32_MAX)]
  assert bool(all_finite(tree))
  assert not bool(all_finite(tree + [jnp.asarray([0.0, np.inf, -np.inf])]))


def test_integer_and_boolean_leaves_count_as_finite():
  # An optimizer's step count sits beside the floats: it must neither raise nor read as
  # diverged, and a tree with no float leaf at all is finite (whether a leaf is read or
  # skipped inside is not observable here).
  tree = {'count': jnp.asarray(2**31 - 1, jnp.int32), 'mask': jnp.ones(3, bool), 'x': jnp.ones(3)}
  assert bool(all_finite(tree))
  assert bool(all_finite({'count': jnp.zeros([], jnp.int32)}))  # no float leaf at all


def test_each_trial_of_a_vmapped_jitted_check_sees_only_its_own_leaves():
  # One program for every trial, as a search runs it: trial i holds one special value at a
  # different place in a different leaf, trial 0 none.
  num_trials, rows = 7, 33
  params = {'w': np.ones((num_trials, rows, 16), np.float32), 'b': np.ones((num_trials, 16))}
  params['b'] = params['b'].astype(np.float32)
  expected = [True]
  for trial in range(1, num_trials):
    leaf = 'w' if trial % 2 else 'b'
    flat = params[leaf][trial].reshape(-1)
    flat[(trial * 37) % flat.size] = SPECIAL[trial % 3]
    expected.append(False)
  assert np.asarray(jax.jit(jax.vmap(all_finite))(params)).tolist() == expected

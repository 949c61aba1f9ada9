"""Width and depth masking: a padded trial computes what its unpadded network computes."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnjax

PADDED = 6  # every hidden layer padded to this width
MAX_DEPTH = 3
IN, CLASSES, BATCH = 5, 4, 16


def unpadded(params, state, widths, depth):
  """The real network inside a padded one: slice every array to its real shape."""
  layers, states, fan_in = [], [], IN
  for i in range(depth):
    layer, width = params['layers'][i], widths[i]
    real = {'w': layer['w'][:fan_in, :width]}
    if 'b' in layer:
      real['b'] = layer['b'][:width]
    if 'bn' in layer:
      real['bn'] = jax.tree.map(lambda a, width=width: a[:width], layer['bn'])
    layers.append(real)
    states.append(jax.tree.map(lambda a, width=width: a[:width], state['layers'][i]))
    fan_in = width
  output = {'w': params['output']['w'][:fan_in], 'b': params['output']['b']}
  return {'layers': layers, 'output': output}, {'layers': states}


def outside(params, widths, depth):
  """A copy of a padded params tree with the real network's entries set to zero."""
  params = jax.tree.map(np.array, params)
  fan_in = IN
  for i in range(depth):
    layer, width = params['layers'][i], widths[i]
    layer['w'][:fan_in, :width] = 0
    for leaf in [layer.get('b'), *layer.get('bn', {}).values()]:
      if leaf is not None:
        leaf[:width] = 0
    fan_in = width
  params['output']['w'][:fan_in] = 0
  params['output']['b'][:] = 0
  return params


@functools.cache
def make_loss(masked, training, activation, placement):
  """Value and gradient of the cost; jitted once per case when masked.

  The unpadded reference changes shape with every example, so it runs
  eagerly instead of compiling each time.
  """

  def loss(params, state, x, y, widths, depth):
    options = dict(widths=widths, depth=depth) if masked else {}
    logits, new_state = bnjax.mlp_apply(
      params, state, x, training=training, activation=activation, bn_placement=placement, **options
    )
    cost = jnp.mean(bnjax.softmax_cross_entropy(logits, y)) + bnjax.l2_penalty(params, 0.1, 16)
    return cost, (logits, new_state)

  value_and_grad = jax.value_and_grad(loss, has_aux=True)
  return jax.jit(value_and_grad) if masked else value_and_grad


CASES = [
  (bn, act, place, training)
  for bn in (True, False)
  for act in ('relu', 'tanh', 'sigmoid')
  for place in ('before', 'after')
  for training in (True, False)
  if bn or (place == 'before' and training)
]


@pytest.mark.parametrize('batch_norm,activation,placement,training', CASES)
@settings(max_examples=5, deadline=None)
@given(
  widths=st.lists(st.integers(1, PADDED), min_size=MAX_DEPTH, max_size=MAX_DEPTH),
  depth=st.integers(1, MAX_DEPTH),
  seed=st.integers(0, 2**16),
)
def test_padded_equals_unpadded(batch_norm, activation, placement, training, widths, depth, seed):
  key_init, key_x, key_y = jax.random.split(jax.random.key(seed), 3)
  params, state = bnjax.mlp_init(
    key_init,
    IN,
    (PADDED,) * MAX_DEPTH,
    CLASSES,
    batch_norm=batch_norm,
    bn_placement=placement,
    widths=jnp.asarray(widths),
    depth=depth,
  )
  if batch_norm:  # Non-trivial running statistics, so eval mode is tested too.
    state = jax.tree.map(lambda a: a + 0.3 * jax.random.uniform(key_x, a.shape), state)
  x = jax.random.normal(key_x, (BATCH, IN))
  y = jax.random.randint(key_y, (BATCH,), 0, CLASSES)
  masked = make_loss(True, training, activation, placement)
  plain = make_loss(False, training, activation, placement)
  (cost, (logits, new_state)), grads = masked(params, state, x, y, jnp.asarray(widths), depth)
  small_params, small_state = unpadded(params, state, widths, depth)
  (cost_ref, (logits_ref, state_ref)), grads_ref = plain(
    small_params, small_state, x, y, None, None
  )
  # Padded and unpadded arrays have different shapes, so XLA may sum the same
  # real terms in another order (the padded ones add exact zeros): they agree
  # to float32 rounding, a few ulps per sum of at most 6 terms, amplified by
  # BN's 1 / std and the backward pass. Over 160 drawn cases the worst error
  # was a tenth of these tolerances.
  chex.assert_trees_all_close(cost, cost_ref, rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
  _, sliced_state = unpadded(params, new_state, widths, depth)
  chex.assert_trees_all_close(sliced_state, state_ref, rtol=1e-5, atol=1e-6)
  sliced_grads, _ = unpadded(grads, state, widths, depth)
  chex.assert_trees_all_close(sliced_grads, grads_ref, rtol=1e-4, atol=1e-5)
  # Everything outside the real network gets exactly zero gradient: masked
  # units are multiplied by 0, skipped layers are selected out.
  for leaf in jax.tree.leaves(outside(grads, widths, depth)):
    np.testing.assert_array_equal(leaf, 0.0)


def test_init_ignores_padding_and_uses_real_fan_in():
  key = jax.random.key(3)
  widths, depth = jnp.asarray([3, 5, 2]), 2
  small, _ = bnjax.mlp_init(key, IN, (6, 6, 6), CLASSES, widths=widths, depth=depth)
  large, _ = bnjax.mlp_init(key, IN, (40, 40, 40), CLASSES, widths=widths, depth=depth)
  # Exact across shapes: init is elementwise arithmetic on padding-stable
  # draws (see test_stable_random.py), with no sum whose order could change.
  chex.assert_trees_all_equal(
    unpadded(small, small, [3, 5, 2], 2)[0], unpadded(large, large, [3, 5, 2], 2)[0]
  )
  # Padded and skipped weights start at exactly zero, so they add nothing to L2.
  for params in (small, large):
    for w in bnjax.weight_matrices(outside(params, [3, 5, 2], 2)):
      np.testing.assert_array_equal(w, 0.0)
  assert not jnp.any(large['layers'][2]['w'])
  # He init with the real fan-in: layer 1 has fan-in 3 (not 40).
  wide, _ = bnjax.mlp_init(key, IN, (400, 400), CLASSES, widths=jnp.asarray([300, 400]))
  std = float(jnp.std(wide['layers'][1]['w'][:300, :]))
  assert std == pytest.approx(np.sqrt(2 / 300), rel=0.02)


def test_depth_masking_needs_equal_sizes():
  with pytest.raises(ValueError, match='hidden size must be equal'):
    bnjax.mlp_init(jax.random.key(0), IN, (6, 4), CLASSES, depth=1)


def test_a_depth_bound_skips_layers_and_changes_no_number():
  # A chunk of trials 1 and 2 layers deep, padded to 3: with the chunk's
  # deepest (2, without the trial axis) as `depth_bound`, the third layer is
  # a branch not taken instead of work computed and selected away.
  depths = jnp.asarray([1, 2])
  keys = jax.random.split(jax.random.key(7), 2)
  x = jax.random.normal(jax.random.key(8), (BATCH, IN))
  y = jax.random.randint(jax.random.key(9), (BATCH,), 0, CLASSES)

  def trial(key, depth, bound):
    widths = jnp.asarray([PADDED] * MAX_DEPTH)
    params, state = bnjax.mlp_init(
      key, IN, (PADDED,) * MAX_DEPTH, CLASSES, widths=widths, depth=depth
    )

    def loss(params):
      options = dict(widths=widths, depth=depth, depth_bound=bound, keep_prob=0.8)
      logits, new_state = bnjax.mlp_apply(params, state, x, training=True, key=key, **options)
      return jnp.mean(bnjax.softmax_cross_entropy(logits, y)), (logits, new_state)

    return jax.value_and_grad(loss, has_aux=True)(params)

  selected = lambda keys, depths: jax.vmap(lambda k, d: trial(k, d, None))(keys, depths)
  skipped = lambda keys, depths: jax.vmap(lambda k, d: trial(k, d, jnp.max(depths)))(keys, depths)
  # Only the bound without a trial axis keeps a `cond`: vmap turns a batched one into a select.
  assert 'cond[' in str(jax.make_jaxpr(skipped)(keys, depths))
  assert 'cond[' not in str(jax.make_jaxpr(selected)(keys, depths))
  # The branch returns what the select picked: the layer's input and its old BN state,
  # and no gradient reaches the skipped layer. (Two programs: equal to rounding.)
  want, got = jax.jit(selected)(keys, depths), jax.jit(skipped)(keys, depths)
  chex.assert_trees_all_close(got, want, rtol=1e-6, atol=1e-7)
  (_, (_, state)), grads = got
  np.testing.assert_array_equal(grads['layers'][2]['w'], 0.0)
  np.testing.assert_array_equal(state['layers'][2]['mean'], 0.0)
  # Trial 0 (depth 1) gets no gradient in layer 1 either: the chunk's bound of 2 runs
  # that layer, and the mask selects it away for trial 0.
  np.testing.assert_array_equal(grads['layers'][1]['w'][0], 0.0)

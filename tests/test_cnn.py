"""The CNN: flax.linen as reference, and channel and depth masking (padded equals unpadded)."""

import functools
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from bnjax.nn import cnn, conv
from bnjax.nn.losses import l2_penalty, softmax_cross_entropy, weight_matrices

PADDED = 3  # every block padded to this many channels
MAX_DEPTH = 3
CLASSES, BATCH = 3, 4
INPUTS = {1: (8, 2), 2: (8, 8, 2)}  # (length, channels) and (height, width, channels)
POOL = {1: 'max', 2: 'avg'}  # one pooling per rank, so each is covered


def unpadded(params, state, counts, depth, head='global_avg'):
  """The real network inside a padded one: slice every array to its real shape."""
  blocks, states, fan_in = [], [], params['blocks'][0]['w'].shape[-2]
  for i in range(depth):
    block, width = params['blocks'][i], counts[i]
    real = {'w': block['w'][..., :fan_in, :width]}
    if 'b' in block:
      real['b'] = block['b'][:width]
    if 'bn' in block:
      real['bn'] = jax.tree.map(lambda a, width=width: a[:width], block['bn'])
    blocks.append(real)
    states.append(jax.tree.map(lambda a, width=width: a[:width], state['blocks'][i]))
    fan_in = width
  w = params['output']['w']
  if head == 'flatten':
    channels = params['blocks'][depth - 1]['w'].shape[-1]
    w = w.reshape(-1, channels, w.shape[-1])[:, :fan_in].reshape(-1, w.shape[-1])
  else:
    w = w[:fan_in]
  return {'blocks': blocks, 'output': {'w': w, 'b': params['output']['b']}}, {'blocks': states}


def outside(params, counts, depth, head='global_avg'):
  """A copy of a padded params tree with the real network's entries set to zero."""
  params = jax.tree.map(np.array, params)
  fan_in = params['blocks'][0]['w'].shape[-2]
  for i in range(depth):
    block, width = params['blocks'][i], counts[i]
    block['w'][..., :fan_in, :width] = 0
    for leaf in [block.get('b'), *block.get('bn', {}).values()]:
      if leaf is not None:
        leaf[:width] = 0
    fan_in = width
  w = params['output']['w']
  if head == 'flatten':  # rows are (position, channel) pairs; a view, so this writes w
    w.reshape(-1, params['blocks'][depth - 1]['w'].shape[-1], w.shape[-1])[:, :fan_in] = 0
  else:
    w[:fan_in] = 0
  params['output']['b'][:] = 0
  return params


def make_loss(training, activation, placement, pool, head):
  """Cost, logits and new BN state, with their gradient; masks optional keywords."""

  def loss(params, state, x, y, key, **masks):
    logits, new_state = cnn.cnn_apply(
      params,
      state,
      x,
      training=training,
      key=key,
      keep_prob=0.75,
      activation=activation,
      bn_placement=placement,
      pool=pool,
      head=head,
      **masks,
    )
    cost = jnp.mean(softmax_cross_entropy(logits, y)) + l2_penalty(params, 0.1, BATCH)
    return cost, (logits, new_state)

  return jax.value_and_grad(loss, has_aux=True)


# (rank, batch_norm, placement, training, activation, head). 1-D: every BN
# setting with relu, tanh and sigmoid. 2-D runs the same masking code with other
# convolution and pooling shapes, and the flattening head (no depth mask).
SETTINGS = [
  (1, False, 'before', True, 'relu', 'global_avg'),
  (1, True, 'before', True, 'tanh', 'global_avg'),
  (1, True, 'before', False, 'relu', 'global_avg'),
  (1, True, 'after', True, 'sigmoid', 'global_avg'),
  (1, True, 'after', False, 'tanh', 'global_avg'),
  (2, True, 'before', True, 'relu', 'global_avg'),
  (2, True, 'after', False, 'tanh', 'global_avg'),
  (2, False, 'before', True, 'tanh', 'flatten'),
]
# XLA's optimization passes cost more than they save on these tiny programs,
# and change only the last bits of the numbers, which the tolerances cover.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _masks(head, counts, depth):
  if head == 'flatten':
    return dict(channel_counts=counts)
  return dict(channel_counts=counts, depth=depth)


def _loss(setting):
  rank, _, placement, training, activation, head = setting
  return make_loss(training, activation, placement, POOL[rank], head)


def _padded(key, counts, depth):
  """Per setting: params, non-trivial BN state, a batch, a dropout key, and value-and-grad."""
  results = []
  for setting in SETTINGS:
    rank, batch_norm, placement, _, _, head = setting
    key_init, key_x, key_y, key_drop = jax.random.split(key, 4)
    masks = _masks(head, counts, depth)
    params, state = cnn.cnn_init(
      key_init,
      INPUTS[rank],
      (PADDED,) * MAX_DEPTH,
      CLASSES,
      kernel_size=3,
      pool=POOL[rank],
      head=head,
      batch_norm=batch_norm,
      bn_placement=placement,
      **masks,
    )
    # Non-trivial running statistics, so eval mode is tested too.
    state = jax.tree.map(lambda a, k=key_x: a + 0.3 * jax.random.uniform(k, a.shape), state)
    x = jax.random.normal(key_x, (BATCH,) + INPUTS[rank])
    y = jax.random.randint(key_y, (BATCH,), 0, CLASSES)
    inputs = (params, state, x, y, key_drop)
    results.append((inputs, _loss(setting)(*inputs, **masks)))
  return results


@functools.cache
def padded_program():
  """`_padded` compiled once: every drawn architecture shares its shapes."""
  counts, depth = jnp.ones(MAX_DEPTH, jnp.int32), jnp.int32(1)
  return jax.jit(_padded).lower(jax.random.key(0), counts, depth).compile(FAST_COMPILE)


def _unpadded(inputs):
  """Every setting's value-and-grad for the real networks, unmasked."""
  return [_loss(setting)(*args) for args, setting in zip(inputs, SETTINGS, strict=True)]


@settings(max_examples=3, deadline=None)
@given(
  counts=st.lists(st.integers(1, PADDED), min_size=MAX_DEPTH, max_size=MAX_DEPTH),
  depth=st.integers(1, MAX_DEPTH),
  seed=st.integers(0, 2**16),
)
def test_padded_equals_unpadded(counts, depth, seed):
  padded = padded_program()(jax.random.key(seed), jnp.asarray(counts), jnp.asarray(depth))
  real_depths = [MAX_DEPTH if setting[-1] == 'flatten' else depth for setting in SETTINGS]
  real_inputs = [
    unpadded(params, state, counts, real_depth, setting[-1]) + tuple(batch)
    for ((params, state, *batch), _), real_depth, setting in zip(
      padded, real_depths, SETTINGS, strict=True
    )
  ]
  # The real shapes change with every example: one compile for all settings.
  reference = jax.jit(_unpadded).lower(real_inputs).compile(FAST_COMPILE)
  for (inputs, value), value_ref, real_depth, setting in zip(
    padded, reference(real_inputs), real_depths, SETTINGS, strict=True
  ):
    note(f'setting (rank, batch_norm, placement, training, activation, head): {setting}')
    head = setting[-1]
    (cost, (logits, new_state)), grads = value
    (cost_ref, (logits_ref, state_ref)), grads_ref = value_ref
    # Padded and unpadded convolutions have different shapes, so XLA may sum
    # the same real terms in another order (the padded ones add exact zeros):
    # they agree to float32 rounding, a few ulps per sum of at most 3 * 3 * 3
    # terms, amplified by BN's 1 / std and the backward pass.
    chex.assert_trees_all_close(cost, cost_ref, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(logits, logits_ref, rtol=1e-5, atol=1e-5)
    params, state = inputs[:2]
    _, sliced_state = unpadded(params, new_state, counts, real_depth, head)
    chex.assert_trees_all_close(sliced_state, state_ref, rtol=1e-5, atol=1e-6)
    sliced_grads, _ = unpadded(grads, state, counts, real_depth, head)
    chex.assert_trees_all_close(sliced_grads, grads_ref, rtol=1e-4, atol=1e-5)
    # Everything outside the real network gets exactly zero gradient: padded
    # channels are multiplied by 0, skipped blocks are selected out.
    for leaf in jax.tree.leaves(outside(grads, counts, real_depth, head)):
      np.testing.assert_array_equal(leaf, 0.0)
    # Skipped blocks keep their BN state exactly.
    for i in range(real_depth, MAX_DEPTH):
      chex.assert_trees_all_equal(new_state['blocks'][i], state['blocks'][i])


class FlaxCNN(nn.Module):
  """The same network in flax.linen: Conv (no bias) -> BatchNorm -> act -> pool, mean, Dense."""

  channels: tuple[int, ...]
  kernel: tuple[int, ...]
  momentum: float
  eps: float

  @nn.compact
  def __call__(self, x, training):
    window = (2,) * len(self.kernel)
    for size in self.channels:
      x = nn.Conv(size, self.kernel, padding='SAME', use_bias=False)(x)
      x = nn.BatchNorm(
        use_running_average=not training,
        momentum=self.momentum,
        epsilon=self.eps,
        use_fast_variance=False,
      )(x)
      x = nn.max_pool(nn.relu(x), window, strides=window)
    x = jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
    return nn.Dense(CLASSES)(x)


def _flax_variables(params, state):
  """Our params and state under flax's names."""
  variables = {'params': {}, 'batch_stats': {}}
  for i, (block, stats) in enumerate(zip(params['blocks'], state['blocks'], strict=True)):
    variables['params'][f'Conv_{i}'] = {'kernel': block['w']}
    bn = {'scale': block['bn']['scale'], 'bias': block['bn']['offset']}
    variables['params'][f'BatchNorm_{i}'] = bn
    variables['batch_stats'][f'BatchNorm_{i}'] = dict(stats)
  variables['params']['Dense_0'] = {'kernel': params['output']['w'], 'bias': params['output']['b']}
  return variables


@pytest.mark.parametrize('input_shape', [(8, 2), (8, 6, 3)], ids=['1d', '2d_nhwc'])
def test_matches_flax_linen(input_shape):
  channels, momentum, eps = (3, 4), 0.8, 1e-3
  kernel = (3,) * (len(input_shape) - 1)
  model = FlaxCNN(channels, kernel, momentum, eps)

  def both(key):
    """Ours and flax's logits and new BN statistics, in training and in eval mode."""
    key_init, key_x, key_stats = jax.random.split(key, 3)
    params, state = cnn.cnn_init(key_init, input_shape, channels, CLASSES, kernel_size=kernel)
    # Non-trivial scale, offset and running statistics, so eval mode means something.
    params, state = jax.tree.map(
      lambda a: a + jax.random.uniform(key_stats, a.shape, minval=0.2, maxval=0.8), (params, state)
    )
    x = 1.5 + 2.0 * jax.random.normal(key_x, (5,) + input_shape)
    ours, theirs = {}, {}
    for training in (True, False):
      ours[training] = cnn.cnn_apply(
        params, state, x, training=training, bn_momentum=momentum, bn_eps=eps
      )
      variables = _flax_variables(params, state)
      logits, updates = model.apply(variables, x, training, mutable=['batch_stats'])
      stats = updates['batch_stats']
      theirs[training] = logits, {'blocks': [stats[f'BatchNorm_{i}'] for i in range(len(channels))]}
    return state, ours, theirs

  key = jax.random.key(5)
  state, ours, theirs = jax.jit(both).lower(key).compile(FAST_COMPILE)(key)
  for training in (True, False):
    # An independent implementation: the same formulas in another order of float32 operations.
    np.testing.assert_allclose(ours[training][0], theirs[training][0], rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(ours[training][1], theirs[training][1], rtol=1e-5, atol=1e-6)
  # The training step really moved the statistics; eval mode left them alone.
  assert np.abs(ours[True][1]['blocks'][1]['var'] - state['blocks'][1]['var']).min() > 1e-3
  chex.assert_trees_all_equal(ours[False][1], state)


def test_init_ignores_padding_and_uses_real_fan_in():
  counts, depth = [2, 3, 1], 2

  def inits(key):
    """The same real networks inside two paddings, a flattening head, and a wide one."""
    options = dict(kernel_size=(3, 2), channel_counts=jnp.asarray(counts), depth=depth)
    flat = dict(head='flatten', pool='avg', channel_counts=jnp.asarray([2, 1]))
    return {
      'small': cnn.cnn_init(key, (8, 8, 2), (3, 3, 3), CLASSES, **options)[0],
      'large': cnn.cnn_init(key, (8, 8, 2), (7, 7, 7), CLASSES, **options)[0],
      'small_flat': cnn.cnn_init(key, (8, 2), (3, 3), CLASSES, **flat)[0],
      'large_flat': cnn.cnn_init(key, (8, 2), (5, 6), CLASSES, **flat)[0],
      'wide': cnn.cnn_init(key, (8, 2), (64, 64), CLASSES, channel_counts=jnp.asarray([40, 64]))[0],
    }

  key = jax.random.key(3)
  params = jax.jit(inits).lower(key).compile(FAST_COMPILE)(key)
  # Exact across shapes: init is elementwise arithmetic on padding-stable
  # draws (see test_stable_random.py), with no sum whose order could change.
  chex.assert_trees_all_equal(
    unpadded(params['small'], params['small'], counts, depth)[0],
    unpadded(params['large'], params['large'], counts, depth)[0],
  )
  chex.assert_trees_all_equal(
    unpadded(params['small_flat'], params['small_flat'], [2, 1], 2, 'flatten')[0],
    unpadded(params['large_flat'], params['large_flat'], [2, 1], 2, 'flatten')[0],
  )
  # Padded and skipped weights start at exactly zero, so they add nothing to L2.
  for name, real_depth, head in [('small', depth, 'global_avg'), ('large', depth, 'global_avg')]:
    for w in weight_matrices(outside(params[name], counts, real_depth, head)):
      np.testing.assert_array_equal(w, 0.0)
  for name in ('small_flat', 'large_flat'):
    for w in weight_matrices(outside(params[name], [2, 1], 2, 'flatten')):
      np.testing.assert_array_equal(w, 0.0)
  assert not np.any(params['large']['blocks'][2]['w'])
  # And real ones do not (a draw of exactly 0.0 has probability 0).
  assert np.all(params['large']['blocks'][1]['w'][..., :2, :3])
  assert np.all(params['large_flat']['output']['w'].reshape(2, 6, CLASSES)[:, :1])
  # He with the real fan-in, kernel taps * real input channels: 3 * 2 in block 0
  # (not 2), 3 * 40 in block 1 (not 3 * 64). The standard error of a std from n
  # draws is about 1 / sqrt(2n): 4.6% for block 0's 240, 0.8% for block 1's
  # 7680; the tolerances are over 3 of them, and a wrong fan-in misses by 20%+.
  blocks = params['wide']['blocks']
  assert float(jnp.std(blocks[0]['w'][..., :40])) == pytest.approx(np.sqrt(2 / 6), rel=0.15)
  assert float(jnp.std(blocks[1]['w'][:, :40])) == pytest.approx(np.sqrt(2 / 120), rel=0.03)


@pytest.mark.parametrize(
  'x_shape,kernel',
  [((3, 9, 2), (4,)), ((3, 9, 2), (5,)), ((2, 7, 6, 3), (3, 2)), ((2, 5, 5, 1), (1, 1))],
)
def test_patches_convolution_equals_xla_convolution(x_shape, kernel):
  # Even kernels too: 'SAME' pads one more after than before, as XLA does.
  x = jax.random.normal(jax.random.key(0), x_shape)
  w = jax.random.normal(jax.random.key(1), kernel + (x_shape[-1], 4))
  want = conv.conv(x, w, method='lax')
  np.testing.assert_allclose(conv.conv(x, w), want, rtol=1e-5, atol=1e-5)
  grads = [
    jax.grad(lambda x, w, m=m: jnp.sum(conv.conv(x, w, method=m) ** 2), (0, 1))(x, w)
    for m in conv.METHODS
  ]
  chex.assert_trees_all_close(*grads, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="conv method must be one of \\('patches', 'lax'\\)"):
    conv.conv(x, w, method='fft')


def _lowered_trials(conv_method, trials, blocks):
  """`jit(vmap)` of a training step's value and gradient, lowered: one trial per row."""

  def trial(params, state, x, y, counts, depth):
    def loss(params):
      logits, new_state = cnn.cnn_apply(
        params,
        state,
        x,
        training=True,
        channel_counts=counts,
        depth=depth,
        conv_method=conv_method,
      )
      return jnp.mean(softmax_cross_entropy(logits, y)), new_state

    return jax.value_and_grad(loss, has_aux=True)(params)

  # Shapes are all lowering needs: every trial its own params, BN state and
  # mini-batch (as in a search), and its own channel counts and depth.
  init = functools.partial(cnn.cnn_init, jax.random.key(0), (8, 2), (4,) * blocks, CLASSES)
  per_trial = lambda a: jax.ShapeDtypeStruct((trials,) + a.shape, a.dtype)
  args = jax.tree.map(per_trial, jax.eval_shape(init)) + (
    jax.ShapeDtypeStruct((trials, BATCH, 8, 2), jnp.float32),
    jax.ShapeDtypeStruct((trials, BATCH), jnp.int32),
    jax.ShapeDtypeStruct((trials, blocks), jnp.int32),
    jax.ShapeDtypeStruct((trials,), jnp.int32),
  )
  lowered = jax.jit(jax.vmap(trial)).lower(*args)
  # What JAX emits, and what XLA's CPU compiler made of it: no pass may add a loop.
  return lowered.as_text(), lowered.compile().as_text()


def _ops(text, opcode):
  return [line for line in text.splitlines() if re.search(rf'= [^=]*\b{opcode}[( ]', line)]


def test_vmapped_trials_lower_to_one_grouped_convolution_per_block():
  trials, blocks = 3, 2
  for text, opcode in zip(
    _lowered_trials('lax', trials, blocks), ('stablehlo.convolution', 'convolution'), strict=True
  ):
    convolutions = _ops(text, opcode)
    # Forward one per block; backward, a weight gradient per block and an input
    # gradient for every block but the first: each one op for all trials.
    assert len(convolutions) == 3 * blocks - 1, convolutions
    for line in convolutions:
      assert re.search(rf'(feature|batch)_group_count\s*=\s*{trials}\b', line), line
    assert not re.search(r'\bwhile\b', text)


def test_vmapped_trials_lower_to_one_batched_matmul_per_block_with_patches():
  trials, blocks = 3, 2
  emitted, compiled = _lowered_trials('patches', trials, blocks)
  dots = _ops(emitted, 'stablehlo.dot_general')
  # The convolutions as with 'lax' (3 * blocks - 1), and the dense head's
  # forward, weight gradient and input gradient: each one op for all trials.
  assert len(dots) == 3 * blocks - 1 + 3, dots
  for line in dots:
    assert 'batching_dims = [0] x [0]' in line and f'tensor<{trials}x' in line, line
  for line in _ops(compiled, 'dot'):
    assert 'lhs_batch_dims={0}' in line and 'rhs_batch_dims={0}' in line, line
  for text in (emitted, compiled):
    assert not _ops(text, '(stablehlo.)?convolution')
    assert not re.search(r'\bwhile\b', text)


@pytest.mark.parametrize(
  'arguments,message',
  [
    (dict(input_shape=(8, 2), head='flatten', depth=2), "use head='global_avg'"),
    (dict(input_shape=(4, 1), channels=(2, 2, 2)), r'block 2 would pool a spatial shape of \(1,\)'),
    (dict(input_shape=(8, 8, 1), kernel_size=(3, 3, 3)), 'kernel_size must be a positive int or 2'),
    (dict(input_shape=(8,)), r'\(length, channels\) for 1-D'),
    (dict(input_shape=(8, 2), pool='mean'), "pool must be one of \\('max', 'avg', 'none'\\)"),
  ],
)
def test_init_rejects_what_cannot_be_built(arguments, message):
  arguments = {'channels': (2, 2), **arguments}
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(lambda: cnn.cnn_init(jax.random.key(0), num_classes=CLASSES, **arguments))


def test_apply_names_the_shapes_it_takes():
  init = lambda: cnn.cnn_init(jax.random.key(0), (8, 8, 3), (2,), CLASSES, head='flatten')
  params, state = jax.eval_shape(init)
  apply = lambda x, **options: jax.eval_shape(
    lambda p, s: cnn.cnn_apply(p, s, x, training=True, **options), params, state
  )
  for x in (jnp.zeros((4, 8, 3)), jnp.zeros((4, 8, 8, 1))):
    with pytest.raises(ValueError, match=r'the first block takes \[batch, height, width, 3\]'):
      apply(x)
  x = jnp.zeros((4, 8, 8, 3))
  chex.assert_shape(apply(x, head='flatten')[0], (4, CLASSES))
  with pytest.raises(ValueError, match="output layer takes 32 features, but head='global_avg'"):
    apply(x)
  with pytest.raises(
    ValueError,
    match="32 features, but head='flatten' and pool='none' on this input give 128",
  ):
    apply(x, head='flatten', pool='none')

"""A batch-normalized CNN as two pure functions, with channel and depth masking.

    x -> [conv, (b)] -> BN -> g -> pool -> ... -> global average | flatten -> [W, b] -> logits

The input's rank picks the convolution: `[batch, length, channels]` (NWC, e.g.
MNIST-1D) gives 1-D convolutions, `[batch, height, width, channels]` (NHWC)
2-D ones. Convolutions have stride 1 and 'SAME' padding; pooling, unless
'none', halves every spatial axis in every block (window 2, stride 2).

Masking follows the MLP (`mlp.py`). `channels` fixes the array shapes, and
optional traced `channel_counts` (real channels per block) and `depth` (real
number of blocks) let trials of different architectures share them. Channels
past a block's count are zeroed after the activation (so they feed nothing and
get no gradient), their kernels start at zero (nothing in L2), and the init
fan-in is `kernel taps * real input channels`. BN is per channel, so a padded
channel has statistics of its own and never touches a real channel's.

Depth cannot mask the MLP's way. A skipped MLP layer passes its input through
with `where(active, output, input)`, which needs both sides to have one shape,
but a pooling block halves the spatial axes. Pooling only at block indices
every trial of a bucket shares would make a trial's network depend on its
neighbours; keeping every block at full resolution with masked positions would
charge every trial for unpooled convolutions. Instead every block always
pools, so each block's shape is static, and the head reads the last real
block: the features it gets are `where(i < depth, global_average(block_i),
features)`, which blocks past `depth` pass through unchanged. Those blocks
still run (as the MLP's skipped layers do) on zero kernels; their output is
selected away (exactly zero gradient) and their BN state is kept. A trial of
depth `d` computes the `d`-block network, pooling `d` times, whatever the
bucket's deepest trial; `tests/test_cnn.py` proves it. A flattening head's
input size depends on where it reads, so `head='flatten'` takes no `depth`:
trials of different depths go to different buckets there.
"""

import math
from typing import Any

import jax
import jax.numpy as jnp

from bnjax import registry
from bnjax.nn import conv, normalization, stable_random
from bnjax.nn.mlp import (
  INIT_GAINS,
  OUTPUT_LAYER_STREAM,
  dropout,
  init_layer,
  layer_columns,
  normalize_and_activate,
  scale_weights,
)

HEADS = ('global_avg', 'flatten')


def _check(input_shape, channels, *, pool, head, bn_placement, activation=None, depth=None):
  """Static checks; returns the spatial shape after the last block."""
  if len(input_shape) not in (2, 3) or any(d < 1 for d in input_shape):
    raise ValueError(
      'input_shape is (length, channels) for 1-D or (height, width, channels) for 2-D '
      f'convolutions, without the batch axis; got {tuple(input_shape)}.'
    )
  if not channels or any(c < 1 for c in channels):
    raise ValueError(f'channels must be a non-empty list of positive ints; got {channels}.')
  if pool not in conv.POOLS:
    raise ValueError(f'pool must be one of {conv.POOLS}; got {pool!r}.')
  if head not in HEADS:
    raise ValueError(f'head must be one of {HEADS}; got {head!r}.')
  registry.check('bn_placement', bn_placement)
  if activation is not None:
    registry.check('activation', activation)
  if head == 'flatten' and depth is not None:
    raise ValueError(
      "depth masking reads the head's input from the last real block, and a flattened "
      "block's size depends on which one: use head='global_avg', or one bucket per depth."
    )
  spatial = tuple(input_shape[:-1])
  for i in range(len(channels)):
    if pool != 'none':
      if min(spatial) < 2:
        raise ValueError(
          f'block {i} would pool a spatial shape of {spatial} down to nothing: use fewer '
          f"than {len(channels)} blocks, pool='none' or larger inputs."
        )
      spatial = tuple(s // 2 for s in spatial)
  return spatial


def _kernel_shape(kernel_size, spatial_dims):
  sizes = (kernel_size,) * spatial_dims if isinstance(kernel_size, int) else tuple(kernel_size)
  if len(sizes) != spatial_dims or any(int(k) < 1 for k in sizes):
    raise ValueError(
      f'kernel_size must be a positive int or {spatial_dims} of them for '
      f'{spatial_dims}-D inputs; got {kernel_size}.'
    )
  return tuple(int(k) for k in sizes)


def _channel_masks(channels, channel_counts):
  """Per block, a float mask of its real channels, or None when unmasked."""
  if channel_counts is None:
    return [None] * len(channels)
  counts = jnp.asarray(channel_counts)
  return [(jnp.arange(size) < counts[i]).astype(jnp.float32) for i, size in enumerate(channels)]


def cnn_init(
  key: jax.Array,
  input_shape,
  channels,
  num_classes: int,
  *,
  kernel_size: int | tuple[int, ...] = 3,
  pool: str = 'max',
  head: str = 'global_avg',
  batch_norm: bool = True,
  bn_placement: str = 'before',
  init: Any = 'he',
  channel_counts: jax.typing.ArrayLike | None = None,
  depth: jax.typing.ArrayLike | None = None,
  dtype: Any = jnp.float32,
) -> tuple[dict, dict]:
  """Initial `(params, state)` of the CNN.

  Args:
    key: PRNG key.
    input_shape: `(length, in_channels)` or `(height, width, in_channels)`.
    channels: output channels of each block (the padded shapes).
    num_classes: output width.
    kernel_size: an int, or one per spatial axis (static).
    pool: 'max', 'avg' (window 2, stride 2, in every block) or 'none'.
    head: 'global_avg' (mean over the spatial axes) or 'flatten'.
    batch_norm: put a BN in every block.
    bn_placement: 'before' (conv -> BN -> g) or 'after' (g -> BN) the
      activation. A convolution that feeds a BN has no bias.
    init: 'he' (variance 2/fan_in), 'xavier' (1/fan_in), or a traceable gain.
    channel_counts: optional traced `[len(channels)]` real channels per block.
    depth: optional traced number of real blocks (>= 1).
    dtype: parameter dtype.

  Returns:
    `params = {'blocks': [{'w' [*kernel, in, out], 'b' | 'bn'}...], 'output':
    {'w' [features, C], 'b' [C]}}` and `state = {'blocks': [{'mean', 'var'} | {}...]}`.
  """
  input_shape = tuple(int(d) for d in input_shape)
  channels = tuple(int(c) for c in channels)
  final_spatial = _check(
    input_shape, channels, pool=pool, head=head, bn_placement=bn_placement, depth=depth
  )
  kernel = _kernel_shape(kernel_size, len(input_shape) - 1)
  taps = math.prod(kernel)
  if isinstance(init, str):
    init = INIT_GAINS[registry.check('init', init)]
  masks = _channel_masks(channels, channel_counts)
  real = jnp.asarray(channels if channel_counts is None else channel_counts, jnp.float32)

  blocks, states = [], []
  fan_in, row_mask, fan_in_real = input_shape[-1], None, float(input_shape[-1])
  for i, size in enumerate(channels):
    col_mask = layer_columns(i, size, masks[i], depth)
    draw = conv.kernel_normal(jax.random.fold_in(key, i), kernel, fan_in, size)
    w = scale_weights(draw, init, taps * fan_in_real, row_mask, col_mask, dtype)
    block, block_state = init_layer(w, batch_norm=batch_norm, bn_placement=bn_placement)
    blocks.append(block)
    states.append(block_state)
    fan_in, row_mask, fan_in_real = size, masks[i], real[i]

  head_key = jax.random.fold_in(key, OUTPUT_LAYER_STREAM)
  if head == 'flatten':
    positions = math.prod(final_spatial)
    draw = conv.kernel_normal(head_key, final_spatial, fan_in, num_classes)
    w = scale_weights(draw, init, positions * fan_in_real, row_mask, None, dtype)
    w = w.reshape(positions * fan_in, num_classes)
  else:
    if depth is not None:  # The head reads the last real block, padded to the widest.
      fan_in = max(channels)
      fan_in_real = real[jnp.asarray(depth) - 1]
      row_mask = (jnp.arange(fan_in) < fan_in_real).astype(jnp.float32)
    draw = stable_random.normal(head_key, (fan_in, num_classes))
    w = scale_weights(draw, init, fan_in_real, row_mask, None, dtype)
  output = {'w': w, 'b': jnp.zeros((num_classes,), dtype)}
  return {'blocks': blocks, 'output': output}, {'blocks': states}


def cnn_apply(
  params: dict,
  state: dict,
  x: jax.Array,
  *,
  training: bool,
  key: jax.Array | None = None,
  activation: str = 'relu',
  bn_placement: str = 'before',
  pool: str = 'max',
  head: str = 'global_avg',
  bn_momentum: jax.typing.ArrayLike = 0.99,
  bn_eps: jax.typing.ArrayLike = 1e-5,
  keep_prob: jax.typing.ArrayLike = 1.0,
  channel_counts: jax.typing.ArrayLike | None = None,
  depth: jax.typing.ArrayLike | None = None,
  mask: jax.Array | None = None,
  axis_name: str | None = None,
  conv_method: str = 'patches',
) -> tuple[jax.Array, dict]:
  """Forward pass: returns `(logits [batch, C], new_state)`.

  Args:
    params, state: from `cnn_init`.
    x: `[batch, length, in_channels]` or `[batch, height, width, in_channels]`.
    training: Python bool (static). Mini-batch BN statistics (and updated
      running averages) and dropout if True; running averages if False.
    key: PRNG key for dropout; needed when training with `keep_prob < 1`.
    activation: 'relu', 'tanh' or 'sigmoid'.
    bn_placement, pool, head: as given to `cnn_init`.
    bn_momentum, bn_eps: BN running-average momentum and epsilon (traceable).
    keep_prob: dropout keep probability of each block's pooled output
      (traceable); elementwise, with draws that do not depend on padding.
    channel_counts, depth: the masks given to `cnn_init` (traceable).
    mask: optional `[batch]` bool; False rows stay out of BN statistics.
    axis_name: pool BN statistics over this named axis.
    conv_method: 'patches' (im2col, one matrix product) or 'lax'
      (`lax.conv_general_dilated`): the same numbers, see `conv.py`.
  """
  training = normalization.static_flag(training, name='training', where='cnn_apply')
  blocks = params['blocks']
  channels = [block['w'].shape[-1] for block in blocks]
  kernel_in = blocks[0]['w'].shape[:-1]
  if jnp.ndim(x) != len(kernel_in) + 1 or jnp.shape(x)[-1] != kernel_in[-1]:
    axes = ('length',) if len(kernel_in) == 2 else ('height', 'width')
    raise ValueError(
      f'cnn_apply: x has shape {jnp.shape(x)}; the first block takes '
      f'[batch, {", ".join(axes)}, {kernel_in[-1]}] (channels last)'
    )
  final_spatial = _check(
    x.shape[1:],
    channels,
    pool=pool,
    head=head,
    bn_placement=bn_placement,
    activation=activation,
    depth=depth,
  )
  features_in = {
    'flatten': math.prod(final_spatial) * channels[-1],
    'global_avg': channels[-1] if depth is None else max(channels),
  }[head]
  if params['output']['w'].shape[0] != features_in:
    raise ValueError(
      f'cnn_apply: the output layer takes {params["output"]["w"].shape[0]} features, but '
      f'head={head!r} and pool={pool!r} on this input give {features_in}: pass the head, pool '
      'and depth mask given to cnn_init'
    )
  if training and key is None and isinstance(keep_prob, int | float) and keep_prob < 1:
    raise ValueError('dropout with keep_prob < 1 needs a PRNG key: pass key=...')
  masks = _channel_masks(channels, channel_counts)
  bn_options = dict(
    training=training, momentum=bn_momentum, eps=bn_eps, mask=mask, axis_name=axis_name
  )
  spatial_axes = tuple(range(1, x.ndim - 1))
  new_states, features = [], None
  h = x
  for i, (block, block_state) in enumerate(zip(blocks, state['blocks'], strict=True)):
    # Block 0 is always real: depth >= 1.
    active = i < jnp.asarray(depth) if depth is not None and i > 0 else None
    h, new_state = normalize_and_activate(
      block,
      block_state,
      conv.conv(h, block['w'], method=conv_method),
      activation=activation,
      bn_placement=bn_placement,
      bn_options=bn_options,
      unit_mask=masks[i],
      active=active,
    )
    h = conv.pool(h, pool)
    if training and key is not None:  # Rows are positions, so draws ignore channel padding.
      rows = dropout(jax.random.fold_in(key, i), h.reshape(-1, h.shape[-1]), keep_prob)
      h = rows.reshape(h.shape)
    if depth is not None:
      pooled = jnp.mean(h, axis=spatial_axes)
      pooled = jnp.pad(pooled, ((0, 0), (0, max(channels) - channels[i])))
      features = pooled if active is None else jnp.where(active, pooled, features)
    new_states.append(new_state)
  if features is None:
    features = h.reshape(h.shape[0], -1) if head == 'flatten' else jnp.mean(h, axis=spatial_axes)
  logits = features @ params['output']['w'] + params['output']['b']
  return logits, {'blocks': new_states}

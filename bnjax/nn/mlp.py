"""A batch-normalized MLP as two pure functions, with width and depth masking.

    x -> [W, (b)] -> z -> BN -> g -> dropout -> ... -> [W, b] -> logits

`hidden_sizes` fixes the array shapes. Optional traced `widths` (real units
per hidden layer) and `depth` (real number of hidden layers) let trials of
different architectures share those shapes, which is how a search puts them
in one `vmap`: units past a layer's width are zeroed after the activation (so
they feed nothing forward and get no gradient), their weights start at zero
(so they add nothing to L2 and stay zero under every optimizer here), and
layers past `depth` pass their input through. The init fan-in uses the real
width. A masked network computes what the unpadded one with the same weights
computes; `tests/test_masking.py` proves it.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from bnjax import registry
from bnjax.nn import normalization, stable_random
from bnjax.nn.precision import matmul

ACTIVATIONS = {'relu': jax.nn.relu, 'tanh': jnp.tanh, 'sigmoid': jax.nn.sigmoid}
# Weight variance is gain / fan_in: He for ReLU, the notes' Xavier for tanh.
INIT_GAINS = {'he': 2.0, 'xavier': 1.0}
PLACEMENTS = registry.choices('bn_placement')
# The output layer's key must not depend on how deep the network is padded.
OUTPUT_LAYER_STREAM = 2**31 - 1


def _check(hidden_sizes, activation=None, bn_placement='before', depth=None):
  if not hidden_sizes or any(int(h) < 1 for h in hidden_sizes):
    raise ValueError(f'hidden_sizes must be a non-empty list of positive ints; got {hidden_sizes}.')
  if activation is not None:
    registry.check('activation', activation)
  registry.check('bn_placement', bn_placement)
  if depth is not None and len(set(hidden_sizes)) > 1:
    raise ValueError(
      'depth masking passes activations through skipped layers, so every '
      f'hidden size must be equal (pad them); got {tuple(hidden_sizes)}.'
    )


def _unit_masks(hidden_sizes, widths):
  """Per hidden layer, a float mask of its real units, or None when unmasked."""
  if widths is None:
    return [None] * len(hidden_sizes)
  widths = jnp.asarray(widths)
  return [(jnp.arange(size) < widths[i]).astype(jnp.float32) for i, size in enumerate(hidden_sizes)]


def mlp_init(
  key: jax.Array,
  in_features: int,
  hidden_sizes,
  num_classes: int,
  *,
  batch_norm: bool = True,
  bn_placement: str = 'before',
  init: Any = 'he',
  widths: jax.typing.ArrayLike | None = None,
  depth: jax.typing.ArrayLike | None = None,
  dtype: Any = jnp.float32,
) -> tuple[dict, dict]:
  """Initial `(params, state)` of the MLP.

  Args:
    key: PRNG key.
    in_features: input width.
    hidden_sizes: units of each hidden layer (the padded shapes).
    num_classes: output width.
    batch_norm: put a BN in every hidden layer.
    bn_placement: 'before' (z -> BN -> g) or 'after' (g -> BN) the activation.
      A linear layer that feeds a BN has no bias: BN's offset replaces it.
    init: 'he' (variance 2/fan_in, for ReLU), 'xavier' (1/fan_in, for
      tanh/sigmoid), or a traceable gain (variance gain/fan_in).
    widths: optional traced `[len(hidden_sizes)]` real widths.
    depth: optional traced number of real hidden layers (>= 1).
    dtype: parameter dtype.

  Returns:
    `params = {'layers': [{'w', 'b' | 'bn'}...], 'output': {'w', 'b'}}` and
    `state = {'layers': [{'mean', 'var'} | {}...]}`.
  """
  hidden_sizes = tuple(int(h) for h in hidden_sizes)
  _check(hidden_sizes, bn_placement=bn_placement, depth=depth)
  if isinstance(init, str):
    init = INIT_GAINS[registry.check('init', init)]
  unit_masks = _unit_masks(hidden_sizes, widths)
  real = (
    jnp.asarray(widths, jnp.float32)
    if widths is not None
    else jnp.asarray(hidden_sizes, jnp.float32)
  )

  fan_ins = (in_features, *hidden_sizes)
  streams = (*range(len(hidden_sizes)), OUTPUT_LAYER_STREAM)
  shapes = [*zip(fan_ins[:-1], hidden_sizes, strict=True), (fan_ins[-1], num_classes)]
  *hidden_draws, output_draw = stable_random.normals(key, streams, shapes)

  layers, states = [], []
  fan_in, row_mask, fan_in_real = in_features, None, float(in_features)
  for i, size in enumerate(hidden_sizes):
    col_mask = layer_columns(i, size, unit_masks[i], depth)
    w = scale_weights(hidden_draws[i], init, fan_in_real, row_mask, col_mask, dtype)
    layer, layer_state = init_layer(w, batch_norm=batch_norm, bn_placement=bn_placement)
    layers.append(layer)
    states.append(layer_state)
    fan_in, row_mask, fan_in_real = size, unit_masks[i], real[i]

  if depth is not None:  # The output reads the last real layer.
    last = jnp.asarray(depth) - 1
    fan_in_real = real[last]
    if widths is not None:
      row_mask = (jnp.arange(fan_in) < real[last]).astype(jnp.float32)
  output = {
    'w': scale_weights(output_draw, init, fan_in_real, row_mask, None, dtype),
    'b': jnp.zeros((num_classes,), dtype),
  }
  return {'layers': layers, 'output': output}, {'layers': states}


def layer_columns(i: int, size: int, unit_mask, depth):
  """Layer `i`'s output mask at init: its real units, none at all past `depth`.

  Skipped layers start (and so stay) at zero. None when nothing is masked.
  """
  if depth is None:
    return unit_mask
  active = (i < jnp.asarray(depth)).astype(jnp.float32)
  return active * (jnp.ones(size) if unit_mask is None else unit_mask)


def scale_weights(draw, gain, fan_in_real, row_mask, col_mask, dtype) -> jax.Array:
  """Standard normals `draw [..., fan_in, fan_out]` scaled to variance `gain / fan_in_real`.

  Rows past the real inputs (`row_mask [fan_in]`) and columns past the real
  outputs (`col_mask [fan_out]`) are zeroed; a mask of None keeps them all.
  """
  w = draw * jnp.sqrt(gain / fan_in_real)
  if row_mask is not None:
    w = w * row_mask[:, None]
  if col_mask is not None:
    w = w * col_mask
  return w.astype(dtype)


def init_layer(w: jax.Array, *, batch_norm: bool, bn_placement: str) -> tuple[dict, dict]:
  """A layer's (or CNN block's) `({'w', 'bn' | 'b'}, bn_state)` around its weights `w`.

  A linear map that feeds a BN has no bias: BN's offset replaces it.
  """
  size, dtype = w.shape[-1], w.dtype
  layer, state = {'w': w}, {}
  if batch_norm:
    layer['bn'], state = normalization.bn_init(size, dtype)
  if not (batch_norm and bn_placement == 'before'):
    layer['b'] = jnp.zeros((size,), dtype)
  return layer, state


def normalize_and_activate(
  layer: dict,
  layer_state: dict,
  z: jax.Array,
  *,
  activation: str,
  bn_placement: str,
  bn_options: dict,
  unit_mask: jax.Array | None = None,
  active: jax.Array | None = None,
) -> tuple[jax.Array, dict]:
  """What follows a layer's matmul (MLP) or convolution (CNN block): `(h, new_state)`.

  The bias, BN before or after the activation, padded units zeroed; a layer
  past the trial's depth (`active` False) keeps its BN state.
  """
  if 'b' in layer:
    z = z + layer['b']
  new_state = layer_state
  if 'bn' in layer and bn_placement == 'before':
    z, new_state = normalization.batch_norm(layer['bn'], layer_state, z, **bn_options)
  h = ACTIVATIONS[activation](z)
  if 'bn' in layer and bn_placement == 'after':
    h, new_state = normalization.batch_norm(layer['bn'], layer_state, h, **bn_options)
  if unit_mask is not None:
    h = h * unit_mask.astype(h.dtype)
  if active is not None:
    new_state = jax.tree.map(lambda new, old: jnp.where(active, new, old), new_state, layer_state)
  return h, new_state


def dropout(key: jax.Array, x: jax.Array, keep_prob: jax.typing.ArrayLike) -> jax.Array:
  """Inverted dropout on `[batch, units]`: keep with `keep_prob`, divide by it.

  Dividing by `keep_prob` keeps the expected activation unchanged, so test
  time needs no rescaling. `keep_prob = 1` returns `x` exactly. The keep
  probability is `keep_prob` to 2^-16 (`stable_random.bernoulli`).
  """
  with jax.named_scope('dropout'):  # names its ops in profiles (`benchmarks/profile_step.py`)
    keep = stable_random.bernoulli(key, keep_prob, x.shape)
    return jnp.where(keep, x / keep_prob, 0.0).astype(x.dtype)


def mlp_apply(
  params: dict,
  state: dict,
  x: jax.Array,
  *,
  training: bool,
  key: jax.Array | None = None,
  activation: str = 'relu',
  bn_placement: str = 'before',
  bn_momentum: jax.typing.ArrayLike = 0.99,
  bn_eps: jax.typing.ArrayLike = 1e-5,
  keep_prob: jax.typing.ArrayLike = 1.0,
  widths: jax.typing.ArrayLike | None = None,
  depth: jax.typing.ArrayLike | None = None,
  depth_bound: jax.typing.ArrayLike | None = None,
  mask: jax.Array | None = None,
  axis_name: str | None = None,
  matmul_dtype: str = 'float32',
) -> tuple[jax.Array, dict]:
  """Forward pass: returns `(logits [batch, C], new_state)`.

  Args:
    params, state: from `mlp_init`.
    x: `[batch, in_features]`.
    training: Python bool (static: under `jax.jit`, mark it in
      `static_argnames`). Mini-batch BN statistics (and updated running
      averages) and dropout if True; running averages and no dropout if False.
    key: PRNG key for dropout; needed when training with `keep_prob < 1`.
    activation: 'relu', 'tanh' or 'sigmoid' for the hidden layers.
    bn_placement: as given to `mlp_init`.
    bn_momentum, bn_eps: BN running-average momentum and epsilon (traceable).
    keep_prob: dropout keep probability of hidden units (traceable).
    widths, depth: the masks given to `mlp_init` (traceable).
    depth_bound: optional traced int at least every `depth` it is applied
      with: layers at or past it are skipped by a `lax.cond` instead of
      computed and discarded. Under `vmap`, give it without the trial axis
      (a chunk's deepest trial) so that the cond stays a branch; the result
      is the same either way.
    mask: optional `[batch]` bool; False rows stay out of BN statistics.
    axis_name: pool BN statistics over this named axis.
    matmul_dtype: 'float32', or 'bfloat16' (matmul inputs rounded, float32 sums).
  """
  training = normalization.static_flag(training, name='training', where='mlp_apply')
  hidden_sizes = [layer['w'].shape[1] for layer in params['layers']]
  _check(hidden_sizes, activation, bn_placement, depth)
  in_features = params['layers'][0]['w'].shape[0]
  if jnp.ndim(x) != 2 or jnp.shape(x)[1] != in_features:
    raise ValueError(
      f'mlp_apply: x has shape {jnp.shape(x)}; the first layer takes [batch, {in_features}]'
    )
  if training and key is None and isinstance(keep_prob, int | float) and keep_prob < 1:
    raise ValueError('dropout with keep_prob < 1 needs a PRNG key: pass key=...')
  unit_masks = _unit_masks(hidden_sizes, widths)
  bn_options = dict(
    training=training, momentum=bn_momentum, eps=bn_eps, mask=mask, axis_name=axis_name
  )
  new_states = []
  a = x
  for i, (layer, layer_state) in enumerate(zip(params['layers'], state['layers'], strict=True)):
    # Layer 0 is always real: depth >= 1.
    active = i < jnp.asarray(depth) if depth is not None and i > 0 else None

    def hidden(a, layer_state, i=i, layer=layer, active=active):
      h, new_state = normalize_and_activate(
        layer,
        layer_state,
        matmul(a, layer['w'], matmul_dtype),
        activation=activation,
        bn_placement=bn_placement,
        bn_options=bn_options,
        unit_mask=unit_masks[i],
        active=active,
      )
      if training and key is not None:
        h = dropout(jax.random.fold_in(key, i), h, keep_prob)
      if active is not None:
        h = jnp.where(active, h, a)
      return h, new_state

    if active is not None and depth_bound is not None:
      # What the select above gives every trial past its depth, without the work.
      a, new_state = lax.cond(i < depth_bound, hidden, lambda a, s: (a, s), a, layer_state)
    else:
      a, new_state = hidden(a, layer_state)
    new_states.append(new_state)
  logits = matmul(a, params['output']['w'], matmul_dtype) + params['output']['b']
  return logits, {'layers': new_states}

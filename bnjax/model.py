"""The network a `TrainConfig` names: the MLP or the CNN, on flat rows of features.

`init_model` and `apply_model` hand a trial's architecture masks to the
configured network (`bnjax.nn.mlp` or `bnjax.nn.cnn`) under the keywords it
takes; `predict` and `evaluate` run it in eval mode. `vmap_chunk` runs a chunk
of trials so that the MLP skips the layers none of them has (`CHUNK_DEPTH`).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax

from bnjax.nn.cnn import cnn_apply, cnn_init
from bnjax.nn.losses import softmax_cross_entropy
from bnjax.nn.mlp import mlp_apply, mlp_init
from bnjax.train_config import TrainConfig, cnn_input_shape

# What `vmap_chunk` adds to each trial's hyperparameters, without a trial
# axis: the chunk's deepest trial's depth (`mlp_apply`'s `depth_bound`).
CHUNK_DEPTH = 'chunk_depth'


def vmap_chunk(fn: Callable) -> Callable:
  """`jax.vmap(fn)` over a chunk of trials, `fn(hp, *args)`, each `hp` told the chunk's depth.

  The chunk's deepest depth is taken outside the `vmap` and merged into
  each trial's `hp` (as `CHUNK_DEPTH`): a value without the trial axis keeps
  `mlp_apply`'s `lax.cond` on its `depth_bound` a branch, so that a chunk of
  two-layer trials skips the third layer instead of computing it and
  selecting it away. The branch gives what the select gives, so on one
  machine the numbers are bitwise those of `jax.vmap(fn)`
  (`tests/test_search_engine.py`). Every argument is vmapped over its
  leading axis; close over what the trials share.
  """

  def chunk(hp: dict, *args):
    bound = {CHUNK_DEPTH: jnp.max(hp['depth'])} if 'depth' in hp else {}
    return jax.vmap(lambda hp, *args: fn({**hp, **bound}, *args))(hp, *args)

  return chunk


def _masks(config: TrainConfig, hp: dict) -> dict:
  """The trial's architecture masks, under the keywords the configured model takes."""
  if config.model == 'cnn':
    # A flattening head cannot mask depth; its buckets hold one depth (`buckets.py`).
    depth = None if config.head == 'flatten' else hp.get('depth')
    return dict(channel_counts=hp.get('widths'), depth=depth)
  return dict(widths=hp.get('widths'), depth=hp.get('depth'))


def init_model(config: TrainConfig, hp: dict, key: jax.Array, features: int, gain):
  """`(params, model_state)` of the configured network for rows of `features` values."""
  options = dict(
    batch_norm=config.batch_norm, bn_placement=config.bn_placement, init=gain, **_masks(config, hp)
  )
  if config.model == 'cnn':
    return cnn_init(
      key,
      cnn_input_shape(config, features),
      config.hidden_sizes,
      config.num_classes,
      kernel_size=config.kernel_size,
      pool=config.pool,
      head=config.head,
      **options,
    )
  return mlp_init(key, features, config.hidden_sizes, config.num_classes, **options)


def apply_model(config: TrainConfig, hp: dict, params, model_state, x: jax.Array, **options):
  """Logits and new state of the configured network on flat rows `x [batch, features]`."""
  common = dict(
    activation=config.activation,
    bn_placement=config.bn_placement,
    bn_momentum=hp['bn_momentum'],
    **_masks(config, hp),
  )
  if config.model == 'cnn':
    x = x.reshape(x.shape[0], *cnn_input_shape(config, x.shape[1]))
    return cnn_apply(
      params,
      model_state,
      x,
      pool=config.pool,
      head=config.head,
      **common,
      **options,
    )
  return mlp_apply(
    params,
    model_state,
    x,
    matmul_dtype=config.matmul_dtype,
    depth_bound=hp.get(CHUNK_DEPTH),
    **common,
    **options,
  )


def predict(config: TrainConfig, hp: dict, params, model_state, x: jax.Array) -> jax.Array:
  """Logits `[n, classes]` in eval mode (running BN statistics, no dropout)."""
  logits, _ = apply_model(config, hp, params, model_state, x, training=False)
  return logits


def evaluate(
  config: TrainConfig, hp: dict, params, model_state, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Mean loss and accuracy in eval mode (running BN statistics), in batches."""
  n = x.shape[0]
  chunk = min(n, config.eval_batch_size)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_chunks, chunk, -1)
  ys = jnp.pad(y, (0, pad)).reshape(num_chunks, chunk)
  real = (jnp.arange(num_chunks * chunk) < n).reshape(num_chunks, chunk)

  def one_chunk(args):
    xb, yb, rb = args
    logits = predict(config, hp, params, model_state, xb)
    losses = softmax_cross_entropy(logits, yb)
    correct = jnp.argmax(logits, axis=-1) == yb
    return jnp.sum(jnp.where(rb, losses, 0.0)), jnp.sum(rb & correct)

  loss_sums, correct = lax.map(one_chunk, (xs, ys, real))
  return jnp.sum(loss_sums) / n, jnp.sum(correct) / n

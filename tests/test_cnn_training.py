"""The CNN in the training loop and the search: model dispatch, buckets, masked trials."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnjax
from bnjax.search import buckets
from bnjax.space import with_defaults


def _table(**columns):
  n = len(next(iter(columns.values())))
  return with_defaults({k: np.asarray(v) for k, v in columns.items()}, n)


def test_cnn_rows_take_channels_and_blocks_as_widths_and_depth():
  table = _table(
    model=['mlp', 'cnn', 'cnn'],
    hidden_units=[5, 7, 7],
    num_layers=[2, 1, 1],
    channels=[9, 3, 4],
    num_blocks=[1, 3, 2],
  )
  np.testing.assert_array_equal(buckets.depths(table), [2, 3, 2])
  np.testing.assert_array_equal(buckets.layer_widths(table), [[5, 5, 1], [3, 3, 3], [4, 4, 1]])


def test_buckets_split_by_model_and_cnn_statics_only_where_they_apply():
  table = _table(
    model=['mlp', 'mlp', 'cnn', 'cnn', 'cnn', 'cnn'],
    kernel_size=[3, 5, 3, 5, 5, 5],  # the MLP ignores it: no split between rows 0 and 1
    head=['flatten', 'flatten', 'global_avg', 'global_avg', 'flatten', 'flatten'],
    num_blocks=[1, 1, 1, 1, 1, 2],  # a flattening head cannot mask depth: rows 4 and 5 split
    channels=[4] * 6,
    hidden_units=[4] * 6,
  )
  planned = buckets.make_buckets(table, epochs=1, num_classes=3, input_shape=(8, 8, 1))
  groups = sorted(tuple(b.trial_ids.tolist()) for b in planned)
  assert groups == [(0, 1), (2,), (3,), (4,), (5,)]
  for bucket in planned:
    config = bucket.config
    assert config.model == table['model'][bucket.trial_ids[0]]
    assert config.input_shape == (8, 8, 1)
    if config.model == 'cnn':
      row = bucket.trial_ids[0]
      assert config.kernel_size == table['kernel_size'][row] and config.head == table['head'][row]
      assert config.hidden_sizes == (4,) * int(table['num_blocks'][bucket.trial_ids].max())


CONFIG = bnjax.TrainConfig(
  epochs=2,
  batch_size=8,
  hidden_sizes=(3, 3),
  num_classes=3,
  model='cnn',
  input_shape=(6, 2),
  kernel_size=3,
  pool='max',
  dropout=False,
)


def _data():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(24, 12)).astype(np.float32)
  y = (np.arange(24) % 3).astype(np.int32)
  return bnjax.TrainData(*map(jnp.asarray, (x[:16], y[:16], x[16:], y[16:])))


def test_a_masked_cnn_trial_trains_as_its_unpadded_network():
  data = _data()
  # Trial 0 is 2 blocks of 3 channels; trial 1 one block of 2, padded to the first's shapes.
  hp = bnjax.hparams(learning_rate=[0.05, 0.1], widths=[[3, 3], [2, 1]], depth=[2, 1])
  hp = {name: v if v.ndim else jnp.broadcast_to(v, (2,)) for name, v in hp.items()}  # per trial
  keys = jax.random.split(jax.random.key(1), 2)
  padded = jax.jit(jax.vmap(bnjax.make_train(CONFIG), in_axes=(0, 0, None)))(hp, keys, data)
  alone = bnjax.make_train(CONFIG._replace(hidden_sizes=(2,)))
  want = jax.jit(alone)(bnjax.hparams(learning_rate=0.1), keys[1], data)
  # Other shapes, other float32 sums: equal to rounding, over two epochs of four steps.
  chex.assert_trees_all_close(
    jax.tree.map(lambda a: a[1], padded.metrics), want.metrics, rtol=1e-4, atol=1e-5
  )
  assert not np.any(padded.diverged)
  # The two trials really differ, so the comparison can fail.
  assert padded.metrics['train_loss'][0, -1] != padded.metrics['train_loss'][1, -1]


def test_a_cnn_reads_flat_rows_in_the_input_shape():
  data = _data()
  with pytest.raises(ValueError, match=r'input_shape \(5, 2\) holds 10 values but the data has 12'):
    jax.eval_shape(
      bnjax.make_train(CONFIG._replace(input_shape=(5, 2))),
      bnjax.hparams(),
      jax.random.key(0),
      data,
    )
  # No input shape: the rows are sequences of one channel.
  result = jax.jit(bnjax.make_train(CONFIG._replace(input_shape=())))(
    bnjax.hparams(), jax.random.key(0), data
  )
  assert result.params['blocks'][0]['w'].shape == (3, 1, 3)

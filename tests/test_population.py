"""Populations: segments equal one long run bitwise, compile once, and checkpoint exactly."""

import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnjax
from bnjax.search import checkpoints
from bnjax.search import population as pop
from bnjax.search.chunks import trial_keys

# select='best' so that the best snapshot travels with the state as well.
CONFIG = bnjax.TrainConfig(
  epochs=4, batch_size=16, hidden_sizes=(8, 8), num_classes=3, eval_batch_size=32, select='best'
)


@pytest.fixture(scope='module')
def data():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(3, 6)) * 2
  y = rng.integers(0, 3, size=160)
  x = (centers[y] + rng.normal(size=(160, 6))).astype(np.float32)
  y = y.astype(np.int32)
  return bnjax.TrainData(x[:128], y[:128], x[128:], y[128:])


def mixed_hparams():
  """Four trials: every optimizer, a decaying schedule (it must continue), dropout, a divergence."""
  return bnjax.hparams(
    learning_rate=np.array([1e-2, 3e-2, 1e-3, 1e30], np.float32),
    optimizer=np.array(['adam', 'momentum', 'rmsprop', 'sgd']),
    lr_schedule=np.array(['constant', 'inverse_time', 'exponential', 'constant']),
    lr_decay=np.full(4, 0.3, np.float32),
    keep_prob=np.array([1.0, 0.8, 1.0, 0.9], np.float32),
    **{
      name: np.full(4, bnjax.registry.DEFAULTS[name])
      for name in ('beta1', 'beta2', 'eps', 'l2', 'bn_momentum', 'init')
    },
  )


KEYS = trial_keys(0, np.arange(4), np.zeros(4, np.int64))


def segments(data, hp, epochs, count):
  """`count` segments of `epochs` epochs from a fresh population; metrics joined."""
  state = pop.init_population(CONFIG, hp, KEYS, data)
  curves = []
  for _ in range(count):
    state, metrics = pop.run_segment(CONFIG, hp, state, data, epochs)
    curves.append(metrics)
  return state, {name: np.concatenate([c[name] for c in curves], axis=1) for name in curves[0]}


def comparable(state):
  """A state with its typed key as raw bits, so that chex compares every leaf."""
  return state._replace(key=jax.random.key_data(state.key))


@pytest.fixture(scope='module')
def runs(data):
  hp = mixed_hparams()
  return {(count, epochs): segments(data, hp, epochs, count) for count, epochs in ((4, 1), (2, 2))}


def test_segments_equal_one_long_run_bitwise(data, runs):
  long_run = jax.jit(jax.vmap(bnjax.make_train(CONFIG), in_axes=(0, 0, None)))(
    mixed_hparams(), KEYS, data
  )
  assert bool(long_run.diverged[3]) and not np.any(np.asarray(long_run.diverged[:3]))
  for state, metrics in runs.values():
    # Params (the best epoch's), BN statistics, metrics, divergence, best epoch.
    chex.assert_trees_all_equal(pop.finish_population(CONFIG, state, metrics), long_run)
  # Everything else the state carries: optimizer moments and count, final
  # params, loop key, epoch, step, best accuracy.
  (four, _), (two, _) = runs[(4, 1)], runs[(2, 2)]
  chex.assert_trees_all_equal(comparable(four), comparable(two))


# Learning rates from sane to the float32 maximum, under every optimizer: the
# steps fail in every way the check knows (a NaN loss, a gradient or an
# update that overflows, weights that overflow from a finite loss), or never.
EXTREMES = np.asarray([1e-2, 1e4, 1e20, 1e36, 3.4e38], np.float32)
FAMILIES = np.asarray(['sgd', 'momentum', 'rmsprop', 'adam'])


def test_unchecked_steps_equal_checked_ones_where_every_step_was_finite_and_say_where_not(data):
  lr = np.tile(EXTREMES, len(FAMILIES))
  hp = bnjax.hparams(learning_rate=lr, optimizer=np.repeat(FAMILIES, len(EXTREMES)))
  hp = {name: np.broadcast_to(value, lr.shape) for name, value in hp.items()}
  keys = trial_keys(0, np.arange(len(lr)), np.zeros(len(lr), np.int64))
  start = pop.init_population(CONFIG, hp, keys, data)
  checked = pop.run_segment(CONFIG, hp, start, data, 2)
  state, metrics = pop.run_segment(CONFIG, hp, start, data, 2, checked=False)
  finite = np.asarray(jax.vmap(bnjax.training.steps_were_finite)(state, metrics))
  clean = np.asarray(checked[0].diverged_step) < 0
  # The checked steps rejected one somewhere in most runs; the verdict names
  # exactly those (never missing one, which would keep a non-finite state).
  assert 0 < clean.sum() < len(lr) - 4
  np.testing.assert_array_equal(finite, clean)
  # Where it holds, both programs computed the same numbers, bit for bit.
  same = lambda tree: jax.tree.map(lambda leaf: np.asarray(leaf)[clean], tree)
  chex.assert_trees_all_equal(
    same((comparable(state), metrics)), same((comparable(checked[0]), checked[1]))
  )


def test_segments_checked_at_end_equal_segments_checked_every_step(data, runs):
  # The fourth trial diverges in the first segment: it runs again checked,
  # and so does the second (a trial has diverged by then).
  hp = mixed_hparams()
  state = pop.init_population(CONFIG, hp, KEYS, data)
  curves = []
  for _ in range(2):
    state, metrics = pop.run_segment_checked_at_end(CONFIG, hp, state, data, 2)
    curves.append(metrics)
  metrics = {name: np.concatenate([c[name] for c in curves], axis=1) for name in curves[0]}
  checked, checked_metrics = runs[(2, 2)]
  assert int(np.asarray(state.diverged_step)[3]) >= 0
  chex.assert_trees_all_equal((comparable(state), metrics), (comparable(checked), checked_metrics))


def test_epoch_and_step_travel_with_the_state(runs):
  state, metrics = runs[(2, 2)]
  steps_per_epoch = 128 // CONFIG.batch_size
  np.testing.assert_array_equal(state.epoch, 4)
  np.testing.assert_array_equal(state.step, 4 * steps_per_epoch)
  assert metrics['dev_accuracy'].shape == (4, 4)
  # The diverged trial reads NaN from its first epoch; the others never do.
  assert np.all(np.isnan(metrics['dev_accuracy'][3]))
  assert not np.any(np.isnan(metrics['dev_accuracy'][:3]))


def test_segment_program_compiles_once(data):
  """From init on, one program per segment length, whatever the values or the segment count."""
  config = CONFIG._replace(hidden_sizes=(4,))  # programs no other test has built
  hp = mixed_hparams()
  other = {**hp, 'learning_rate': hp['learning_rate'] * 0.5}  # new values, same program
  with pop.count_lowerings() as lowered:
    state = pop.init_population(config, hp, KEYS, data)
    for values in (hp, other, hp):
      state, _ = pop.run_segment(config, values, state, data, 1)
  assert lowered.value == 2  # init, and the 1-epoch segment
  with pop.count_lowerings() as lowered:
    for _ in range(2):
      state, _ = pop.run_segment(config, other, state, data, 2)  # a new length: a new program
  assert lowered.value == 1
  np.testing.assert_array_equal(state.epoch, 7)


def test_checkpoint_restores_bitwise_and_training_goes_on_the_same(data, runs, tmp_path):
  hp = mixed_hparams()
  state, _ = segments(data, hp, 2, 1)
  path = tmp_path / 'population.msgpack'
  meta = {'epochs_done': 2, 'trial_ids': np.arange(4), 'rung': 'r0'}
  checkpoints.save_population(path, (state, hp), meta)
  fresh = pop.init_population(CONFIG, hp, KEYS, data)
  (restored, restored_hp), restored_meta = checkpoints.restore_population(path, like=(fresh, hp))
  assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
  chex.assert_trees_all_equal((comparable(restored), restored_hp), (comparable(state), hp))
  assert restored_meta['epochs_done'] == 2 and restored_meta['rung'] == 'r0'
  np.testing.assert_array_equal(restored_meta['trial_ids'], np.arange(4))
  # From the checkpoint, the next segment is the one that ran without a save.
  went_on, metrics = pop.run_segment(CONFIG, restored_hp, restored, data, 2)
  want_state, want_metrics = runs[(2, 2)]
  chex.assert_trees_all_equal(comparable(went_on), comparable(want_state))
  chex.assert_trees_all_equal(metrics, {k: v[:, 2:] for k, v in want_metrics.items()})


def test_checkpoint_keeps_only_the_latest_and_refuses_other_files(tmp_path):
  path = tmp_path / 'population.msgpack'
  for epochs_done in (1, 2):
    checkpoints.save_population(path, {'x': np.full(3, epochs_done)}, {'epochs_done': epochs_done})
  assert os.listdir(tmp_path) == ['population.msgpack']  # no temporary left behind
  tree, meta = checkpoints.restore_population(path, like={'x': np.zeros(3, np.int64)})
  assert meta == {'epochs_done': 2}
  np.testing.assert_array_equal(tree['x'], [2, 2, 2])
  other = tmp_path / 'other.msgpack'
  other.write_bytes(b'\x81\xa1a\x01')  # msgpack {'a': 1}: not ours
  with pytest.raises(ValueError, match='not a bnjax population checkpoint'):
    checkpoints.restore_population(other, like={'x': np.zeros(3)})


def test_take_gathers_rows_bitwise_keys_included(runs):
  state, _ = runs[(2, 2)]
  rows = np.array([2, 0, 2])
  taken = pop.take(state, rows)
  assert jax.dtypes.issubdtype(taken.key.dtype, jax.dtypes.prng_key)
  for i, row in enumerate(rows):
    chex.assert_trees_all_equal(
      comparable(jax.tree.map(lambda a, i=i: a[i], taken)),
      comparable(jax.tree.map(lambda a, row=row: a[row], state)),
    )
  joined = pop.concatenate([pop.take(state, [0, 1]), pop.take(state, [2, 3])])
  chex.assert_trees_all_equal(comparable(joined), comparable(jax.device_get(state)))
  assert pop.num_members(joined) == 4


def test_sharded_population_continues_without_new_programs(data, tmp_path):
  """The trial axis over four devices: segments keep the sharding and compile once."""
  devices = jax.local_devices()[:4]
  mesh = jax.sharding.Mesh(np.asarray(devices), ('trials',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('trials'))
  hp = jax.device_put(mixed_hparams(), sharding)
  keys = jax.device_put(KEYS, sharding)
  state = pop.init_population(CONFIG, hp, keys, data)
  assert {leaf.sharding for leaf in jax.tree.leaves(state)} == {sharding}
  state, _ = pop.run_segment(CONFIG, hp, state, data, 1)
  with pop.count_lowerings() as lowered:
    state, _ = pop.run_segment(CONFIG, hp, state, data, 1)
    # A host gather put back with the same sharding reuses the program.
    state = jax.device_put(pop.take(state, [1, 0, 2, 3]), sharding)
    hp = jax.device_put(pop.take(hp, [1, 0, 2, 3]), sharding)
    state, _ = pop.run_segment(CONFIG, hp, state, data, 1)
    # So does a population restored from its checkpoint onto the trial axis.
    path = tmp_path / 'sharded.msgpack'
    checkpoints.save_population(path, state)
    state, _ = checkpoints.restore_population(path, state, sharding=sharding)
    state, metrics = pop.run_segment(CONFIG, hp, state, data, 1)
  assert lowered.value == 0
  assert jax.tree.leaves(state)[0].sharding == sharding
  assert np.asarray(state.epoch).tolist() == [4, 4, 4, 4]
  assert jnp.isnan(metrics['dev_accuracy'][3, 0])

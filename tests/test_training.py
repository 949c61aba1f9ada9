"""The pure train function: learns, vmaps like a loop, contains divergence."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnjax

CONFIG = bnjax.TrainConfig(
  epochs=4, batch_size=16, hidden_sizes=(8, 8), num_classes=3, eval_batch_size=32
)


def blobs(n, seed):
  """Three Gaussian blobs in 6-D: easy, but not linearly trivial at init."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(3, 6)) * 2
  y = rng.integers(0, 3, size=n)
  x = centers[y] + rng.normal(size=(n, 6))
  return x.astype(np.float32), y.astype(np.int32)


@pytest.fixture(scope='module')
def data():
  x, y = blobs(160, 0)
  return bnjax.TrainData(
    jnp.asarray(x[:128]), jnp.asarray(y[:128]), jnp.asarray(x[128:]), jnp.asarray(y[128:])
  )


def stack(dicts):
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *dicts)


def test_learns_blobs(data):
  config = CONFIG._replace(epochs=10)
  result = jax.jit(bnjax.make_train(config))(
    bnjax.hparams(learning_rate=1e-2), jax.random.key(0), data
  )
  curve = np.asarray(result.metrics['dev_accuracy'])
  assert curve[-1] >= 0.9, curve
  assert result.metrics['train_loss'][-1] < result.metrics['train_loss'][0]
  assert not result.diverged and int(result.diverged_step) == -1
  # The metrics are the eval-mode (running statistics) dev metrics.
  loss, acc = bnjax.evaluate(
    config, bnjax.hparams(), result.params, result.model_state, data.x_dev, data.y_dev
  )
  np.testing.assert_allclose(acc, curve[-1])
  np.testing.assert_allclose(loss, result.metrics['dev_loss'][-1], rtol=1e-5)


def test_vmap_over_hparams_equals_python_loop(data):
  trials = [
    bnjax.hparams(
      learning_rate=lr,
      optimizer=opt,
      beta1=b1,
      l2=l2,
      keep_prob=kp,
      lr_schedule=sched,
      lr_decay=0.1,
      bn_momentum=bm,
      init=init,
    )
    for lr, opt, b1, l2, kp, sched, bm, init in [
      (1e-2, 'adam', 0.9, 0.0, 1.0, 'constant', 0.99, 'he'),
      (3e-2, 'momentum', 0.8, 1e-2, 0.8, 'inverse_time', 0.9, 'xavier'),
      (1e-1, 'sgd', 0.0, 0.0, 1.0, 'exponential', 0.5, 'he'),
      (1e-3, 'rmsprop', 0.9, 1e-1, 0.9, 'constant', 0.999, 'xavier'),
    ]
  ]
  keys = [jax.random.fold_in(jax.random.key(1), i) for i in range(len(trials))]
  train = bnjax.make_train(CONFIG)
  single = jax.jit(chex.assert_max_traces(train, n=1))
  looped = [single(hp, key, data) for hp, key in zip(trials, keys, strict=True)]
  batched = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))(stack(trials), jnp.stack(keys), data)
  chex.assert_trees_all_close(batched, stack(looped), rtol=2e-4, atol=2e-5)


def test_divergent_trial_is_contained(data):
  sane = bnjax.hparams(learning_rate=1e-2, optimizer='sgd')
  wild = bnjax.hparams(learning_rate=1e30, optimizer='sgd')
  keys = jnp.stack([jax.random.key(5), jax.random.key(6)])
  run = jax.jit(jax.vmap(bnjax.make_train(CONFIG), in_axes=(0, 0, None)))
  both = run(stack([sane, wild]), keys, data)
  alone = run(stack([sane]), keys[:1], data)
  assert bool(both.diverged[1]) and not bool(both.diverged[0])
  assert int(both.diverged_step[1]) >= 0
  assert np.isnan(np.asarray(both.metrics['dev_accuracy'][1, -1]))
  chex.assert_trees_all_close(jax.tree.map(lambda a: a[:1], both), alone, rtol=1e-6)
  # The diverged trial's parameters are the last finite ones.
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(both.params))


def test_diverged_params_stop_changing(data):
  hp = bnjax.hparams(learning_rate=1e30, optimizer='sgd')
  one_epoch = jax.jit(bnjax.make_train(CONFIG._replace(epochs=1)))(hp, jax.random.key(0), data)
  three = jax.jit(bnjax.make_train(CONFIG._replace(epochs=3)))(hp, jax.random.key(0), data)
  assert 0 <= int(three.diverged_step) < 128 // 16  # It blew up in the first epoch...
  # ...so two more epochs of steps change neither params nor BN statistics.
  chex.assert_trees_all_equal(
    (one_epoch.params, one_epoch.model_state), (three.params, three.model_state)
  )


def test_select_best_returns_best_epoch_params(data):
  config = CONFIG._replace(epochs=6, select='best')
  hp = bnjax.hparams(learning_rate=0.3, optimizer='sgd')
  result = jax.jit(bnjax.make_train(config))(hp, jax.random.key(2), data)
  curve = np.asarray(result.metrics['dev_accuracy'])
  assert int(result.best_epoch) == int(np.argmax(curve))
  _, acc = bnjax.evaluate(config, hp, result.params, result.model_state, data.x_dev, data.y_dev)
  np.testing.assert_allclose(acc, curve.max())


def test_hparams_rejects_bad_names_and_values():
  with pytest.raises(ValueError, match='unknown hyperparameters'):
    bnjax.hparams(learnig_rate=0.1)
  with pytest.raises(ValueError, match='optimizer got'):
    bnjax.hparams(optimizer='adamw')


def test_batch_larger_than_data_is_an_error(data):
  with pytest.raises(ValueError, match='exceeds the 128 training examples'):
    bnjax.make_train(CONFIG._replace(batch_size=1000))(bnjax.hparams(), jax.random.key(0), data)


def test_skipping_dropout_equals_keep_prob_one(data):
  """`dropout=False` only saves the random numbers: keep_prob = 1 computes the same."""
  hp = bnjax.hparams(learning_rate=1e-2, keep_prob=1.0)
  with_rng = jax.jit(bnjax.make_train(CONFIG))(hp, jax.random.key(4), data)
  without = jax.jit(bnjax.make_train(CONFIG._replace(dropout=False)))(hp, jax.random.key(4), data)
  chex.assert_trees_all_close(with_rng, without, rtol=1e-6, atol=1e-7)
  dropped = jax.jit(bnjax.make_train(CONFIG))(
    bnjax.hparams(learning_rate=1e-2, keep_prob=0.5), jax.random.key(4), data
  )
  assert not np.allclose(dropped.metrics['train_loss'], with_rng.metrics['train_loss'])

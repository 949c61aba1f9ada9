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
N_DEV = 32
# What one example moves a dev accuracy by (plus float slack for 1/32 itself).
ONE_DEV_EXAMPLE = 1 / N_DEV + 1e-6


def blobs(n, seed):
  """Three Gaussian blobs in 6-D: easy, but not linearly trivial at init."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(3, 6)) * 2
  y = rng.integers(0, 3, size=n)
  x = centers[y] + rng.normal(size=(n, 6))
  return x.astype(np.float32), y.astype(np.int32)


@pytest.fixture(scope='module')
def data():
  x, y = blobs(128 + N_DEV, 0)
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
  # The metrics are the eval-mode (running statistics) dev metrics. `evaluate`
  # alone is another program than the one inside the training scan, with the
  # same shapes: the loss agrees to float32 rounding, and the accuracy may
  # flip one example (1/n) where two logits tie within rounding.
  loss, acc = bnjax.evaluate(
    config, bnjax.hparams(), result.params, result.model_state, data.x_dev, data.y_dev
  )
  np.testing.assert_allclose(loss, result.metrics['dev_loss'][-1], rtol=1e-5)
  np.testing.assert_allclose(acc, curve[-1], atol=ONE_DEV_EXAMPLE)


def _mixed_trials():
  """Four trials that differ in every traced hyperparameter, and their keys."""
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
  return trials, keys


def test_vmap_over_hparams_equals_python_loop(data):
  trials, keys = _mixed_trials()
  train = bnjax.make_train(CONFIG)
  single = jax.jit(chex.assert_max_traces(train, n=1))
  looped = stack([single(hp, key, data) for hp, key in zip(trials, keys, strict=True)])
  batched = jax.jit(jax.vmap(train, in_axes=(0, 0, None)))(stack(trials), jnp.stack(keys), data)
  # One trial alone and four in a vmap are programs of different shapes: XLA
  # may pick kernels that sum in another order, so they agree to float32
  # rounding carried through 32 steps (about 1e-6 absolute on this problem),
  # not bitwise. An accuracy can then flip one example, and the best epoch
  # with it; `test_trial_ignores_its_neighbours` pins the bitwise property.
  continuous = lambda result: (result.params, result.model_state, result.metrics['train_loss'])
  chex.assert_trees_all_close(continuous(batched), continuous(looped), rtol=2e-4, atol=2e-5)
  chex.assert_trees_all_close(
    batched.metrics['dev_loss'], looped.metrics['dev_loss'], rtol=2e-4, atol=2e-5
  )
  chex.assert_trees_all_close(
    batched.metrics['dev_accuracy'], looped.metrics['dev_accuracy'], atol=ONE_DEV_EXAMPLE
  )
  chex.assert_trees_all_equal(
    (batched.diverged, batched.diverged_step), (looped.diverged, looped.diverged_step)
  )


def test_trial_ignores_its_neighbours(data):
  """Row i of a vmap is bitwise the same whatever the other rows hold (equal shapes)."""
  trials, keys = _mixed_trials()
  run = jax.jit(jax.vmap(bnjax.make_train(CONFIG), in_axes=(0, 0, None)))
  mixed = run(stack(trials), jnp.stack(keys), data)
  for i in range(len(trials)):
    alike = run(stack([trials[i]] * len(trials)), jnp.stack([keys[i]] * len(trials)), data)
    row = lambda result, i=i: jax.tree.map(lambda a: a[i], result)
    chex.assert_trees_all_equal(row(mixed), row(alike))


def test_divergent_trial_is_contained(data):
  sane = bnjax.hparams(learning_rate=1e-2, optimizer='sgd')
  other_sane = bnjax.hparams(learning_rate=3e-2, optimizer='sgd')
  wild = bnjax.hparams(learning_rate=1e30, optimizer='sgd')
  keys = jnp.stack([jax.random.key(5), jax.random.key(6)])
  run = jax.jit(jax.vmap(bnjax.make_train(CONFIG), in_axes=(0, 0, None)))
  with_wild = run(stack([sane, wild]), keys, data)
  with_sane = run(stack([sane, other_sane]), keys, data)
  assert bool(with_wild.diverged[1]) and not bool(with_wild.diverged[0])
  assert not bool(with_sane.diverged[1])
  assert int(with_wild.diverged_step[1]) >= 0
  assert np.isnan(np.asarray(with_wild.metrics['dev_accuracy'][1, -1]))
  # Same batch shape, same program: the sane trial is bitwise the same next to
  # a diverged neighbour as next to a sane one.
  first = lambda result: jax.tree.map(lambda a: a[0], result)
  chex.assert_trees_all_equal(first(with_wild), first(with_sane))
  # The diverged trial's parameters are the last finite ones.
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(with_wild.params))


def test_diverged_params_stop_changing(data):
  hp = bnjax.hparams(learning_rate=1e30, optimizer='sgd')
  # One jitted epoch, called again and again (as `fit` does): the same
  # program each time, so equality is exact.
  epoch = jax.jit(bnjax.train_epoch, static_argnums=0)
  trial = jax.jit(bnjax.init_trial, static_argnums=0)(CONFIG, hp, jax.random.key(0), data)
  trial, _ = epoch(CONFIG, hp, trial, data)
  assert 0 <= int(trial.diverged_step) < 128 // 16  # It blew up in the first epoch...
  # ...so later epochs change neither params, BN statistics nor optimizer state.
  frozen = (trial.params, trial.model_state, trial.opt_state)
  for _ in range(2):
    trial, metrics = epoch(CONFIG, hp, trial, data)
    chex.assert_trees_all_equal((trial.params, trial.model_state, trial.opt_state), frozen)
    assert np.isnan(float(metrics['train_loss']))


def test_update_that_overflows_the_weights_is_caught_on_its_step(data):
  """A finite loss and finite gradients can still give inf weights: that step is the divergence."""
  # l2 = 1e3 makes the weight gradients about 1e2, so a learning rate of 1e38 overflows the
  # weights on the very first step while the loss (about 1e3) and the gradients stay finite.
  hp = bnjax.hparams(learning_rate=1e38, optimizer='sgd', l2=1e3)
  trial = jax.jit(bnjax.init_trial, static_argnums=0)(CONFIG, hp, jax.random.key(0), data)
  x, y = data.x_train[:16], data.y_train[:16]

  def cost(params):  # the step's objective, written out
    logits, _ = bnjax.mlp_apply(params, trial.model_state, x, training=True)
    return jnp.mean(bnjax.softmax_cross_entropy(logits, y)) + bnjax.l2_penalty(params, 1e3, 16)

  loss, grads = jax.jit(jax.value_and_grad(cost))(trial.params)
  chex.assert_tree_all_finite((loss, grads))  # what the old check looked at: all finite
  naive = jax.tree.map(lambda p, g: p - jnp.float32(1e38) * g, trial.params, grads)
  assert not all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(naive))

  step = jax.jit(bnjax.train_step, static_argnums=(0, 6))
  after, step_loss = step(CONFIG, hp, trial, x, y, jax.random.key(1), 128 // 16)
  assert np.isfinite(float(step_loss))
  assert int(after.diverged_step) == 0 and int(after.step) == 1
  # The rejected step changed nothing: the state is the input's, selected bitwise.
  chex.assert_trees_all_equal(
    (after.params, after.model_state, after.opt_state),
    (trial.params, trial.model_state, trial.opt_state),
  )

  result = jax.jit(bnjax.make_train(CONFIG))(hp, jax.random.key(0), data)
  assert bool(result.diverged) and int(result.diverged_step) == 0
  assert np.all(np.isnan(np.asarray(result.metrics['dev_accuracy'])))
  # The last finite weights are the initial ones. `init_trial` alone and inside the training
  # program are two programs computing the same few float32 operations per weight (a normal
  # draw times a scale): equal up to float32 rounding of that product.
  chex.assert_tree_all_finite((result.params, result.model_state))
  chex.assert_trees_all_close(
    (result.params, result.model_state), (trial.params, trial.model_state), rtol=1e-6, atol=0
  )


def test_mlp_apply_needs_a_static_training_flag_and_fitting_x():
  params, state = bnjax.mlp_init(jax.random.key(0), 6, (8,), 3)
  x = np.ones((5, 6), np.float32)
  traced = jax.jit(lambda t: bnjax.mlp_apply(params, state, x, training=t))
  with pytest.raises(TypeError, match=r'mlp_apply: training is traced.*static_argnames'):
    traced(True)
  with pytest.raises(TypeError, match='mlp_apply: training must be a Python bool; got ArrayImpl'):
    bnjax.mlp_apply(params, state, x, training=jnp.asarray(False))
  for bad in (np.ones((5, 7), np.float32), np.ones(6, np.float32)):
    with pytest.raises(ValueError, match=r'mlp_apply: x has shape .*takes \[batch, 6\]'):
      jax.eval_shape(lambda x: bnjax.mlp_apply(params, state, x, training=False), bad)
  # The static form works.
  static = jax.jit(bnjax.mlp_apply, static_argnames='training')
  chex.assert_shape(static(params, state, x, training=False)[0], (5, 3))


def test_select_best_returns_best_epoch_params(data):
  config = CONFIG._replace(epochs=6, select='best')
  hp = bnjax.hparams(learning_rate=0.3, optimizer='sgd')
  result = jax.jit(bnjax.make_train(config))(hp, jax.random.key(2), data)
  curve = np.asarray(result.metrics['dev_accuracy'])
  assert int(result.best_epoch) == int(np.argmax(curve))
  # `evaluate` alone is another program (same shapes) than the scan's: the loss
  # agrees to float32 rounding, the accuracy within one flipped example. The
  # loss pins the epoch: epochs differ in dev loss by far more than 1e-5.
  loss, acc = bnjax.evaluate(config, hp, result.params, result.model_state, data.x_dev, data.y_dev)
  np.testing.assert_allclose(loss, result.metrics['dev_loss'][int(result.best_epoch)], rtol=1e-5)
  np.testing.assert_allclose(acc, curve.max(), atol=ONE_DEV_EXAMPLE)


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
  # Equal shapes and arithmetic (x / 1 is exact): bitwise equal where both
  # programs fuse alike, as on the CPUs tried so far. The tolerance leaves room
  # for a compiler that fuses the two differently (a few float32 ulps), far
  # below what dropping even one unit would change.
  chex.assert_trees_all_close(with_rng, without, rtol=1e-6, atol=1e-7)
  dropped = jax.jit(bnjax.make_train(CONFIG))(
    bnjax.hparams(learning_rate=1e-2, keep_prob=0.5), jax.random.key(4), data
  )
  assert not np.allclose(dropped.metrics['train_loss'], with_rng.metrics['train_loss'])


def test_leaving_the_l2_term_out_equals_l2_zero_and_ignores_l2(data):
  """`l2_penalty=False` saves a pass over the weights: l2 = 0 trains the same."""
  hp = bnjax.hparams(learning_rate=1e-2, l2=0.0)
  train = lambda config, hp: jax.jit(bnjax.make_train(config))(hp, jax.random.key(5), data)
  with_term = train(CONFIG, hp)
  without = train(CONFIG._replace(l2_penalty=False), hp)
  # The gradient gains 0 * w (exact for finite weights); the tolerance only
  # leaves room for a compiler that fuses the two programs differently.
  chex.assert_trees_all_close(with_term, without, rtol=1e-6, atol=1e-7)
  # The flag means it: a large l2 changes training with the term, not without it.
  heavy = bnjax.hparams(learning_rate=1e-2, l2=50.0)
  assert not np.allclose(
    train(CONFIG, heavy).params['layers'][0]['w'], with_term.params['layers'][0]['w']
  )
  chex.assert_trees_all_close(train(CONFIG._replace(l2_penalty=False), heavy), without)


def test_fit_epoch_by_epoch_equals_make_train(data):
  """The launchers' path (one jitted epoch per call, a callback each) trains what `train` does."""
  hp = bnjax.hparams(learning_rate=1e-2, keep_prob=0.8, lr_schedule='inverse_time', lr_decay=0.1)
  seen = []
  fitted = bnjax.fit(
    CONFIG, hp, jax.random.key(3), data, on_epoch=lambda epoch, m: seen.append((epoch, m))
  )
  scanned = jax.jit(bnjax.make_train(CONFIG))(hp, jax.random.key(3), data)
  assert [epoch for epoch, _ in seen] == list(range(CONFIG.epochs))
  assert all(type(value) is float for _, m in seen for value in m.values())
  np.testing.assert_array_equal(
    [m['train_loss'] for _, m in seen], np.asarray(fitted.metrics['train_loss'])
  )
  # Equal shapes, but a scan over epochs against one call per epoch: two
  # programs that XLA may fuse differently, so float32 rounding over 32 steps,
  # and an accuracy within one flipped example.
  continuous = lambda result: (result.params, result.model_state, result.metrics['train_loss'])
  chex.assert_trees_all_close(continuous(fitted), continuous(scanned), rtol=2e-4, atol=2e-5)
  chex.assert_trees_all_close(
    fitted.metrics['dev_accuracy'], scanned.metrics['dev_accuracy'], atol=ONE_DEV_EXAMPLE
  )
  assert not bool(fitted.diverged) and int(fitted.diverged_step) == -1


def test_eval_every_skips_dev_metrics_only(data):
  """eval_every=3 over 7 epochs: dev metrics at epochs 3, 6, 7, NaN between; training identical."""
  config = CONFIG._replace(epochs=7)
  hp = stack([bnjax.hparams(learning_rate=1e-2), bnjax.hparams(learning_rate=3e-2)])
  keys = jax.random.split(jax.random.key(2), 2)
  run = lambda c: jax.jit(jax.vmap(bnjax.make_train(c), in_axes=(0, 0, None)))(hp, keys, data)
  every, sparse = run(config), run(config._replace(eval_every=3))
  chex.assert_trees_all_equal(sparse.params, every.params)
  chex.assert_trees_all_equal(sparse.metrics['train_loss'], every.metrics['train_loss'])
  evaluated = np.asarray([False, False, True, False, False, True, True])
  for name in ('dev_loss', 'dev_accuracy'):
    dense, thin = np.asarray(every.metrics[name]), np.asarray(sparse.metrics[name])
    np.testing.assert_array_equal(thin[:, evaluated], dense[:, evaluated])
    assert np.isnan(thin[:, ~evaluated]).all()
  # The evaluation is a branch, not computed and masked: the program has a conditional.
  text = (
    jax.jit(bnjax.make_train(config._replace(eval_every=3)))
    .lower(bnjax.hparams(), keys[0], data)
    .as_text()
  )
  assert 'stablehlo.case' in text or 'stablehlo.if' in text


def test_eval_every_rejects_select_best_and_zero(data):
  train = lambda c: bnjax.make_train(c)(bnjax.hparams(), jax.random.key(0), data)
  with pytest.raises(ValueError, match="select='final'"):
    train(CONFIG._replace(eval_every=2, select='best'))
  with pytest.raises(ValueError, match='eval_every must be >= 1'):
    train(CONFIG._replace(eval_every=0))


def test_bfloat16_matmuls_track_float32(data):
  """bfloat16 inputs, float32 sums: the forward pass within bfloat16 rounding, training close."""
  hp = bnjax.hparams(learning_rate=1e-2)
  x = data.x_train[:16]
  params, state = bnjax.nn.mlp_init(jax.random.key(0), 6, (8, 8), 3)
  logits = {
    dtype: bnjax.nn.mlp_apply(params, state, x, training=False, matmul_dtype=dtype)[0]
    for dtype in ('float32', 'bfloat16')
  }
  assert logits['bfloat16'].dtype == jnp.float32
  np.testing.assert_allclose(logits['bfloat16'], logits['float32'], rtol=0.05, atol=0.05)
  assert not np.array_equal(logits['bfloat16'], logits['float32'])  # the option does something
  # Reference: the same matmul with inputs rounded by NumPy-side casting, summed in float32.
  w = params['layers'][0]['w']
  rounded = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32))
  np.testing.assert_allclose(
    bnjax.nn.precision.matmul(x, w, 'bfloat16'), rounded(x) @ rounded(w), rtol=1e-5, atol=1e-6
  )
  results = {
    dtype: jax.jit(bnjax.make_train(CONFIG._replace(epochs=6, matmul_dtype=dtype)))(
      hp, jax.random.key(0), data
    )
    for dtype in ('float32', 'bfloat16')
  }
  acc = {dtype: float(r.metrics['dev_accuracy'][-1]) for dtype, r in results.items()}
  assert acc['bfloat16'] >= acc['float32'] - 3 * ONE_DEV_EXAMPLE, acc
  with pytest.raises(ValueError, match='matmul_dtype'):
    bnjax.make_train(CONFIG._replace(matmul_dtype='float16'))(hp, jax.random.key(0), data)


@pytest.mark.parametrize('rows', [1, 7, 12])
def test_bfloat16_matmul_gradients_round_their_inputs_too(rows):
  """Both backward matmuls: bfloat16-rounded inputs (the incoming gradient too), float32 sums."""
  a = jax.random.normal(jax.random.key(0), (2, rows, 5))  # [trials, rows, in]
  w = jax.random.normal(jax.random.key(1), (2, 5, 3))
  c = jax.random.normal(jax.random.key(2), (2, rows, 3))  # d loss / d out, exactly
  loss = lambda a, w, c: jnp.sum(bnjax.nn.precision.matmul(a, w, 'bfloat16') * c)
  da, dw = jax.jit(jax.vmap(jax.grad(loss, (0, 1))))(a, w, c)
  rounded = lambda v: np.asarray(jnp.asarray(v, jnp.bfloat16), np.float64)
  a64, w64, g = rounded(a), rounded(w), rounded(c)
  assert da.dtype == dw.dtype == jnp.float32
  np.testing.assert_allclose(da, g @ np.swapaxes(w64, 1, 2), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(dw, np.swapaxes(a64, 1, 2) @ g, rtol=1e-5, atol=1e-5)

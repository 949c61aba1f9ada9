"""Cross-validated selection (`cv=K`): stratified folds, fold runs as runs, the test split once.

The reference trains each (trial, fold) run by hand with `make_train` on the
fold's arrays, in a program of the engine's shape (one device, one chunk), so
its numbers must equal the engine's bit for bit.
"""

import copy
import csv
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_launchers import launch, succeeded

import bnjax
from bnjax.search import SearchError, folds, run, run_trials, top_k, trial_keys
from bnjax.training import predict

pytestmark = pytest.mark.usefixtures('search_compile_cache')

K = 3
TABLE = {
  'hidden_units': np.asarray([12, 12]),
  'num_layers': np.asarray([1, 1]),
  'learning_rate': np.asarray([3e-2, 3e-3]),
  'batch_size': np.asarray([32, 32]),
  'keep_prob': np.asarray([1.0, 1.0]),
}
OPTIONS = dict(epochs=2, cv=K, width_ratio=None, test=False)


@pytest.fixture(scope='module')
def splits(blob_splits):
  return blob_splits


# ----------------------------------------------------------------------------- folds


@pytest.mark.parametrize('k', [2, 3, 5, 7])
@pytest.mark.parametrize('counts', [(50, 30, 20), (7, 13, 1, 40), (11,) * 9])
def test_folds_are_stratified_equal_and_disjoint(k, counts):
  y = np.repeat(np.arange(len(counts)), counts)
  y = np.random.default_rng(1).permutation(y)  # the assignment must not rely on sorted labels
  fold = folds.fold_assignment(y, k)
  assert np.sum(fold < 0) == len(y) % k  # fewer than k left out
  sizes = np.bincount(fold[fold >= 0], minlength=k)
  assert np.all(sizes == len(y) // k)
  for label in range(len(counts)):
    per_fold = np.bincount(fold[(fold >= 0) & (y == label)], minlength=k)
    assert per_fold.max() - per_fold.min() <= 1, (label, per_fold)
  np.testing.assert_array_equal(fold, folds.fold_assignment(y, k))  # a fixed seed


def test_make_folds_holds_out_each_fold_once(splits):
  made = folds.make_folds(splits, K)
  pool = np.concatenate([splits.x_train, splits.x_dev])
  rows_of = lambda x: {tuple(row) for row in np.asarray(x)}
  held = [rows_of(made.data.x_dev[f]) for f in range(K)]
  assert made.dropped == len(pool) % K
  assert sum(len(h) for h in held) == len(pool) - made.dropped
  assert set().union(*held) <= rows_of(pool)
  for f in range(K):
    fit = rows_of(made.data.x_train[f])
    assert not fit & held[f]
    assert fit == set().union(*held[:f], *held[f + 1 :])
  assert made.splits.x_train.shape == made.data.x_train.shape[1:]
  np.testing.assert_array_equal(made.splits.x_test, splits.x_test)


# ----------------------------------------------------------------------------- runs


@functools.cache
def fold_program(config):
  train = bnjax.make_train(config)
  one = lambda hp, key, data, fold: train(hp, key, folds.fold_data(data, fold))
  return jax.jit(jax.vmap(one, in_axes=(0, 0, None, 0)))


def by_hand(splits, trials):
  """Every (trial, fold) run of `trials` trained without the engine: `[runs]` final metrics."""
  config = bnjax.TrainConfig(
    epochs=2, batch_size=32, hidden_sizes=(12,), num_classes=3, dropout=False
  )
  hps = [
    bnjax.hparams(learning_rate=TABLE['learning_rate'][t], widths=[12], depth=1)
    for t in trials
    for _ in range(K)
  ]
  hp = jax.tree.map(lambda *leaves: jnp.stack(leaves), *hps)
  runs = np.tile(np.arange(K), len(trials))
  keys = trial_keys(0, np.repeat(np.asarray(trials), K), runs)
  data = jax.tree.map(jnp.asarray, folds.make_folds(splits, K).data)
  return jax.device_get(fold_program(config)(hp, keys, data, jnp.asarray(runs % K)).metrics)


@pytest.fixture(scope='module')
def one_chunk(splits):
  return run_trials(TABLE, splits, devices=jax.devices()[:1], chunk_size=2 * K, **OPTIONS)


def test_a_trial_is_its_folds_mean_and_spread(splits, one_chunk):
  metrics = by_hand(splits, [0, 1])
  for trial in range(2):
    final = metrics['dev_accuracy'][trial * K : (trial + 1) * K, -1].astype(np.float64)
    row = one_chunk.rows[trial]
    assert row['dev_accuracy'] == np.mean(final)
    assert row['dev_accuracy_std'] == np.std(final)
    for name in ('train_loss', 'dev_loss', 'dev_accuracy'):
      np.testing.assert_array_equal(
        one_chunk.curves[name][trial], metrics[name][trial * K : (trial + 1) * K].mean(0)
      )
  assert np.all(one_chunk.column('dev_accuracy_std') > 0), 'folds should disagree'
  assert one_chunk.info['cv'] == K and one_chunk.info['cv_dropped'] == 260 % K


def test_a_runs_numbers_depend_on_its_trial_id_not_its_chunk(splits, one_chunk):
  options = dict(devices=jax.devices()[:1], chunk_size=K, **OPTIONS)
  alone = run_trials(TABLE, splits, **options)  # one trial per chunk
  swapped = {name: column[::-1] for name, column in TABLE.items()}
  reordered = run_trials(swapped, splits, trial_ids=np.asarray([1, 0]), **options)
  for name in ('dev_accuracy', 'dev_accuracy_std', 'dev_loss', 'train_loss'):
    np.testing.assert_array_equal(alone.column(name), reordered.column(name)[::-1])
  # Another chunk shape is another program: equal to float32 rounding (see
  # tests/test_search_engine.py `assert_close_trials`); one of 86 dev rows may flip.
  np.testing.assert_allclose(alone.column('dev_loss'), one_chunk.column('dev_loss'), rtol=1e-4)
  np.testing.assert_allclose(
    alone.column('dev_accuracy'), one_chunk.column('dev_accuracy'), atol=1.01 / 86
  )


def test_the_test_split_is_seen_once_by_the_fold_ensemble_of_the_top_k(splits, one_chunk):
  del one_chunk
  results = run_trials(TABLE, splits, top_k=1, devices=jax.devices()[:1], **OPTIONS)
  (candidate,) = results.candidates
  winner = results.best(1)[0]
  assert candidate.row['trial_id'] == winner['trial_id']
  run_of = lambda tree, r: jax.tree.map(lambda leaf: leaf[r], tree)
  probs = [
    jax.nn.softmax(
      predict(
        candidate.config,
        candidate.hp,
        run_of(candidate.params, r),
        run_of(candidate.model_state, r),
        splits.x_test,
      )
    )
    for r in range(K)
  ]
  want = np.mean(np.argmax(np.mean(probs, axis=0), axis=-1) == splits.y_test)
  calls = []
  make = folds.ensemble_program(K)

  def counting(config):
    program = make(config)
    return lambda *args: calls.append(1) or program(*args)

  # A search in rounds (coarse_to_fine) tests its candidates with no program given:
  # a cross-validated candidate still gets its fold ensemble, not its folds' mean.
  by_default = top_k.test_top_k(copy.deepcopy(results), splits, 1)
  tested = top_k.test_top_k(results, splits, 1, counting)
  assert len(calls) == 1
  np.testing.assert_array_equal(by_default.column('test_accuracy'), tested.column('test_accuracy'))
  folds_mean = np.mean([np.mean(np.argmax(p, axis=-1) == splits.y_test) for p in probs])
  assert abs(folds_mean - want) > 1e-6, "pick a table whose ensemble and its folds' mean differ"
  by_id = {row['trial_id']: row['test_accuracy'] for row in tested.rows}
  np.testing.assert_allclose(by_id.pop(winner['trial_id']), want, atol=1e-6)
  assert all(np.isnan(value) for value in by_id.values())


def test_training_never_reads_the_test_split(splits, one_chunk):
  scrambled = splits._replace(x_test=np.full_like(splits.x_test, np.nan))
  again = run_trials(TABLE, scrambled, devices=jax.devices()[:1], chunk_size=2 * K, **OPTIONS)
  for name in ('dev_accuracy', 'dev_accuracy_std', 'dev_loss'):
    np.testing.assert_array_equal(again.column(name), one_chunk.column(name))


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize('cv', [1, 0, 2.5, 'five', True])
def test_a_bad_cv_fails_before_any_compute(splits, cv, monkeypatch):
  monkeypatch.setattr(bnjax.search.segments, 'programs', lambda *a, **k: pytest.fail('compiled'))
  with pytest.raises(SearchError, match='cv must be an integer >= 2'):
    run_trials(TABLE, splits, epochs=1, cv=cv)


def test_cv_refuses_a_study(splits, tmp_path):
  with pytest.raises(SearchError, match='cv runs in memory'):
    run('random', 'learning_rate=log:1e-3:1e-1', splits, num_trials=2, cv=3, output_dir=tmp_path)


def test_launcher_cv_writes_the_spread(blob_npz, tmp_path):
  output = tmp_path / 'cv'
  flags = (f'--dataset={blob_npz}', '--num_trials=2', '--epochs=1', '--cv=3', '--top_k=1')
  done = launch('random_search.py', *flags, f'--output_dir={output}', timeout=300)
  assert succeeded(done)
  with open(output / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == 2
  assert all(float(row['dev_accuracy_std']) > 0 for row in rows)
  assert sum(row['test_accuracy'] not in ('', 'nan', 'NaN') for row in rows) == 1

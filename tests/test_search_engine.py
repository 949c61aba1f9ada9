"""The search engine: results in trial order, independent of neighbours, chunks and devices.

Every `run_trials` call jits its buckets anew, and a train program takes
seconds to compile on a small CPU, so the tables share a few programs (a
session-wide persistent compilation cache compiles each distinct one once):
most runs are one bucket padded to (12, 12) hidden units with batch norm, on
the four CPU devices in chunks of 4 trials, as in the strategy tests.
"""

import csv
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bnjax
from bnjax.search import engine, random_search, run_trials
from bnjax.search.engine import trial_keys
from bnjax.space import DEFAULTS, LogUniform, Uniform

pytestmark = pytest.mark.usefixtures('search_compile_cache')


@pytest.fixture(scope='module')
def splits(blob_splits):
  return blob_splits


EPOCHS = 2
RTOL, ATOL = 1e-5, 1e-6
CURVES = ('train_loss', 'dev_loss', 'dev_accuracy')
# One bucket per static setting however far apart the widths are, so that
# padding is what gets tested.
ONE_BUCKET = {'width_ratio': None}

# Six sane trials in one bucket padded to (12, 12), widths close enough that
# no width-based bucketing splits them.
TABLE = {
  'hidden_units': [12, 10, 11, 12, 10, 12],
  'num_layers': [2, 1, 2, 1, 2, 2],
  'learning_rate': [1e-2, 3e-2, 3e-3, 1e-1, 2e-2, 5e-3],
  'optimizer': ['adam', 'momentum', 'adam', 'sgd', 'rmsprop', 'adam'],
  'keep_prob': [1.0, 0.8, 1.0, 0.9, 1.0, 0.7],
  'batch_size': [32] * 6,
}


def columns(**values):
  return {name: np.asarray(column) for name, column in values.items()}


def run(table, splits, **options):
  return run_trials(columns(**table), splits, **{'epochs': EPOCHS, **ONE_BUCKET, **options})


def assert_same_trials(got, want, trials_got, trials_want=None, exact=False):
  """Curves and row metrics of some trials of `got` equal those of `want`."""
  trials_want = trials_got if trials_want is None else trials_want
  check = (
    np.testing.assert_array_equal
    if exact
    else (lambda a, b: np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL))
  )
  for name in CURVES:
    check(got.curves[name][trials_got], want.curves[name][trials_want])
  for name in ('dev_accuracy', 'dev_loss', 'train_loss', 'best_epoch'):
    check(got.column(name)[trials_got], want.column(name)[trials_want])
  assert list(got.column('status')[trials_got]) == list(want.column('status')[trials_want])


@pytest.fixture(scope='module')
def chunked(splits):
  """TABLE on 4 devices in chunks of 4 (twice), and on 1 device in chunks of 2 or 6."""
  devices = jax.devices()
  assert len(devices) == 4, 'tests/conftest.py should give four CPU devices'
  one = devices[:1]
  return {
    'four_devices': run(TABLE, splits, chunk_size=4, test=False),
    'again': run(TABLE, splits, chunk_size=4, test=False),
    'chunk_2': run(TABLE, splits, devices=one, chunk_size=2, test=False),
    'one_device': run(TABLE, splits, devices=one, test=False),
  }


# ------------------------------------------------------------------------------ results


@pytest.fixture(scope='module')
def searched(splits):
  space = {
    'learning_rate': LogUniform(1e-3, 3e-1),
    'keep_prob': Uniform(0.7, 1.0),
    'hidden_units': 12,
    'num_layers': 2,
    'batch_size': 32,
  }
  return random_search(space, splits, 4, seed=3, epochs=EPOCHS, top_k=2, chunk_size=4)


def test_results_rows_in_trial_order_with_every_column(searched):
  results, n = searched, 4
  assert len(results) == n
  assert list(results.column('trial_id')) == list(range(n))
  for name in (
    'trial_id',
    *DEFAULTS,
    'bucket',
    'status',
    'dev_accuracy',
    'dev_loss',
    'best_epoch',
    'train_loss',
    'test_accuracy',
  ):
    assert name in results.columns, name
    assert all(name in row for row in results.rows), name
  assert results.searched[:2] == ('learning_rate', 'keep_prob')
  rates = results.column('learning_rate')
  assert np.all((rates >= 1e-3) & (rates <= 3e-1)) and len(set(rates)) == n
  assert set(results.column('hidden_units')) == {12}
  assert set(results.column('optimizer')) == {DEFAULTS['optimizer']}
  assert set(results.column('status')) == {'ok'}
  for name in CURVES:
    assert results.curves[name].shape == (n, EPOCHS)
  # select='final': a row's dev metrics are its curves at the last epoch.
  np.testing.assert_array_equal(
    results.column('dev_accuracy'), results.curves['dev_accuracy'][:, -1]
  )
  np.testing.assert_array_equal(results.column('dev_loss'), results.curves['dev_loss'][:, -1])
  np.testing.assert_array_equal(results.column('train_loss'), results.curves['train_loss'][:, -1])
  accuracy = results.column('dev_accuracy')
  assert np.all((accuracy > 0.2) & (accuracy <= 1.0))
  np.testing.assert_allclose(accuracy * 60, np.round(accuracy * 60), atol=1e-4)
  assert len(set(accuracy)) > 1, 'trials with different rates should not all tie'


def test_best_ranks_by_dev_accuracy_and_only_top_k_see_test(searched):
  results = searched
  ranked = results.best(len(results))
  accuracy = [row['dev_accuracy'] for row in ranked]
  assert accuracy == sorted(accuracy, reverse=True)
  assert [row['trial_id'] for row in results.best(2)] == [row['trial_id'] for row in ranked[:2]]
  tested = {row['trial_id'] for row in results.rows if math.isfinite(row['test_accuracy'])}
  assert tested == {row['trial_id'] for row in ranked[:2]}
  for row in ranked[:2]:
    assert 0.2 < row['test_accuracy'] <= 1.0
  lines = results.summary().splitlines()
  assert lines[0].split()[:2] == ['rank', 'trial']
  assert lines[2].split()[:2] == ['1', str(ranked[0]['trial_id'])]
  assert len(lines) == 2 + len(results)


def test_csv_and_dataframe_have_one_row_per_trial(searched, tmp_path):
  results = searched
  path = tmp_path / 'trials.csv'
  results.to_csv(path)
  with open(path, newline='') as f:
    reader = csv.DictReader(f)
    rows = list(reader)
  assert reader.fieldnames == list(results.columns)
  assert [int(row['trial_id']) for row in rows] == list(range(len(results)))
  np.testing.assert_allclose(
    [float(row['dev_accuracy']) for row in rows], results.column('dev_accuracy')
  )
  assert [row['optimizer'] for row in rows] == list(results.column('optimizer'))
  frame = results.to_dataframe()
  assert len(frame) == len(results) and list(frame.columns) == list(results.columns)
  np.testing.assert_array_equal(frame['trial_id'], np.arange(len(results)))
  np.testing.assert_allclose(frame['learning_rate'], results.column('learning_rate'))


# ------------------------------------------------------------------- independence


def test_results_do_not_depend_on_the_widths_of_neighbours(splits):
  # A (narrow, with dropout) alone is padded to width 4; beside B, to width 12.
  narrow = {
    'hidden_units': [4, 3],
    'num_layers': [2, 2],
    'learning_rate': [1e-2, 3e-2],
    'optimizer': ['adam', 'momentum'],
    'keep_prob': [0.8, 0.9],
    'batch_size': [32, 32],
  }
  wide = {
    name: [*column, value]
    for (name, column), value in zip(narrow.items(), [12, 2, 1e-2, 'adam', 1.0, 32], strict=True)
  }
  alone = run(narrow, splits, test=False)
  beside = run(wide, splits, test=False)
  assert beside.info['buckets'] == 1, 'A and B must share one padded program'
  assert_same_trials(beside, alone, [0, 1])
  assert not np.allclose(beside.curves['train_loss'][2], alone.curves['train_loss'][0])


def test_results_do_not_depend_on_the_depths_of_neighbours(splits):
  shallow = {
    'hidden_units': [12, 12],
    'num_layers': [1, 1],
    'learning_rate': [1e-2, 3e-2],
    'keep_prob': [0.8, 1.0],
    'batch_size': [32, 32],
  }
  deep = {
    name: [*column, value]
    for (name, column), value in zip(shallow.items(), [12, 2, 1e-2, 1.0, 32], strict=True)
  }
  alone = run(shallow, splits, test=False)
  beside = run(deep, splits, test=False)
  assert beside.info['buckets'] == 1
  assert_same_trials(beside, alone, [0, 1])


def test_results_do_not_depend_on_chunk_size(chunked):
  trials = list(range(len(TABLE['learning_rate'])))
  # (On 4 devices, chunks of 4 give each device a chunk of 1: see the next tests.)
  assert chunked['chunk_2'].info['chunks'] == 3 and chunked['one_device'].info['chunks'] == 1
  assert_same_trials(chunked['chunk_2'], chunked['one_device'], trials)
  assert len(set(chunked['one_device'].column('dev_loss'))) == len(trials)


def test_same_seed_is_bitwise_reproducible(chunked):
  trials = list(range(len(TABLE['learning_rate'])))
  assert_same_trials(chunked['again'], chunked['four_devices'], trials, exact=True)


def test_results_do_not_depend_on_device_count(chunked):
  four, one = chunked['four_devices'], chunked['one_device']
  assert four.info['devices'] == 4 and one.info['devices'] == 1
  assert four.info['chunks'] == 2  # one trial per device, twice
  assert_same_trials(four, one, list(range(len(TABLE['learning_rate']))))


def test_divergent_neighbours_leave_sane_trials_alone(splits, chunked):
  # On one device all six trials share one vmap; trials 1 and 3 blow up.
  wild = {name: list(column) for name, column in TABLE.items()}
  for trial in (1, 3):
    wild['optimizer'][trial], wild['learning_rate'][trial] = 'sgd', 1e6
  results = run(wild, splits, devices=jax.devices()[:1], test=False)
  assert list(results.column('status')) == ['ok', 'diverged', 'ok', 'diverged', 'ok', 'ok']
  steps = results.column('diverged_step')
  assert steps[1] >= 0 and steps[3] >= 0 and set(steps[[0, 2, 4, 5]]) == {-1}
  for trial in (1, 3):
    row = results.rows[trial]
    assert math.isnan(row['dev_accuracy']) and math.isnan(row['dev_loss'])
    assert math.isnan(row['train_loss'])
    assert np.isnan(results.curves['dev_accuracy'][trial, -1])
  assert_same_trials(results, chunked['one_device'], [0, 2, 4, 5])
  assert [row['trial_id'] for row in results.best(6)[-2:]] == [1, 3]
  assert all(row['status'] == 'ok' for row in results.best(4))


# ------------------------------------------------------------------------------- buckets


def test_one_compile_per_bucket_and_rows_back_in_trial_order(splits):
  # Bucket 0: BN, (12, 12), the strategy tests' program. Bucket 1: no BN, one
  # layer (cheap to compile).
  table = {
    'hidden_units': [12, 10, 11, 12, 10, 12, 11, 12],
    'num_layers': [2, 1, 2, 2, 1, 2, 1, 1],
    'learning_rate': [1e-2, 3e-2, 3e-3, 1e-1, 2e-2, 5e-3, 2e-2, 3e-2],
    'batch_norm': [True, False, True, True, False, True, True, False],
    'batch_size': [32] * 8,
  }
  mixed = run(table, splits, chunk_size=4, test=False)
  with_bn = run({**table, 'batch_norm': [True] * 8}, splits, chunk_size=4, test=False)
  info = mixed.info
  assert info['compiles'] == info['buckets'] == 2
  assert info['chunks'] == 3  # BN: 5 trials in chunks of 4; no BN: 3
  assert list(mixed.column('trial_id')) == list(range(8))
  assert list(mixed.column('batch_norm')) == table['batch_norm']
  assert list(mixed.column('bucket')) == [0, 1, 0, 0, 1, 0, 0, 1]
  np.testing.assert_array_equal(mixed.column('learning_rate'), table['learning_rate'])
  # The BN trials ran in chunks {0, 2, 3, 5}, {6} here and {0..3}, {4..7}
  # there; each row still holds its own trial's numbers.
  assert_same_trials(mixed, with_bn, [0, 2, 3, 5, 6])
  for trial in (1, 4, 7):
    assert not np.allclose(mixed.curves['train_loss'][trial], with_bn.curves['train_loss'][trial])


def test_select_best_picks_the_best_epoch(splits):
  table = {
    'hidden_units': [12, 10, 12, 11],
    'num_layers': [1, 1, 1, 1],
    'learning_rate': [3e-1, 1.0, 3e-2, 1e-2],
    'optimizer': ['sgd', 'sgd', 'adam', 'adam'],
    'batch_size': [32] * 4,
  }
  results = run(table, splits, epochs=4, select='best', test=False)
  curve = results.curves['dev_accuracy']
  best_epoch = results.column('best_epoch')
  np.testing.assert_array_equal(best_epoch, np.argmax(curve, axis=1))
  np.testing.assert_array_equal(results.column('dev_accuracy'), curve.max(axis=1))
  trials = np.arange(len(results))
  np.testing.assert_array_equal(
    results.column('dev_loss'), results.curves['dev_loss'][trials, best_epoch]
  )
  np.testing.assert_array_equal(
    results.column('train_loss'), results.curves['train_loss'][trials, best_epoch]
  )
  assert np.any(best_epoch < 3), 'pick a table where some trial peaks before the last epoch'


# ---------------------------------------------------------------------------- executions

EXECUTIONS_TABLE = {
  'hidden_units': [12, 11, 10],
  'num_layers': [2, 2, 1],
  'learning_rate': [2e-2, 3e-1, 1e-3],
  'optimizer': ['adam', 'sgd', 'adam'],
  'keep_prob': [0.8, 1.0, 0.9],
  'batch_size': [32] * 3,
}


@pytest.fixture(scope='module')
def executions(splits):
  """Three trials x three executions, in chunks of 4, and each execution by hand."""
  seed, count = 7, 3
  results = run(
    EXECUTIONS_TABLE, splits, seed=seed, executions_per_trial=count, chunk_size=4, top_k=3
  )
  config = bnjax.TrainConfig(epochs=EPOCHS, batch_size=32, hidden_sizes=(12, 12), num_classes=3)
  hps = []
  for trial in range(3):
    width, depth = EXECUTIONS_TABLE['hidden_units'][trial], EXECUTIONS_TABLE['num_layers'][trial]
    hps += [
      bnjax.hparams(
        learning_rate=EXECUTIONS_TABLE['learning_rate'][trial],
        optimizer=EXECUTIONS_TABLE['optimizer'][trial],
        keep_prob=EXECUTIONS_TABLE['keep_prob'][trial],
        widths=[width, width if depth > 1 else 1],
        depth=depth,
      )
    ] * count
  hp = jax.tree.map(lambda *leaves: jnp.stack(leaves), *hps)
  keys = trial_keys(seed, np.repeat(np.arange(3), count), np.tile(np.arange(count), 3))
  data = bnjax.TrainData(*(jnp.asarray(a) for a in splits[:4]))
  x_test, y_test = jnp.asarray(splits.x_test), jnp.asarray(splits.y_test)

  def train_and_test(hp, key):
    result = bnjax.make_train(config)(hp, key, data)
    _, accuracy = bnjax.evaluate(config, hp, result.params, result.model_state, x_test, y_test)
    return result.metrics, accuracy

  metrics, tested = jax.jit(jax.vmap(train_and_test))(hp, keys)
  per_run = {name: np.asarray(metrics[name]).reshape(3, count, EPOCHS) for name in CURVES}
  return results, per_run, np.asarray(tested).reshape(3, count)


def test_executions_report_the_mean_of_their_runs(executions):
  results, per_run, _ = executions
  assert len(results) == 3 and list(results.column('trial_id')) == [0, 1, 2]
  final = {name: per_run[name][:, :, -1] for name in CURVES}
  np.testing.assert_allclose(
    results.column('dev_accuracy'), final['dev_accuracy'].mean(1), rtol=RTOL, atol=ATOL
  )
  np.testing.assert_allclose(
    results.column('dev_accuracy_std'), final['dev_accuracy'].std(1), rtol=RTOL, atol=ATOL
  )
  np.testing.assert_allclose(results.column('dev_loss'), final['dev_loss'].mean(1), rtol=RTOL)
  np.testing.assert_allclose(results.column('train_loss'), final['train_loss'].mean(1), rtol=RTOL)
  for name in CURVES:
    np.testing.assert_allclose(results.curves[name], per_run[name].mean(1), rtol=RTOL, atol=ATOL)
  assert np.any(results.column('dev_accuracy_std') > 0), 'the seeds should disagree somewhere'
  # Trial 0's three runs finished in the first chunk: its test accuracy is theirs.
  _, _, tested = executions
  np.testing.assert_allclose(results.rows[0]['test_accuracy'], tested[0].mean(), rtol=RTOL)


def test_executions_straddling_chunks_are_tested_with_their_own_params(executions):
  results, _, tested = executions
  np.testing.assert_allclose(results.column('test_accuracy'), tested.mean(1), rtol=RTOL)


# -------------------------------------------------------------------------------- errors


def test_bad_requests_fail_before_any_compute(splits, monkeypatch):
  calls = []
  progress = lambda done, total: calls.append(done)
  monkeypatch.setattr(engine, 'make_train', lambda config: calls.append(config))
  with pytest.raises(ValueError, match='batch_size 500 exceeds the 200 training examples'):
    run({**TABLE, 'batch_size': [32, 500, 32, 32, 32, 32]}, splits, progress=progress)
  with pytest.raises(ValueError, match='executions_per_trial must be >= 1; got 0'):
    run(TABLE, splits, executions_per_trial=0, progress=progress)
  with pytest.raises(ValueError, match='num_trials must be >= 1'):
    random_search({'learning_rate': LogUniform(1e-3, 1e-1)}, splits, 0, progress=progress)
  assert calls == []

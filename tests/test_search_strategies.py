"""Random, grid and coarse-to-fine search: which trials they run, and what they report.

Every space here fixes 12 units x 2 layers and batch size 32, so each search of
4 trials runs the same compiled program (see tests/test_search_engine.py).
"""

import math

import numpy as np
import pytest

from bnjax.search import coarse_to_fine, grid_search, random_search
from bnjax.space import Fixed, LogUniform, Uniform

pytestmark = pytest.mark.usefixtures('search_compile_cache')


@pytest.fixture(scope='module')
def splits(blob_splits):
  return blob_splits


EPOCHS = 2
N = 4
FIXED = {'hidden_units': 12, 'num_layers': 2, 'batch_size': 32}
SPACE = {'learning_rate': LogUniform(1e-3, 1e-1), 'keep_prob': Uniform(0.8, 1.0), **FIXED}
SPEC = (
  'learning_rate=log:1e-3:1e-1,keep_prob=uniform:0.8:1.0,hidden_units=fixed:12,'
  'num_layers=fixed:2,batch_size=fixed:32'
)


def test_grid_search_runs_the_cartesian_product(splits):
  results = grid_search(SPACE, splits, 2, epochs=EPOCHS, top_k=1)
  assert len(results) == 4 and list(results.column('trial_id')) == [0, 1, 2, 3]
  pairs = sorted(zip(results.column('learning_rate'), results.column('keep_prob'), strict=True))
  assert pairs == [(1e-3, 0.8), (1e-3, 1.0), (1e-1, 0.8), (1e-1, 1.0)]
  assert set(results.column('hidden_units')) == {12}
  assert results.scales['learning_rate'] == 'log' and results.scales['keep_prob'] == 'linear'
  assert np.isfinite(results.column('test_accuracy')).sum() == 1
  assert math.isfinite(results.best(1)[0]['test_accuracy'])
  # The four trials trained differently (ten times the learning rate shows).
  assert len(set(results.column('train_loss'))) == 4


@pytest.fixture(scope='module')
def rounds(splits):
  return coarse_to_fine(
    SPACE, splits, N, rounds=2, keep=0.25, shrink=0.5, seed=1, top_k=2, epochs=EPOCHS
  )


def test_coarse_to_fine_runs_rounds_with_fresh_ids(rounds):
  results = rounds
  assert len(results) == 2 * N
  assert list(results.column('trial_id')) == list(range(2 * N))
  assert list(results.column('round')) == [0] * N + [1] * N
  assert 'round' in results.columns
  assert results.curves['dev_accuracy'].shape == (2 * N, EPOCHS)
  # Trial ids go on across rounds, so round 1 trains with fresh keys: no two
  # trials (even with close hyperparameters) give the same curve.
  assert len({tuple(curve) for curve in results.curves['train_loss']}) == 2 * N


def test_coarse_to_fine_narrows_around_the_best_of_round_0(rounds):
  rows = rounds.rows
  first, second = rows[:N], rows[N:]
  best = min(first, key=lambda row: (-row['dev_accuracy'], row['dev_loss']))
  rates = np.log10([row['learning_rate'] for row in second])
  assert np.all((rates >= -3) & (rates <= -1)), 'inside the original range'
  # keep=0.25 keeps the one best trial; shrink=0.5 halves the two decades.
  assert rates.max() - rates.min() <= 1.0 + 1e-9
  assert np.all(np.abs(rates - np.log10(best['learning_rate'])) <= 1.0 + 1e-9)
  assert len(set(rates)) == N
  keep = np.asarray([row['keep_prob'] for row in second])
  assert np.all((keep >= 0.8) & (keep <= 1.0)) and np.ptp(keep) <= 0.1 + 1e-9


def test_coarse_to_fine_tests_the_overall_top_k_once(rounds):
  tested = [row['trial_id'] for row in rounds.rows if math.isfinite(row['test_accuracy'])]
  assert sorted(tested) == sorted(row['trial_id'] for row in rounds.best(2))
  assert all(0.2 < rounds.rows[i]['test_accuracy'] <= 1.0 for i in tested)


@pytest.fixture(scope='module')
def sampled(splits):
  options = dict(epochs=EPOCHS, top_k=1)
  return {
    'spec': random_search(SPEC, splits, N, seed=5, **options),
    'dict': random_search({**SPACE, 'hidden_units': Fixed(12)}, splits, N, seed=5, **options),
    'other_seed': random_search(SPACE, splits, N, seed=6, **options),
  }


def test_random_search_takes_a_spec_string_or_a_dict(sampled):
  spec, space = sampled['spec'], sampled['dict']
  assert spec.searched == space.searched == tuple(SPACE)
  for name in ('learning_rate', 'keep_prob', 'hidden_units', 'num_layers', 'batch_size'):
    np.testing.assert_array_equal(spec.column(name), space.column(name))
  rates = spec.column('learning_rate')
  assert np.all((rates >= 1e-3) & (rates <= 1e-1)) and len(set(rates)) == N
  # Same seed, same table, same keys: the same numbers, bit for bit.
  for name in ('train_loss', 'dev_loss', 'dev_accuracy'):
    np.testing.assert_array_equal(spec.curves[name], space.curves[name])


def test_random_search_seed_changes_the_sample(sampled):
  same, other = sampled['spec'], sampled['other_seed']
  assert not np.any(np.isin(other.column('learning_rate'), same.column('learning_rate')))
  assert not np.allclose(other.curves['train_loss'], same.curves['train_loss'])

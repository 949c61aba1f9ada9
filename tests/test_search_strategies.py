"""Random, grid and coarse-to-fine search, and `search.run`: which trials, what they report.

Every space here fixes 12 units x 2 layers and batch size 32, so each search of
4 trials runs the same compiled program (see tests/test_search_engine.py).
"""

import math

import jax
import numpy as np
import pytest

from bnjax import search
from bnjax.search import coarse_to_fine, grid_search, random_search, segments, sizing
from bnjax.space import (
  Choice,
  Fixed,
  IntUniform,
  LogUniform,
  Space,
  SpaceError,
  Uniform,
  as_space,
)
from bnjax.training import TrainConfig

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


@pytest.fixture(scope='module')
def grid(splits):
  return grid_search(SPACE, splits, 2, epochs=EPOCHS, top_k=1)


def test_grid_search_runs_the_cartesian_product(grid):
  results = grid
  assert len(results) == 4 and list(results.column('trial_id')) == [0, 1, 2, 3]
  pairs = sorted(zip(results.column('learning_rate'), results.column('keep_prob'), strict=True))
  assert pairs == [(1e-3, 0.8), (1e-3, 1.0), (1e-1, 0.8), (1e-1, 1.0)]
  assert set(results.column('hidden_units')) == {12}
  assert results.space['learning_rate'].scale == 'log'
  assert results.space['keep_prob'].scale == 'linear'
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
  assert results.extra_columns == ('round',) and 'round' in results.columns
  assert 'round' not in results.hyperparameters and 'round' not in results.searched
  assert results.space['learning_rate'] == SPACE['learning_rate'], "round 0's space"
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


# ------------------------------------------------------------------------------ search.run


def test_run_dispatches_to_the_strategy_by_name(splits, sampled, grid, rounds):
  # run and the strategies called alone plan the same chunks (`sizing.chunk_runs`,
  # from the bucket and the devices): the same program, the same bits.
  cases = (
    (
      search.run('random', SPEC, splits, num_trials=N, seed=5, epochs=EPOCHS, top_k=1),
      sampled['spec'],
    ),
    (search.run('grid', SPACE, splits, points_per_axis=2, epochs=EPOCHS, top_k=1), grid),
    (
      search.run(
        'coarse_to_fine',
        SPACE,
        splits,
        num_trials=N,
        rounds=2,
        keep=0.25,
        shrink=0.5,
        seed=1,
        top_k=2,
        epochs=EPOCHS,
      ),
      rounds,
    ),
  )
  for got, want in cases:
    assert got.columns == want.columns
    for name in want.columns:
      np.testing.assert_array_equal(got.column(name), want.column(name), err_msg=name)
    for name, curve in want.curves.items():
      np.testing.assert_array_equal(got.curves[name], curve)


@pytest.mark.parametrize(
  'strategy, options, message',
  [
    ('annealing', {}, "unknown strategy 'annealing'; choose from random, grid, coarse_to_fine"),
    ('random', {'num_trials': N, 'rounds': 3}, "random search takes no option 'rounds'"),
    ('grid', {'num_trials': N}, "grid search takes no option 'num_trials'"),
    ('random', {'epochs': 2}, 'random search needs num_trials'),
    ('random', {'num_trials': 0}, 'num_trials must be an integer >= 1; got 0'),
    ('random', {'num_trials': 2.5}, 'num_trials must be an integer >= 1; got 2.5'),
    ('random', {'num_trials': 10**6 + 1}, 'num_trials=1,000,001 makes 1,000,001 runs'),
    (
      'random',
      {'num_trials': 10**4, 'executions_per_trial': 101},
      'num_trials=10,000 x executions_per_trial=101 makes 1,010,000 runs',
    ),
    ('grid', {'points_per_axis': 0}, 'points_per_axis must be an integer >= 1; got 0'),
    ('grid', {'points_per_axis': 1001}, 'a grid of 1001 points per axis over 5 names'),
    ('coarse_to_fine', {'num_trials': N, 'rounds': 0}, 'rounds must be an integer >= 1'),
    ('coarse_to_fine', {'num_trials': N, 'rounds': True}, 'rounds must be an integer >= 1'),
    (
      'coarse_to_fine',
      {'num_trials': 10**5, 'rounds': 11},
      'num_trials=100,000 x rounds=11 makes 1,100,000 runs; a search holds at most 1,000,000',
    ),
    ('coarse_to_fine', {'num_trials': N, 'keep': 0.0}, r'keep must lie in \(0, 1\]; got 0.0'),
    ('coarse_to_fine', {'num_trials': N, 'keep': 'most'}, r"keep must lie in \(0, 1\]; got 'most'"),
    ('coarse_to_fine', {'num_trials': N, 'shrink': 0}, r'shrink must lie in \(0, 1\]; got 0'),
    ('coarse_to_fine', {'num_trials': N, 'shrink': 1.5}, r'shrink must lie in \(0, 1\]'),
    ('coarse_to_fine', {'num_trials': N, 'shrink': 2}, r'shrink must lie in \(0, 1\]; got 2'),
    ('coarse_to_fine', {'num_trials': N, 'shrink': math.nan}, r'shrink must lie in \(0, 1\]'),
    ('random', {'num_trials': N, 'epochs': 0}, 'epochs must be an integer >= 1; got 0'),
    ('random', {'num_trials': N, 'select': 'last'}, "select must be 'final' or 'best'"),
    ('random', {'num_trials': N, 'top_k': -1}, 'top_k must be an integer >= 1; got -1'),
    ('random', {'num_trials': N, 'top_k': 0}, 'top_k must be an integer >= 1; got 0'),
    ('coarse_to_fine', {'num_trials': N, 'top_k': 0}, 'top_k must be an integer >= 1; got 0'),
    ('random', {'num_trials': N, 'chunk_size': -1}, 'chunk_size must be an integer >= 1; got -1'),
    ('random', {'num_trials': N, 'seed': -1}, r'seed must be an integer in \[0, 2\*\*64\)'),
    ('grid', {'seed': 2**64}, r'seed must be an integer in \[0, 2\*\*64\); got 1844'),
    ('random', {'num_trials': N, 'width_ratio': 0}, "width_ratio must be 'cost', a number >= 1"),
    ('random', {'num_trials': N, 'executions_per_trial': 0}, 'executions_per_trial must be'),
    ('hyperband', {'eta': 1}, 'eta must be an integer >= 2; got 1'),
    ('hyperband', {'min_epochs': 5, 'max_epochs': 3}, 'max_epochs must be an integer >= 5; got 3'),
    ('hyperband', {'min_epochs': 0}, 'min_epochs must be an integer >= 1; got 0'),
    ('hyperband', {'select': 'best'}, "hyperband search takes no option 'select'"),
    ('hyperband', {'epochs': 9}, "hyperband search takes no option 'epochs'"),
    ('hyperband', {'max_epochs': 3**14}, 'hyperband from 1 to 4,782,969 epochs makes'),
    ('hyperband', {'chunk_size': 0}, 'chunk_size must be an integer >= 1; got 0'),
    ('pbt', {'epochs': 8}, 'pbt search needs population_size'),
    ('pbt', {'population_size': 8, 'executions_per_trial': 2}, 'pbt search takes no option'),
    (
      'pbt',
      {'population_size': 3},
      'quantile_fraction 0.25 of population_size 3 replaces no member; raise population_size '
      'to at least 4',
    ),
    (
      'pbt',
      {'population_size': 8, 'quantile_fraction': 0.6},
      r'quantile_fraction must lie in \(0, 0.5\]; got 0.6',
    ),
    (
      'pbt',
      {'population_size': 8, 'perturbation_factors': (0.8, -1.0)},
      'perturbation_factors must be positive numbers',
    ),
    (
      'pbt',
      {'population_size': 8, 'resample_probability': 1.5},
      r'resample_probability must lie in \[0, 1\]; got 1.5',
    ),
    (
      'pbt',
      {'population_size': 8, 'epochs': 10, 'ready': 4},
      'pbt trains epochs=10 in generations of ready=4 epochs: make epochs a multiple of ready',
    ),
    ('pbt', {'population_size': 8, 'ready': 0}, 'ready must be an integer >= 1; got 0'),
  ],
)
def test_run_checks_strategy_and_options_before_any_compute(
  splits, monkeypatch, strategy, options, message
):
  monkeypatch.setattr(segments, 'programs', lambda *args, **kwargs: pytest.fail('compiled'))
  monkeypatch.setattr(Space, 'grid', lambda *args: pytest.fail('a grid was built'))
  monkeypatch.setattr(Space, 'sample', lambda *args: pytest.fail('a table was sampled'))
  with pytest.raises(search.SearchError, match=f'^{message}') as error:
    search.run(strategy, SPACE, splits, **options)
  assert '\n' not in str(error.value)
  with pytest.raises(search.SearchError, match=f'^{message}'):
    search.check(strategy, as_space(SPACE), **options)  # what a launcher calls before loading data


@pytest.mark.parametrize(
  'strategy, options',
  [
    ('random', {'num_trials': N}),
    ('grid', {'points_per_axis': 2}),
    ('coarse_to_fine', {'num_trials': N}),
  ],
)
def test_a_trial_too_big_for_memory_fails_before_any_compute(
  splits, monkeypatch, strategy, options
):
  monkeypatch.setattr(segments, 'programs', lambda *args, **kwargs: pytest.fail('compiled'))
  space = {**SPACE, 'hidden_units': Fixed(10**6), 'num_layers': Fixed(3)}
  with pytest.raises(
    search.SearchError, match=r'^one trial \(3 x 1,000,000 units, batch size 32\)'
  ):
    search.run(strategy, space, splits, **options)


def test_coarse_to_fine_checks_its_largest_trial_before_round_0(splits, monkeypatch):
  # Round 0 draws widths of 8 to 4096 units; a later round may draw 4096, so it must
  # fit from the start: the message names the largest trial the space holds.
  monkeypatch.setattr(segments, 'programs', lambda *args, **kwargs: pytest.fail('compiled'))
  config = TrainConfig(epochs=EPOCHS, batch_size=32, hidden_sizes=(4096,), num_classes=3)
  widest = sizing.trial_bytes(config, 6, 200, 60) + sizing.data_bytes(splits)
  monkeypatch.setattr(sizing, 'memory_budget', lambda devices: widest // 100)
  monkeypatch.setattr(sizing, 'memory_available', lambda devices: widest - 1)
  space = {**SPACE, 'hidden_units': IntUniform(8, 4096), 'num_layers': Fixed(1)}
  with pytest.raises(search.SearchError, match=r'^one trial \(1 x 4,096 units, batch size 32\)'):
    coarse_to_fine(space, splits, N, devices=jax.devices()[:1], epochs=EPOCHS)


def test_grid_size_counts_what_grid_makes():
  space = as_space(
    {
      'learning_rate': LogUniform(1e-3, 1e-1),
      'hidden_units': IntUniform(10, 12),  # 3 values only
      'num_layers': Fixed(2),
      'optimizer': Choice(('adam', 'sgd')),
    }
  )
  for points in (1, 2, 3, 5):
    count = search.strategy_options.grid_size(space, points)
    assert count == len(space.grid(points)['learning_rate'])


def test_run_rejects_a_bad_space_before_any_compute(splits, monkeypatch):
  monkeypatch.setattr(segments, 'programs', lambda *args, **kwargs: pytest.fail('compiled'))
  with pytest.raises(SpaceError, match='learning_rate'):
    search.run('random', 'learning_rate=log:0:1', splits, num_trials=N)


def test_pbt_refuses_a_space_of_several_buckets_before_any_compute(splits, monkeypatch):
  monkeypatch.setattr(Space, 'sample', lambda *args: pytest.fail('a table was sampled'))
  space = {**SPACE, 'batch_size': Choice((32, 64))}
  with pytest.raises(search.SearchError, match='^pbt trains one bucket .* varies batch_size; fix'):
    search.run('pbt', space, splits, population_size=4, epochs=4)


def test_strategies_and_their_options_are_public():
  assert search.STRATEGIES == ('random', 'grid', 'coarse_to_fine', 'bayes', 'hyperband', 'pbt')
  assert search.POPULATION_STRATEGIES == ('hyperband', 'pbt')
  assert set(search.STRATEGY_OPTIONS) == set(search.STRATEGIES)
  assert 'eta' in search.allowed_options('hyperband')
  assert 'select' not in search.allowed_options('pbt')
  assert 'epochs' in search.ENGINE_OPTIONS and 'progress' in search.ENGINE_OPTIONS


def test_a_population_search_of_traced_names_only_runs_at_the_default_architecture(splits):
  # No searched shape: the memory check before any compute sizes the default trial
  # (it once handed the engine an empty table and stopped with 'the trial table is empty').
  results = search.run('hyperband', 'learning_rate=log:1e-3:1e-1', splits, max_epochs=1, top_k=1)
  assert results.rows and all(row['hidden_units'] == 256 for row in results.rows)

"""PBT: exploit copies whole rows bitwise, explore moves values on their scales, one program."""

import json

import chex
import jax
import numpy as np
import pytest

from bnjax import files, hparams
from bnjax.search import cohorts as co
from bnjax.search import exploit, pbt, schedule_replay
from bnjax.search import population as pop
from bnjax.search.checks import SearchError
from bnjax.space import Choice, IntUniform, LogUniform, OneMinusLogUniform, Space, Uniform
from bnjax.space import with_defaults as filled
from bnjax.training import TrainConfig, TrainData

pytestmark = pytest.mark.usefixtures('search_compile_cache')

SPACE = Space(
  {
    'learning_rate': LogUniform(1e-3, 1e-1),
    'beta1': OneMinusLogUniform(0.8, 0.99),
    'keep_prob': Uniform(0.5, 1.0),
    'optimizer': Choice(('adam', 'momentum')),
    'hidden_units': IntUniform(4, 8),
    'num_layers': IntUniform(1, 2),
    'batch_size': 32,
  }
)
N = 8
# Best first: 6, 1, 4, 3, 5, then the diverged 0, 2, 7. The bottom quarter is
# {2, 7}; every diverged member is replaced too; parents come from {6, 1}.
ACCURACY = np.array([np.nan, 0.9, np.nan, 0.7, 0.8, 0.6, 0.95, np.nan], np.float32)
REPLACED, PARENTS = [0, 2, 7], {6, 1}
EXPLORED = ('learning_rate', 'beta1', 'keep_prob')


@pytest.fixture(scope='module')
def data(blob_splits):
  s = blob_splits
  return TrainData(s.x_train, s.y_train, s.x_dev, s.y_dev)


@pytest.fixture(scope='module')
def cohort(data):
  """Eight members of one bucket (widths 4..8, depths 1..2) after one epoch."""
  table = filled(SPACE.sample(jax.random.key(0), N), N)
  (cohort,) = co.cohorts_from_table(
    table, np.arange(N), data, num_classes=3, seed=0, chunk_size=N, epochs=2, width_ratio=None
  )
  (cohort,) = co.train_to([cohort], data, 1, segment_epochs=1)
  return cohort


def rows(state):
  return jax.device_get(state._replace(key=jax.random.key_data(state.key)))


def at(tree, i):
  return jax.tree.map(lambda leaf: np.asarray(leaf)[i], tree)


def test_exploit_copies_whole_rows_and_records_lineage(cohort):
  state, hp, lineage = exploit.exploit_and_explore(
    jax.random.key(1), cohort.state, cohort.hp, ACCURACY, SPACE, generation=3
  )
  before, after = rows(cohort.state), rows(state)
  parent = np.asarray(lineage.parent)
  np.testing.assert_array_equal(lineage.generation, 3)
  assert all(parent[i] in PARENTS for i in REPLACED)
  assert [i for i in range(N) if parent[i] != i] == REPLACED
  for i in range(N):
    # The whole state: params, BN statistics, optimizer moments and count,
    # epoch, step, divergence, best snapshot; the key stays the member's own.
    chex.assert_trees_all_equal(at(after, i)._replace(key=0), at(before, parent[i])._replace(key=0))
    np.testing.assert_array_equal(after.key[i], before.key[i])
    # Hyperparameters: architecture and categories ride along; kept rows are untouched.
    for name, value in hp.items():
      if name not in EXPLORED or parent[i] == i:
        np.testing.assert_array_equal(value[i], cohort.hp[name][parent[i]], err_msg=name)
  for name in EXPLORED:
    moved = np.asarray(hp[name], np.float64)[REPLACED]
    assert np.all((moved >= SPACE[name].low) & (moved <= SPACE[name].high)), name
    assert np.all(moved != np.asarray(cohort.hp[name])[parent[REPLACED]]), name


def test_explore_perturbs_each_value_on_its_own_scale():
  n = 2000
  axes = exploit.explorable(SPACE, {name: None for name in EXPLORED})
  assert [a.name for a in axes] == list(EXPLORED)
  values = SPACE.sample(jax.random.key(2), n)
  hp = hparams(**{name: values[name] for name in EXPLORED})
  moved = np.arange(n) % 4 != 0
  out = exploit.explore(jax.random.key(3), hp, moved, axes, resample_probability=0.0)
  for axis in axes:
    old = np.asarray(hp[axis.name], np.float64)
    new = np.asarray(out[axis.name], np.float64)
    np.testing.assert_array_equal(new[~moved], old[~moved])
    dist = SPACE[axis.name]
    # Inside the space (a float32 draw may round past a bound; a moved value never does).
    assert np.all((new[moved] >= dist.low) & (new[moved] <= dist.high)), axis.name
    # On its own scale: 10**r and a uniform value are multiplied, and for a
    # beta it is 1 - beta. float32 rounding of 1 - beta (beta near 1) moves
    # that ratio by up to about 1e-5, so 1e-4 relative.
    ratio = (1 - new) / (1 - old) if axis.scale == 'one_minus_log' else new / old
    clipped = (new == axis.low) | (new == axis.high)
    factor = np.where(np.abs(ratio - 0.8) < np.abs(ratio - 1.2), 0.8, 1.2)
    unclipped = moved & ~clipped
    np.testing.assert_allclose(ratio[unclipped], factor[unclipped], rtol=1e-4, err_msg=axis.name)
    assert 0.4 < np.mean(factor[unclipped] == 0.8) < 0.6  # each factor as likely
    assert np.all(clipped[moved & ~unclipped])


def test_resampling_draws_from_each_distribution_on_its_scale():
  n = 4000
  axes = exploit.explorable(SPACE, {name: None for name in EXPLORED})
  hp = hparams(**{name: np.full(n, SPACE[name].low) for name in EXPLORED})
  out = exploit.explore(jax.random.key(4), hp, np.ones(n, bool), axes, resample_probability=1.0)
  for axis in axes:
    dist = SPACE[axis.name]
    new = np.asarray(out[axis.name], np.float64)
    assert np.all((new >= dist.low) & (new <= dist.high)), axis.name
    # Uniform on the distribution's own scale: a quarter below its first quartile.
    t = dist.to_scale(new)
    quartile = axis.scale_low + 0.25 * (axis.scale_high - axis.scale_low)
    assert abs(np.mean(t < quartile) - 0.25) < 0.03, axis.name


def test_explored_keep_prob_and_l2_keep_dropout_and_the_l2_term_in_the_program():
  # A bucket leaves them out where every first value is keep_prob 1 or l2 0;
  # explore could move them off those later.
  config = TrainConfig(epochs=1, batch_size=32, hidden_sizes=(8,), num_classes=3)
  off = config._replace(dropout=False, l2_penalty=False)
  space = Space({**SPACE, 'l2': LogUniform(1e-5, 1e-2)})
  axes = exploit.explorable(space, {name: None for name in space})
  on = pbt.with_explored_terms(off, axes)
  assert on.dropout and on.l2_penalty and on._replace(dropout=False, l2_penalty=False) == off
  unexplored = exploit.explorable(space, {'learning_rate': None})
  assert pbt.with_explored_terms(off, unexplored) == off


def test_one_program_and_training_goes_on_without_a_new_one(cohort, data):
  exploit.exploit_and_explore(jax.random.key(1), cohort.state, cohort.hp, ACCURACY, SPACE)
  with pop.count_lowerings() as lowered:
    state, hp, _ = exploit.exploit_and_explore(
      jax.random.key(5), cohort.state, cohort.hp, ACCURACY[::-1].copy(), SPACE, generation=4
    )
    state, metrics = pop.run_segment_checked_at_end(cohort.config, hp, state, data, 1)
  assert lowered.value == 0
  assert np.asarray(state.epoch).tolist() == [2] * N


def test_a_population_that_all_diverged_stops_with_a_clear_error(cohort):
  with pytest.raises(SearchError, match='every member of the population diverged'):
    exploit.exploit_and_explore(
      jax.random.key(1), cohort.state, cohort.hp, np.full(N, np.nan), SPACE
    )
  with pytest.raises(SearchError, match='fraction'):
    exploit.exploit_and_explore(
      jax.random.key(1), cohort.state, cohort.hp, ACCURACY, SPACE, fraction=0.6
    )
  with pytest.raises(SearchError, match='one dev accuracy per member'):
    exploit.exploit_and_explore(jax.random.key(1), cohort.state, cohort.hp, ACCURACY[:4], SPACE)


def test_sharded_population_gives_the_same_step(cohort):
  """On a trial axis sharded over four devices, the metrics replicated: the same rows."""
  mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()[:4]), ('trials',))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec('trials'))
  state, hp = jax.device_put((cohort.state, cohort.hp), sharding)
  want = exploit.exploit_and_explore(jax.random.key(1), cohort.state, cohort.hp, ACCURACY, SPACE)
  got = exploit.exploit_and_explore(jax.random.key(1), state, hp, ACCURACY, SPACE)
  chex.assert_trees_all_equal(
    (rows(got[0]), jax.device_get(got[1:])), (rows(want[0]), jax.device_get(want[1:]))
  )
  # The trial axis stays sharded (a gather alone would replicate it).
  for leaf in jax.tree.leaves(got):
    assert leaf.sharding.is_equivalent_to(sharding, leaf.ndim)


def test_pbt_driver_trains_generations_and_reports_lineage_and_schedule(blob_splits):
  space = Space(
    {
      'learning_rate': LogUniform(1e-3, 1e-1),
      'beta1': OneMinusLogUniform(0.8, 0.99),
      'hidden_units': IntUniform(4, 6),
      'num_layers': 1,
    }
  )
  one = jax.local_devices()[:1]
  results = pbt.pbt(space, blob_splits, 4, ready=1, generations=3, seed=0, devices=one)
  assert [row['trial_id'] for row in results.rows] == [0, 1, 2, 3]
  assert results.curves['dev_accuracy'].shape == (4, 3)
  lineage = results.info['lineage']
  assert len(lineage) == 2 and all(len(parents) == 4 for parents in lineage)
  # One member replaced per exploit (a quarter of four), from the top quarter.
  assert all(sum(p != i for i, p in enumerate(parents)) == 1 for parents in lineage)
  schedule = results.info['schedule']
  assert [step['epochs'] for step in schedule] == [[0, 1], [1, 2], [2, 3]]
  winner = results.best(1)[0]
  assert schedule[-1]['learning_rate'] == pytest.approx(winner['learning_rate'])
  for row in results.rows:
    assert 1e-3 <= row['learning_rate'] <= 1e-1 + 1e-9
    assert row['origin'] in (0, 1, 2, 3)
  with pytest.raises(SearchError, match='one bucket'):
    pbt.pbt(Space({'batch_size': Choice((32, 64))}), blob_splits, 4, devices=one)


def test_replaying_the_winners_schedule_gives_its_curves_bitwise(blob_splits):
  space = Space(
    {
      'learning_rate': LogUniform(1e-3, 1e-1),
      'beta1': OneMinusLogUniform(0.8, 0.99),
      'hidden_units': IntUniform(4, 6),
      'num_layers': 1,
    }
  )
  one = jax.local_devices()[:1]
  results = pbt.pbt(space, blob_splits, 4, ready=1, generations=4, seed=1, top_k=1, devices=one)
  winner = json.loads(json.dumps(files.json_safe(results.winner())))  # as best.json holds it
  # This seed's winner descends through other members: generations trained with their keys.
  assert len({step['trial_id'] for step in winner['schedule']}) > 1
  replayed = schedule_replay.replay(winner, blob_splits, devices=one)
  row = next(i for i, r in enumerate(results.rows) if r['trial_id'] == winner['trial_id'])
  for name, curve in replayed.curves.items():
    np.testing.assert_array_equal(curve, results.curves[name][row])
  assert replayed.test_accuracy == winner['test_accuracy']  # the same params, the same program
  # A changed schedule trains something else (the replay follows it).
  moved = dict(
    winner, schedule=[dict(s, learning_rate=s['learning_rate'] * 3) for s in winner['schedule']]
  )
  other = schedule_replay.replay(moved, blob_splits, devices=one)
  assert not np.array_equal(other.curves['train_loss'], replayed.curves['train_loss'])
  with pytest.raises(SearchError, match="holds no 'schedule'"):
    schedule_replay.replay({'hyperparameters': {}}, blob_splits)

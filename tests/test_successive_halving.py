"""Successive halving and Hyperband: brackets, order-free ranking, survivors that go on bitwise."""

import logging

import chex
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from hypothesis import given, settings

from bnjax.search import buckets, planning
from bnjax.search import cohorts as co
from bnjax.search import population as pop
from bnjax.search import successive_halving as sh
from bnjax.space import Choice, IntUniform, LogUniform, Space, with_defaults
from bnjax.training import TrainData

pytestmark = pytest.mark.usefixtures('search_compile_cache')

# Two buckets (batch sizes), several widths in each: ten trials.
SPACE = Space(
  {
    'learning_rate': LogUniform(1e-3, 3e-1),
    'optimizer': Choice(('adam', 'momentum')),
    'batch_size': Choice((32, 64)),
    'hidden_units': IntUniform(4, 6),
    'num_layers': 1,
  }
)
NUM_TRIALS = 10
CHUNK = 4


@pytest.fixture(scope='module')
def data(blob_splits):
  s = blob_splits
  return TrainData(s.x_train, s.y_train, s.x_dev, s.y_dev)


@pytest.fixture(scope='module')
def table():
  sampled = SPACE.sample(jax.random.key(3), NUM_TRIALS)
  sampled['learning_rate'][7] = 1e30  # diverges at once
  return with_defaults(sampled, NUM_TRIALS)


def start(table, data, ids=None):
  ids = np.arange(100, 100 + NUM_TRIALS) if ids is None else ids
  return co.cohorts_from_table(
    table, ids, data, num_classes=3, seed=0, chunk_size=CHUNK, epochs=4, width_ratio=None
  )


@pytest.fixture(scope='module')
def first_rung(table, data):
  return co.train_to(start(table, data), data, 1, segment_epochs=1)


def row(cohort, index):
  """Member `index` of a cohort: hp, state (key as raw bits) and curves."""
  state = cohort.state._replace(key=jax.random.key_data(cohort.state.key))
  return jax.device_get(jax.tree.map(lambda a: a[index], (cohort.hp, state, cohort.curves)))


def find(cohorts, trial_id):
  for cohort in cohorts:
    for index in np.flatnonzero(~cohort.filler):
      if cohort.trial_ids[index] == trial_id:
        return row(cohort, index)
  raise KeyError(trial_id)


def test_hyperband_brackets_are_li_et_al_table_1():
  brackets = sh.hyperband_brackets(1, 81, 3)
  as_pairs = [[(r.trials, r.epochs) for r in b.rungs] for b in brackets]
  assert [b.index for b in brackets] == [4, 3, 2, 1, 0]
  assert as_pairs == [
    [(81, 1), (27, 3), (9, 9), (3, 27), (1, 81)],
    [(34, 3), (11, 9), (3, 27), (1, 81)],
    [(15, 9), (5, 27), (1, 81)],
    [(8, 27), (2, 81)],
    [(5, 81)],
  ]
  assert sh.segment_length(brackets) == 1
  units = [[(r.trials, r.epochs) for r in b.rungs] for b in sh.hyperband_brackets(2, 18, 3)]
  assert units == [[(9, 2), (3, 6), (1, 18)], [(5, 6), (1, 18)], [(3, 18)]]
  assert sh.segment_length(sh.hyperband_brackets(2, 18, 3)) == 2


@settings(max_examples=50, deadline=None)
@given(
  accuracy=st.lists(st.sampled_from([0.5, 0.75, 0.75, 0.9, float('nan')]), min_size=1, max_size=12),
  seed=st.integers(0, 2**16),
)
def test_ranking_does_not_depend_on_trial_order(accuracy, seed):
  accuracy = np.asarray(accuracy)
  ids = np.random.default_rng(seed).permutation(1000)[: len(accuracy)]
  ranked = ids[sh.rank(ids, accuracy)]
  shuffle = np.random.default_rng(seed + 1).permutation(len(ids))
  assert ranked.tolist() == ids[shuffle][sh.rank(ids[shuffle], accuracy[shuffle])].tolist()
  # The order itself: accuracy down, ties by id, diverged (NaN) last.
  by_id = dict(zip(ids.tolist(), accuracy.tolist(), strict=True))
  key = lambda i: (np.isnan(by_id[i]), -by_id[i] if not np.isnan(by_id[i]) else 0, i)
  assert ranked.tolist() == sorted(ids.tolist(), key=key)
  decision = sh.rung(ids[shuffle], accuracy[shuffle], eta=3)
  assert decision.survivors.tolist() == [
    i for i in ranked[: max(1, len(ids) // 3)] if not np.isnan(by_id[i])
  ]
  assert sorted([*decision.survivors, *decision.pruned]) == sorted(ids.tolist())


def test_rung_ranks_across_buckets_and_drops_diverged(first_rung):
  seen = co.members(first_rung)
  assert sorted(seen['trial_id']) == list(range(100, 110))
  assert len({c.bucket for c in first_rung}) == 2
  decision = sh.rung(seen['trial_id'], seen['dev_accuracy'], eta=3, dev_loss=seen['dev_loss'])
  assert len(decision.survivors) == 3
  assert 107 in decision.pruned  # diverged
  accuracy = dict(zip(seen['trial_id'], seen['dev_accuracy'], strict=True))
  worst_kept = min(accuracy[i] for i in decision.survivors)
  assert all(not accuracy[i] > worst_kept for i in decision.pruned)


def test_survivors_go_on_from_their_state_bitwise_and_compile_nothing(first_rung, table, data):
  seen = co.members(first_rung)
  decision = sh.rung(seen['trial_id'], seen['dev_accuracy'], eta=3, dev_loss=seen['dev_loss'])
  with pop.count_lowerings() as lowered:
    regrouped = co.regroup(first_rung, decision.survivors[::-1])
    second = co.train_to(regrouped, data, 3, segment_epochs=1)
  assert lowered.value == 0
  kept = sorted(np.concatenate([c.trial_ids[~c.filler] for c in regrouped]).tolist())
  assert kept == sorted(decision.survivors.tolist())
  for cohort in regrouped:
    assert len(cohort.trial_ids) == CHUNK  # the bucket's chunk shape
    ids = cohort.trial_ids[~cohort.filler]
    assert ids.tolist() == sorted(ids.tolist())
    for index in range(CHUNK):
      # Every member, filler or not, is bitwise the row it was before the rung.
      chex.assert_trees_all_equal(row(cohort, index), find(first_rung, cohort.trial_ids[index]))
  assert any(cohort.filler.any() for cohort in regrouped)
  # And after two more epochs, a survivor's curve is the one it would have had
  # trained straight to three epochs (equal chunk shape; neighbours do not matter).
  straight = co.train_to(start(table, data), data, 3, segment_epochs=1)
  for trial in decision.survivors:
    chex.assert_trees_all_equal(find(second, trial), find(straight, trial))


def test_successive_halving_records_every_trial_with_its_epochs_and_curves(table, data):
  rungs = [sh.Rung(10, 1), sh.Rung(3, 2), sh.Rung(1, 4)]
  finalists, records = sh.successive_halving(start(table, data), data, rungs, eta=3)
  assert [r.trial_id for r in records] == list(range(100, 110))
  by_status = {}
  for record in records:
    by_status.setdefault(record.status, []).append(record)
    assert all(len(curve) == record.epochs for curve in record.curves.values())
  assert len(by_status['ok']) == 1 and by_status['ok'][0].epochs == 4
  assert sorted(r.epochs for r in by_status['pruned']) == [1] * 6 + [2, 2]
  assert [r.trial_id for r in by_status['diverged']] == [107]
  assert by_status['diverged'][0].diverged_step >= 0
  (winner,) = by_status['ok']
  assert [c.trial_ids[~c.filler].tolist() for c in finalists] == [[winner.trial_id]]
  # A pruned trial's curve is the one its rung saw.
  first = co.train_to(start(table, data), data, 1, segment_epochs=1)
  for record in by_status['pruned']:
    if record.epochs == 1:
      np.testing.assert_array_equal(
        record.curves['dev_accuracy'], find(first, record.trial_id)[2]['dev_accuracy']
      )


def test_hyperband_returns_results_with_pruned_trials_and_their_epochs(blob_splits):
  space = Space({'learning_rate': LogUniform(1e-2, 1e-1), 'hidden_units': 6, 'num_layers': 1})
  one = jax.local_devices()[:1]
  results = sh.hyperband(space, blob_splits, min_epochs=1, max_epochs=3, eta=3, devices=one)
  # Brackets for (1, 3, 3): 3 trials x 1 epoch, then 1 x 3; and 2 x 3.
  assert [(row['trial_id'], row['bracket']) for row in results.rows] == [
    (0, 1),
    (1, 1),
    (2, 1),
    (3, 0),
    (4, 0),
  ]
  status = [row['status'] for row in results.rows]
  assert status.count('pruned') == 2 and status.count('ok') == 3
  for row, accuracy in zip(results.rows, results.curves['dev_accuracy'], strict=True):
    assert row['epochs'] == (1 if row['status'] == 'pruned' else 3)
    assert np.isnan(accuracy[row['epochs'] :]).all()
    assert row['dev_accuracy'] == accuracy[row['epochs'] - 1]
  # The survivor of bracket 1 led its rung (after one epoch) over the two it pruned.
  rung_accuracy = results.curves['dev_accuracy'][:3, 0]
  survivor = next(row['trial_id'] for row in results.rows[:3] if row['status'] == 'ok')
  assert rung_accuracy[survivor] == rung_accuracy.max()
  assert results.best(1)[0]['status'] == 'ok'
  assert results.info['trial_epochs'] == 1 + 1 + 3 + 3 + 3
  assert 'epochs' in results.extra_columns and 'bracket' in results.extra_columns
  assert results.summary()  # the table renders


def test_plan_brackets_gives_every_bracket_the_same_buckets():
  tables = [
    with_defaults(SPACE.sample(jax.random.key(s), n), n) for s, n in ((0, 9), (1, 5), (2, 3))
  ]
  per_bracket, sizes = planning.plan_brackets(
    tables, lambda config: CHUNK, epochs=4, num_classes=3, width_ratio=None
  )
  whole = {name: np.concatenate([t[name] for t in tables]) for name in tables[0]}
  planned = buckets.make_buckets(whole, epochs=4, num_classes=3, width_ratio=None)
  assert len(planned) == 2  # the two batch sizes
  for table, parts in zip(tables, per_bracket, strict=True):
    assert [part.config for part in parts] == [bucket.config for bucket in planned]
    rows = np.concatenate([part.trial_ids for part in parts])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(table['batch_size'])))
    for part in parts:  # each row sits in the bucket of its batch size
      assert set(table['batch_size'][part.trial_ids]) <= {part.config.batch_size}
  for index, size in enumerate(sizes):
    most = max(len(parts[index].trial_ids) for parts in per_bracket)
    assert size == min(CHUNK, most)


def test_hyperband_compiles_one_segment_program_per_bucket_across_brackets(blob_splits, caplog):
  # Bracket by bracket, the two brackets (3 and 2 trials) would pad to their
  # own widths and chunk sizes and compile an init and a segment program each.
  space = Space(
    {'learning_rate': LogUniform(1e-2, 1e-1), 'hidden_units': IntUniform(13, 19), 'num_layers': 1}
  )
  one = jax.local_devices()[:1]
  with caplog.at_level(logging.WARNING), jax.log_compiles():
    results = sh.hyperband(
      space, blob_splits, min_epochs=1, max_epochs=3, eta=3, devices=one, width_ratio=None
    )
  assert {row['bracket'] for row in results.rows} == {0, 1}
  assert {row['bucket'] for row in results.rows} == {0}
  compiled = [r.getMessage().split(' with ')[0] for r in caplog.records]
  assert compiled.count('Compiling jit(segment_program)') == 1
  assert compiled.count('Compiling jit(_init)') == 1

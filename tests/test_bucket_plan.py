"""The cost plan of buckets (`width_ratio='cost'`): the cheapest split, priced as the engine does.

`buckets._cheapest_groups` is checked against brute force over every plan
of the same two kinds (runs of width-neighbours, with depths mixed or split
first); `sizing.bucket_cost` against its formula written out by hand.
Nothing here trains: planning reads shapes only.
"""

import itertools

import jax
import numpy as np
import pytest

from bnjax import search
from bnjax.data import Splits
from bnjax.search import buckets, chunks, planning, sizing
from bnjax.search import successive_halving as sh
from bnjax.search.checks import SearchError
from bnjax.search.cohorts import sampling_key
from bnjax.space import as_space, with_defaults
from bnjax.training import TrainConfig

MNIST1D = dict(n_train=3600, n_dev=400, features=40, classes=10)


def shaped_splits(n_train, n_dev, features, classes):
  x = lambda n: np.zeros((n, features), np.float32)
  y = lambda n: np.arange(n, dtype=np.int32) % classes
  return Splits(x(n_train), y(n_train), x(n_dev), y(n_dev), x(10), y(10), classes, 'shaped')


def toy_price(compile_cost, chunk):
  """Compile + runs (rounded up to `chunk`) x width**2 x depth: the shape of `bucket_cost`."""

  def price(group, width, depth):
    runs = -(-len(group) // chunk) * chunk
    return compile_cost + runs * int(width[group].max()) ** 2 * int(depth[group].max())

  return price


def contiguous_plans(ids, width):
  """Every cut of `ids`, in width order, into runs of neighbours."""
  order = sorted(ids, key=lambda i: (width[i], i))
  for cuts in itertools.product([False, True], repeat=len(order) - 1):
    groups, current = [], [order[0]]
    for i, cut in zip(order[1:], cuts, strict=True):
      if cut:
        groups.append(current)
        current = []
      current.append(i)
    yield [*groups, current]


def brute_force(ids, width, depth, cost):
  """The cheapest plan of both kinds, by trying them all."""
  total = lambda plan: sum(cost(np.asarray(g)) for g in plan)
  best = min(total(plan) for plan in contiguous_plans(ids, width))
  per_depth = 0.0
  for d in np.unique(depth[ids]):
    mine = [i for i in ids if depth[i] == d]
    per_depth += min(total(plan) for plan in contiguous_plans(mine, width))
  return min(best, per_depth)


@pytest.mark.parametrize('seed', range(6))
def test_the_plan_is_the_cheapest_of_its_kinds_by_brute_force(seed):
  rng = np.random.default_rng(seed)
  n = 8
  width = rng.integers(4, 30, n)
  depth = rng.integers(1, 4, n)
  ids = np.arange(n)
  price = toy_price(compile_cost=float(rng.integers(0, 3000)), chunk=int(rng.choice([1, 2, 4])))
  cost = lambda group: price(group, width, depth)
  plan = buckets._cheapest_groups(ids, width, depth, cost)
  assert sorted(np.concatenate(plan).tolist()) == ids.tolist()  # every trial exactly once
  assert sum(cost(g) for g in plan) == pytest.approx(brute_force(ids, width, depth, cost))


def test_a_round_takes_an_earlier_rounds_program_where_its_compile_is_worth_more():
  splits = shaped_splits(**MNIST1D)
  options = dict(
    select='final',
    eval_batch_size=1024,
    width_ratio='cost',
    devices=jax.devices()[:1],
    executions=1,
  )
  table = lambda *widths: with_defaults(
    {'hidden_units': list(widths), 'num_layers': [3] * len(widths)}, len(widths)
  )
  plan = lambda table, epochs, reuse=(): planning.plan_buckets(
    table, splits, epochs=epochs, reuse=reuse, **options
  )
  # Eight trials: one chunk of 8 runs at 320 units, two of 4 at 352 (`cpu_chunk`).
  narrow = table(290, 295, 300, 305, 310, 315, 318, 320)
  (wide,) = plan(table(300, 352), 2)
  (own,) = plan(narrow, 2)
  assert own.config.hidden_sizes == (320,) * 3
  # At 2 epochs the padding from 320 to 352 costs less than a compile:
  # the round takes the program compiled for the one before.
  (reused,) = plan(narrow, 2, [wide.config])
  assert reused.config == wide.config
  np.testing.assert_array_equal(reused.trial_ids, own.trial_ids)
  chunk = lambda config: sizing.chunk_runs(config, splits, options['devices'])
  depths = np.full(8, 3)
  padded = sizing.bucket_cost(wide.config, depths, splits, chunk(wide.config), compiled=True)
  assert padded < sizing.bucket_cost(own.config, depths, splits, chunk(own.config))
  # At 200 epochs the padding costs more than the compile it saves.
  (wide_200,) = plan(table(300, 352), 200)
  (kept,) = plan(narrow, 200, [wide_200.config])
  assert kept.config.hidden_sizes == (320,) * 3
  # A program that does not hold the trials is never taken: too narrow, too
  # shallow, or another static setting (batch size).
  for other in (
    wide.config._replace(hidden_sizes=(300,) * 3),
    wide.config._replace(hidden_sizes=(352,) * 2),
    wide.config._replace(batch_size=64),
  ):
    (bucket,) = plan(narrow, 2, [other])
    assert bucket.config == own.config
  # Rounds one after the other: each adds the configs it did not reuse.
  kw = {k: v for k, v in options.items() if k != 'executions'}
  first = planning.round_configs(table(300, 352), splits, epochs=2, **kw)
  assert first == (wide.config,)
  assert planning.round_configs(narrow, splits, reuse=first, epochs=2, **kw) == first
  assert planning.round_configs(table(400), splits, reuse=first, epochs=2, **kw) == (
    wide.config,
    wide.config._replace(hidden_sizes=(400,) * 3),
  )


def test_the_two_extremes_one_bucket_and_one_per_width():
  width = np.array([10, 20, 20, 30, 40])
  depth = np.array([2, 2, 2, 2, 2])
  ids = np.arange(5)
  compiles_only = lambda group: 1.0
  assert [g.tolist() for g in buckets._cheapest_groups(ids, width, depth, compiles_only)] == [
    [0, 1, 2, 3, 4]
  ]
  padding_only = toy_price(compile_cost=0.0, chunk=1)
  plan = buckets._cheapest_groups(ids, width, depth, lambda g: padding_only(g, width, depth))
  assert [g.tolist() for g in plan] == [[0], [1, 2], [3], [4]]  # equal widths never split


def test_shallow_trials_get_their_own_bucket_when_that_is_cheaper():
  # Equal widths: only depth pads. Without a compile cost, depth 1 and 3 part.
  width = np.array([16, 16, 16, 16])
  depth = np.array([1, 3, 1, 3])
  price = toy_price(compile_cost=0.0, chunk=1)
  plan = buckets._cheapest_groups(np.arange(4), width, depth, lambda g: price(g, width, depth))
  assert sorted(g.tolist() for g in plan) == [[0, 2], [1, 3]]


def test_many_distinct_widths_are_cut_at_most_max_cuts_times(monkeypatch):
  monkeypatch.setattr(buckets, 'MAX_CUTS', 4)
  width = np.arange(1, 41)
  depth = np.ones(40, np.int64)
  price = toy_price(compile_cost=0.0, chunk=1)
  plan = buckets._cheapest_groups(np.arange(40), width, depth, lambda g: price(g, width, depth))
  assert len(plan) == 4 and sorted(np.concatenate(plan).tolist()) == list(range(40))


def test_bucket_cost_is_the_compile_plus_every_padded_run():
  splits = shaped_splits(**MNIST1D)
  one = jax.devices()[:1]
  config = TrainConfig(epochs=40, batch_size=128, hidden_sizes=(256,) * 3, num_classes=10)
  size = sizing.chunk_runs(config, splits, one)
  macs_per_example = 40 * 256 + 2 * 256 * 256 + 256 * 10
  examples = 40 * (3 * 3600 + 400)
  for trials in (1, size, size + 1):
    runs = -(-trials // size) * size
    expected = sizing.COMPILE_MACS + runs * examples * macs_per_example
    assert sizing.bucket_cost(config, [3] * trials, splits, size) == expected
  # Executions multiply the runs: 3 trials x 2 runs in chunks of 4 are 8 runs.
  four = sizing.chunk_runs(config, splits, one, executions=2, chunk_size=4)
  assert sizing.bucket_cost(config, [3] * 3, splits, four, executions=2) == (
    sizing.COMPILE_MACS + 8 * examples * macs_per_example
  )


def test_a_chunk_costs_its_deepest_run():
  # Depths 1, 1, 2, 3, 3 in chunks of 2: chunks at depth 1, 3, and 3 (the
  # last one's filler repeats its first run); each at the bucket's widest.
  splits = shaped_splits(**MNIST1D)
  config = TrainConfig(epochs=40, batch_size=128, hidden_sizes=(256,) * 3, num_classes=10)
  macs = lambda depth: 40 * 256 + (depth - 1) * 256 * 256 + 256 * 10
  examples = 40 * (3 * 3600 + 400)
  expected = sizing.COMPILE_MACS + 2 * examples * (macs(1) + macs(3) + macs(3))
  assert sizing.bucket_cost(config, [1, 1, 2, 3, 3], splits, 2) == expected
  # Two executions each: runs 1 1 1 1 | 2 2 3 3 | 3 3 in chunks of 4.
  expected = sizing.COMPILE_MACS + 4 * examples * (macs(1) + macs(3) + macs(3))
  assert sizing.bucket_cost(config, [1, 1, 2, 3, 3], splits, 4, executions=2) == expected


@pytest.mark.parametrize('num_trials', [24, 100])
def test_the_default_search_costs_no_more_than_the_width_ratio_plan(num_trials):
  """The ratio plan is one the cost plan prices (runs of width-neighbours): never cheaper."""
  splits = shaped_splits(**MNIST1D)
  one = jax.devices()[:1]
  space = as_space(search.DEFAULT_SPACE)
  price = lambda planned, table: sum(
    sizing.bucket_cost(
      b.config, buckets.depths(table)[b.trial_ids], splits, sizing.chunk_runs(b.config, splits, one)
    )
    for b in planned
  )
  cheaper = 0
  for seed in range(5):
    table = with_defaults(space.sample(sampling_key(seed, 0), num_trials), num_trials)
    by_cost, by_ratio = (
      planning.plan_buckets(
        table,
        splits,
        epochs=40,
        select='final',
        eval_batch_size=1024,
        width_ratio=ratio,
        devices=one,
        executions=1,
      )
      for ratio in ('cost', 1.5)
    )
    ids = np.sort(np.concatenate([b.trial_ids for b in by_cost]))
    np.testing.assert_array_equal(ids, np.arange(num_trials))
    for bucket in by_cost:  # each bucket as wide and deep as its widest, deepest trial
      real = buckets.layer_widths(table)[bucket.trial_ids]
      assert bucket.config.hidden_sizes[0] == real.max()
      assert len(bucket.config.hidden_sizes) == buckets.depths(table)[bucket.trial_ids].max()
    assert price(by_cost, table) <= price(by_ratio, table)
    cheaper += price(by_cost, table) < price(by_ratio, table)
  assert cheaper >= 3  # it is a real gain on most draws, not a tie


def test_cost_needs_a_price():
  table = with_defaults({'hidden_units': [8, 16], 'num_layers': [1, 1]}, 2)
  with pytest.raises(SearchError, match="width_ratio='cost' needs a price"):
    buckets.make_buckets(table, epochs=1, num_classes=3, width_ratio='cost')
  with pytest.raises(SearchError, match='from splits and mean_epochs'):
    planning.plan_brackets([table], lambda config: 4, epochs=1, num_classes=3, width_ratio='cost')


def test_a_hyperband_trial_is_priced_at_the_epochs_its_bracket_trains_on_average():
  # (1, 9, 3): 9 trials x 1 epoch, 3 go on to 3, 1 to 9; then 5 x 3, 1 to 9; then 3 x 9.
  brackets = sh.hyperband_brackets(1, 9, 3)
  means = [sh.mean_epochs(bracket) for bracket in brackets]
  assert means == pytest.approx([(9 * 1 + 3 * 2 + 1 * 6) / 9, (5 * 3 + 1 * 6) / 5, 9])


@pytest.mark.parametrize('seed', range(3))
def test_hyperbands_cost_plan_costs_no_more_than_the_width_ratio_plan(seed):
  """Priced as `plan_brackets` prices (compile, then each bracket at its mean epochs)."""
  splits = shaped_splits(**MNIST1D)
  one = jax.devices()[:1]
  brackets = sh.hyperband_brackets(1, 27, 3)  # 27 + 12 + 6 + 4 trials of the default space
  means = [sh.mean_epochs(bracket) for bracket in brackets]
  space = as_space(search.DEFAULT_SPACE)
  tables = [
    with_defaults(space.sample(sampling_key(seed, b.index), b.rungs[0].trials), b.rungs[0].trials)
    for b in brackets
  ]
  chunk = lambda config: sizing.chunk_runs(config, splits, one)

  def price(per_bracket, sizes):
    total = 0.0
    for index in range(len(sizes)):
      parts = [(table, bracket[index]) for table, bracket in zip(tables, per_bracket, strict=True)]
      total += sizing.COMPILE_MACS
      for (table, part), epochs in zip(parts, means, strict=True):
        if len(part.trial_ids):
          depths = buckets.depths(table)[part.trial_ids]
          size = chunk(part.config)  # the bucket's own chunk, as run_trials prices
          total += sizing.bucket_cost(
            part.config, depths, splits, size, compiled=True, epochs=epochs
          )
    return total

  by = {
    ratio: planning.plan_brackets(
      tables, chunk, splits=splits, mean_epochs=means, epochs=27, num_classes=10, width_ratio=ratio
    )
    for ratio in ('cost', 1.5)
  }
  per_bracket, _ = by['cost']
  for table, parts in zip(tables, per_bracket, strict=True):  # every trial in one bucket
    rows = np.sort(np.concatenate([part.trial_ids for part in parts]))
    np.testing.assert_array_equal(rows, np.arange(len(table['hidden_units'])))
  assert price(*by['cost']) <= price(*by[1.5])


@pytest.mark.parametrize('seed', range(3))
def test_hyperband_splits_off_no_bucket_for_its_smaller_chunks(seed):
  # A bucket of a few wide trials gets chunks as small as its largest bracket
  # share; priced at those, 3 trials of 447-448 units at max_epochs=81 were
  # split off in chunks of 1 (which run each trial slower: 226 and 239 s of
  # search against 214 s). Priced at the bucket's own chunk, none is.
  splits = shaped_splits(**MNIST1D)
  one = jax.devices()[:1]
  brackets = sh.hyperband_brackets(1, 81, 3)
  space = as_space(search.DEFAULT_SPACE)
  tables = [
    with_defaults(space.sample(sampling_key(seed, b.index), b.rungs[0].trials), b.rungs[0].trials)
    for b in brackets
  ]
  chunk = lambda config: sizing.chunk_runs(config, splits, one)
  per_bracket, sizes = planning.plan_brackets(
    tables,
    chunk,
    splits=splits,
    mean_epochs=[sh.mean_epochs(b) for b in brackets],
    epochs=81,
    num_classes=10,
    width_ratio='cost',
  )
  assert sizes == [chunk(bucket.config) for bucket in per_bracket[0]]


def test_cnn_groups_split_by_the_default_ratio_under_cost():
  # `bucket_cost` prices an MLP's matmuls; a CNN's convolutions it cannot, so it is not asked.
  n = 4
  table = with_defaults({'model': ['cnn'] * n, 'channels': [4, 5, 9, 16], 'num_blocks': [1] * n}, n)

  def no_price(config, ids, compiled):
    raise AssertionError('a CNN bucket was priced')

  by_cost = buckets.make_buckets(
    table, epochs=1, num_classes=3, input_shape=(8, 1), width_ratio='cost', price=no_price
  )
  by_ratio = buckets.make_buckets(
    table, epochs=1, num_classes=3, input_shape=(8, 1), width_ratio=buckets.DEFAULT_WIDTH_RATIO
  )
  assert [b.trial_ids.tolist() for b in by_cost] == [b.trial_ids.tolist() for b in by_ratio]
  assert [b.trial_ids.tolist() for b in by_cost] == [[0, 1], [2], [3]]


@pytest.mark.parametrize(
  'name, values, flag',
  [('keep_prob', [1.0, 1.0], False), ('keep_prob', [1.0, 0.9], True)]
  + [('l2', [0.0, 0.0], False), ('l2', [0.0, 1e-3], True)],
)
def test_a_bucket_leaves_out_dropout_and_the_l2_term_where_no_trial_uses_them(name, values, flag):
  table = with_defaults({'hidden_units': [16, 16], name: values}, 2)
  (bucket,) = buckets.make_buckets(table, epochs=1, num_classes=3, width_ratio=None)
  assert getattr(bucket.config, {'keep_prob': 'dropout', 'l2': 'l2_penalty'}[name]) is flag


def test_a_bucket_lists_its_trials_shallowest_first_so_chunks_hold_one_depth():
  depth = [3, 2, 3, 2, 2, 3, 2, 3]
  table = with_defaults({'hidden_units': [16] * 8, 'num_layers': depth}, 8)
  (bucket,) = buckets.make_buckets(table, epochs=1, num_classes=3, width_ratio=None)
  assert bucket.trial_ids.tolist() == [1, 3, 4, 6, 0, 2, 5, 7]  # by depth, then by id
  splits = shaped_splits(n_train=256, n_dev=16, features=4, classes=3)
  plan = chunks.plan_chunks([bucket], splits, jax.devices()[:1], executions=1, chunk_size=4)
  assert [np.asarray(depth)[bucket.trial_ids[c.rows]].tolist() for c in plan] == [[2] * 4, [3] * 4]

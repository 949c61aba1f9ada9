"""Tests for bnjax.space: distributions sample on the right scale; Space validates and samples."""

import dataclasses
import math

import chex
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnjax.space import (
  DEFAULTS,
  Choice,
  Fixed,
  IntLogUniform,
  IntUniform,
  LogUniform,
  OneMinusLogUniform,
  Space,
  SpaceError,
  Uniform,
  with_defaults,
)

KEY = jax.random.key(0)
N = 64  # one sample size for property tests: every new shape costs a jax compile

# ------------------------------------------------------------------- scale-specific sampling


def test_log_uniform_gives_each_decade_a_quarter():
  x = LogUniform(1e-4, 1.0).sample(KEY, 40_000)
  counts, _ = np.histogram(x, bins=[1e-4, 1e-3, 1e-2, 1e-1, 1.0 + 1e-12])
  np.testing.assert_allclose(counts / x.size, 0.25, atol=0.02)
  assert x.dtype == np.float64 and x.min() >= 1e-4 and x.max() <= 1.0


def test_one_minus_log_uniform_puts_half_above_0_99():
  x = OneMinusLogUniform(0.9, 0.999).sample(KEY, 40_000)
  assert abs(np.mean(x > 0.99) - 0.5) < 0.02
  assert x.min() >= 0.9 and x.max() <= 0.999
  # Linear sampling would put only ~9% above 0.99: check we are far from that.
  assert np.mean(x > 0.99) > 0.4


def test_int_uniform_hits_each_value_a_third_inclusive():
  x = IntUniform(2, 4).sample(KEY, 30_000)
  assert x.dtype == np.int64
  values, counts = np.unique(x, return_counts=True)
  np.testing.assert_array_equal(values, [2, 3, 4])
  np.testing.assert_allclose(counts / x.size, 1 / 3, atol=0.02)


def test_int_log_uniform_is_int_in_bounds_with_geometric_median():
  x = IntLogUniform(16, 512).sample(KEY, 20_000)
  assert x.dtype == np.int64
  assert x.min() == 16 and x.max() == 512  # both ends inclusive and reached
  assert abs(np.median(x) / math.sqrt(16 * 512) - 1) < 0.1
  assert np.mean(x < 90.5) == pytest.approx(0.5, abs=0.03)


def test_int_log_uniform_reaches_every_integer():
  x = IntLogUniform(1, 40).sample(KEY, 20_000)
  np.testing.assert_array_equal(np.unique(x), np.arange(1, 41))


def test_choice_and_fixed_dtypes_and_frequencies():
  s = Choice(('adam', 'sgd')).sample(KEY, 10_000)
  assert s.dtype.kind == 'U' and set(s) == {'adam', 'sgd'}
  assert abs(np.mean(s == 'adam') - 0.5) < 0.02
  assert Choice((True, False)).sample(KEY, 8).dtype == np.bool_
  assert Choice((32, 64)).sample(KEY, 8).dtype == np.int64
  assert Choice((0.5, 1)).sample(KEY, 8).dtype == np.float64
  np.testing.assert_array_equal(Fixed('he').sample(KEY, 3), ['he', 'he', 'he'])
  assert Fixed(3).sample(KEY, 2).dtype == np.int64


# -------------------------------------------------------------------- property-based bounds


def _uniforms():
  return st.tuples(st.floats(-1e6, 1e6), st.floats(1e-3, 1e6)).map(
    lambda t: Uniform(t[0], t[0] + t[1])
  )


def _logs():
  return st.tuples(st.floats(-12, 6), st.floats(0.01, 10)).map(
    lambda t: LogUniform(10 ** t[0], 10 ** (t[0] + t[1]))
  )


def _one_minus_logs():
  return st.tuples(st.floats(0, 0.99), st.floats(0.001, 0.999)).map(
    lambda t: OneMinusLogUniform(t[0], t[0] + (1 - t[0]) * t[1])
  )


def _ints(cls, lowest):
  return st.tuples(st.integers(lowest, 10**6), st.integers(1, 10**5)).map(
    lambda t: cls(t[0], t[0] + t[1])
  )


ANY_RANGED = st.one_of(
  _uniforms(), _logs(), _one_minus_logs(), _ints(IntUniform, -(10**6)), _ints(IntLogUniform, 1)
)


@settings(max_examples=60, deadline=None)
@given(dist=ANY_RANGED, seed=st.integers(0, 2**31 - 1))
def test_samples_lie_in_range_are_deterministic_and_key_dependent(dist, seed):
  key = jax.random.key(seed)
  x = dist.sample(key, N)
  chex.assert_shape(x, (N,))
  assert np.all((x >= dist.low) & (x <= dist.high)), (dist, x.min(), x.max())
  np.testing.assert_array_equal(x, dist.sample(key, N))
  assert not np.array_equal(x, dist.sample(jax.random.fold_in(key, 1), N))
  assert x.dtype == (np.int64 if isinstance(dist, IntUniform | IntLogUniform) else np.float64)


# --------------------------------------------------------------------------------------- grid


def test_grids_are_evenly_spaced_on_their_own_scale():
  np.testing.assert_allclose(LogUniform(1e-4, 1).grid(5), [1e-4, 1e-3, 1e-2, 1e-1, 1], rtol=1e-12)
  assert Uniform(0, 1).grid(3) == (0.0, 0.5, 1.0)
  np.testing.assert_allclose(OneMinusLogUniform(0.9, 0.999).grid(3), [0.9, 0.99, 0.999], rtol=1e-12)
  assert IntUniform(50, 100).grid(3) == (50, 75, 100)
  assert IntUniform(2, 4).grid(10) == (2, 3, 4)  # never more than high - low + 1 values
  assert IntLogUniform(16, 512).grid(6) == (16, 32, 64, 128, 256, 512)
  assert Choice(('a', 'b', 'c')).grid(2) == ('a', 'b', 'c')
  assert Fixed(0.5).grid(4) == (0.5,)
  assert LogUniform(1e-4, 1).grid(1) == pytest.approx((1e-2,))  # one point: the centre


def test_int_log_grid_values_are_distinct_even_when_rounding_collides():
  g = IntLogUniform(1, 1000).grid(20)
  assert len(g) == 20 and len(set(g)) == 20 and g[0] == 1 and g[-1] == 1000
  assert list(g) == sorted(g) and all(isinstance(v, int) for v in g)
  assert IntLogUniform(1, 5).grid(9) == (1, 2, 3, 4, 5)


@pytest.mark.parametrize('num', [0, -1, 2.0, True])
def test_grid_rejects_bad_counts(num):
  with pytest.raises(SpaceError, match='grid num'):
    Uniform(0, 1).grid(num)


# ------------------------------------------------------------------------------------- refine

_SCALE = {
  Uniform: lambda v: np.asarray(v, float),
  LogUniform: np.log10,
  OneMinusLogUniform: lambda v: -np.log10(1 - np.asarray(v, float)),
}


@pytest.mark.parametrize(
  ('dist', 'values', 'shrink'),
  [
    (Uniform(0, 10), [4.0, 4.5], 0.5),
    (Uniform(0, 10), [9.9], 0.3),  # window pushed back inside at the edge
    (LogUniform(1e-4, 1), [1e-2, 1.1e-2], 0.5),
    (LogUniform(1e-4, 1), [0.5], 0.25),
    (OneMinusLogUniform(0.9, 0.999), [0.99], 0.5),
    (OneMinusLogUniform(0.9, 0.999), [0.9, 0.901], 0.5),
  ],
)
def test_refine_shrinks_on_own_scale_and_covers_values(dist, values, shrink):
  new = dist.refine(values, shrink=shrink)
  f = _SCALE[type(dist)]
  assert type(new) is type(dist)
  assert dist.low <= new.low and new.high <= dist.high
  assert new.low <= min(values) and max(values) <= new.high
  ratio = (f(new.high) - f(new.low)) / (f(dist.high) - f(dist.low))
  assert ratio == pytest.approx(shrink, rel=1e-6)


def test_refine_is_centred_on_the_values():
  new = LogUniform(1e-4, 1).refine([1e-2], shrink=0.5)
  assert (new.low, new.high) == pytest.approx((1e-3, 1e-1), rel=1e-9)


def test_refine_widens_to_cover_spread_values():
  new = Uniform(0, 10).refine([1.0, 9.0], shrink=0.1)
  assert (new.low, new.high) == (1.0, 9.0)


@settings(max_examples=60, deadline=None)
@given(dist=ANY_RANGED, seed=st.integers(0, 1000), k=st.integers(1, 5), shrink=st.floats(0.05, 1.0))
def test_refine_property_within_old_covering_values_same_kind(dist, seed, k, shrink):
  values = dist.sample(jax.random.key(seed), N)[:k]
  new = dist.refine(values, shrink=shrink)
  assert type(new) is type(dist)
  assert dist.low <= new.low <= values.min() and values.max() <= new.high <= dist.high
  if isinstance(dist, IntUniform | IntLogUniform):
    assert isinstance(new.low, int) and isinstance(new.high, int)


def test_int_refine_stays_int_inclusive_and_narrower():
  new = IntUniform(50, 100).refine([70], shrink=0.5)
  assert isinstance(new, IntUniform) and new.low <= 70 <= new.high
  assert 23 <= new.high - new.low <= 27  # 51 values -> about 25
  assert IntUniform(2, 4).refine([3], shrink=0.5) == IntUniform(3, 3)
  log = IntLogUniform(16, 512).refine([64], shrink=0.5)
  assert isinstance(log, IntLogUniform) and log.low <= 64 <= log.high
  assert math.log(log.high / log.low) == pytest.approx(0.5 * math.log(512 / 16), rel=0.1)


def test_refine_choice_and_fixed():
  c = Choice(('sgd', 'momentum', 'rmsprop', 'adam'))
  assert c.refine(np.array(['adam', 'sgd', 'adam'])) == Choice(('sgd', 'adam'))
  assert Fixed(3).refine([3, 3]) == Fixed(3)


@pytest.mark.parametrize(
  ('dist', 'values', 'shrink', 'match'),
  [
    (Uniform(0, 1), [2.0], 0.5, 'inside'),
    (Uniform(0, 1), [], 0.5, 'nothing'),
    (Uniform(0, 1), [0.5], 0.0, 'shrink'),
    (Uniform(0, 1), [0.5], 1.5, 'shrink'),
    (IntUniform(1, 9), [2.5], 0.5, 'integers'),
    (Choice(('a', 'b')), ['c'], 0.5, "'c'"),
  ],
)
def test_refine_rejects_bad_input(dist, values, shrink, match):
  with pytest.raises(SpaceError, match=match):
    dist.refine(values, shrink=shrink)


# ------------------------------------------------------------------------ argument validation


@pytest.mark.parametrize(
  ('make', 'match'),
  [
    (lambda: Uniform(1, 1), 'low < high'),
    (lambda: Uniform(0, math.inf), 'finite'),
    (lambda: Uniform(True, 2), 'finite number'),
    (lambda: LogUniform(0, 1), '0 < low < high'),
    (lambda: LogUniform(-1, 1), '0 < low < high'),
    (lambda: OneMinusLogUniform(0.9, 1.0), 'high < 1'),
    (lambda: OneMinusLogUniform(-0.1, 0.5), '0 <= low'),
    (lambda: IntUniform(4, 2), 'low <= high'),
    (lambda: IntUniform(1.5, 3), 'integer'),
    (lambda: IntLogUniform(0, 10), '1 <= low'),
    (lambda: Choice(()), 'at least one'),
    (lambda: Choice(('a', 1)), 'all numbers, all strings or all bools'),
    (lambda: Choice(('a', 'a')), 'distinct'),
    (lambda: Choice('abc'), 'tuple'),
    (lambda: Fixed([1, 2]), 'Choice'),
  ],
)
def test_distributions_validate_arguments(make, match):
  with pytest.raises(SpaceError, match=match) as info:
    make()
  assert '\n' not in str(info.value)


def test_distributions_are_frozen_and_report_their_scale():
  with pytest.raises(dataclasses.FrozenInstanceError):
    Uniform(0, 1).low = 2
  scales = [
    d.scale
    for d in (
      Uniform(0, 1),
      LogUniform(1, 2),
      OneMinusLogUniform(0, 0.5),
      IntUniform(1, 2),
      IntLogUniform(1, 2),
      Choice((1,)),
      Fixed(1),
    )
  ]
  assert scales == ['linear', 'log', 'one_minus_log', 'linear', 'log', 'categorical', 'fixed']
  assert IntUniform(2.0, 4) == IntUniform(2, 4)  # integral floats (JSON) are accepted


def test_sample_rejects_int_seed_and_negative_n():
  with pytest.raises(SpaceError, match='PRNG key'):
    Uniform(0, 1).sample(0, 3)
  with pytest.raises(SpaceError, match='n must be'):
    Uniform(0, 1).sample(KEY, -1)


# -------------------------------------------------------------------------------------- Space

BASE = {'learning_rate': LogUniform(1e-4, 1.0), 'hidden_units': IntUniform(50, 100)}


def test_adding_a_name_keeps_other_samples():
  small = Space(BASE).sample(KEY, 100)
  big = Space(
    {'beta1': OneMinusLogUniform(0.9, 0.999), **BASE, 'optimizer': Choice(('adam', 'sgd'))}
  ).sample(KEY, 100)
  chex.assert_trees_all_equal(small, {k: big[k] for k in small})


def test_names_get_independent_keys_and_space_is_deterministic():
  s = Space({'beta1': Uniform(0, 0.9), 'beta2': Uniform(0, 0.9)})
  a = s.sample(KEY, 50)
  assert not np.array_equal(a['beta1'], a['beta2'])
  chex.assert_trees_all_equal(a, s.sample(KEY, 50))
  assert not np.array_equal(a['beta1'], s.sample(jax.random.key(1), 50)['beta1'])


def test_with_defaults_fills_every_missing_canonical_name():
  cols = Space(BASE).sample(KEY, 7)
  full = with_defaults(cols, 7)
  assert set(full) == set(DEFAULTS)
  np.testing.assert_array_equal(full['learning_rate'], cols['learning_rate'])
  for name, value in DEFAULTS.items():
    chex.assert_shape(full[name], (7,))
    if name not in cols:
      assert (full[name] == value).all(), name
  assert full['optimizer'][0] == 'adam' and full['batch_norm'].dtype == np.bool_
  assert full['num_layers'].dtype == np.int64 and full['eps'][0] == 1e-8
  with pytest.raises(SpaceError, match='shape'):
    with_defaults({'l2': np.zeros(3)}, 7)


def test_unknown_name_suggests_closest_and_lists_known():
  with pytest.raises(SpaceError, match="did you mean 'learning_rate'") as info:
    Space({'learning_rat': 0.1})
  assert 'known names' in str(info.value) and 'batch_size' in str(info.value)
  with pytest.raises(SpaceError, match="did you mean 'bn_momentum'"):
    with_defaults({'bn_momentun': np.zeros(2)}, 2)


@pytest.mark.parametrize(
  ('name', 'dist', 'match'),
  [
    ('beta1', Uniform(0.5, 1.5), r'beta1 must lie in \[0, 1\); got range \[0.5, 1.5\]'),
    ('beta2', Uniform(0.9, 1.0), r'\[0, 1\)'),
    ('keep_prob', Uniform(0.0, 1.0), r'\(0, 1\]'),
    ('learning_rate', Fixed(0.0), r'\(0, inf\)'),
    ('lr_decay', Fixed(1.0), r'\[0, 1\)'),
    ('l2', Fixed(-0.1), r'\[0, inf\)'),
    ('num_layers', IntUniform(0, 3), r'\[1, inf\)'),
    ('hidden_units', Uniform(50, 100), 'integers'),
    ('batch_size', Choice((32, 64.5)), 'integer'),
    ('optimizer', Choice(('adam', 'sgdd')), r"'sgdd'.*did you mean 'sgd'.*'rmsprop'"),
    ('activation', LogUniform(1, 2), 'categorical'),
    ('batch_norm', Fixed(1), 'true or false'),
    ('eps', Fixed('small'), 'number'),
  ],
)
def test_space_checks_whole_support_against_allowed_values(name, dist, match):
  with pytest.raises(SpaceError, match=match) as info:
    Space({name: dist})
  assert '\n' not in str(info.value)


def test_valid_edges_and_plain_values_are_accepted():
  s = Space(
    {
      'keep_prob': Uniform(0.5, 1.0),
      'l2': 0.0,
      'beta1': OneMinusLogUniform(0, 0.99),
      'batch_norm': Choice((True, False)),
      'optimizer': 'sgd',
    }
  )
  assert s['l2'] == Fixed(0.0) and s['optimizer'] == Fixed('sgd')
  assert s.names == ('keep_prob', 'l2', 'beta1', 'batch_norm', 'optimizer')


def test_per_layer_hidden_units():
  s = Space({'hidden_units_1': IntUniform(50, 100), 'hidden_units_3': 64, 'num_layers': 3})
  assert s['hidden_units_3'] == Fixed(64)
  assert 'hidden_units_1' in s.sample(KEY, 4)
  for bad in ('hidden_units_0', 'hidden_units_x'):
    with pytest.raises(SpaceError, match='unknown hyperparameter'):
      Space({bad: 64})
  with pytest.raises(SpaceError, match='integers'):
    Space({'hidden_units_2': Uniform(1, 9)})


def test_space_is_an_immutable_hashable_mapping():
  s = Space(BASE)
  assert len(s) == 2 and list(s) == list(BASE) and s['hidden_units'] == IntUniform(50, 100)
  with pytest.raises(TypeError):
    s['l2'] = Fixed(0.0)
  with pytest.raises(TypeError):
    s.dists['l2'] = Fixed(0.0)
  assert s == Space(dict(BASE)) and hash(s) == hash(Space(dict(BASE)))
  with pytest.raises(SpaceError, match='dict'):
    Space([('l2', 0.0)])


def test_space_grid_is_the_cartesian_product():
  s = Space(
    {'learning_rate': LogUniform(1e-4, 1), 'optimizer': Choice(('adam', 'sgd')), 'batch_norm': True}
  )
  g = s.grid(3)
  assert set(g) == set(s.names) and all(len(v) == 6 for v in g.values())
  rows = set(zip(g['learning_rate'].round(12), g['optimizer'], strict=True))
  assert rows == {(lr, o) for lr in (1e-4, 1e-2, 1.0) for o in ('adam', 'sgd')}
  assert g['batch_norm'].all() and g['optimizer'].dtype.kind == 'U'
  wide = Space(
    {'learning_rate': LogUniform(1e-4, 1), 'beta1': Uniform(0, 0.9), 'l2': Uniform(0, 1)}
  )
  with pytest.raises(SpaceError, match='points_per_axis'):
    wide.grid(200)  # 8e6 rows: refused before building anything


def test_space_refine_keeps_kinds_and_fixed_and_needs_columns():
  s = Space({**BASE, 'optimizer': Choice(('adam', 'sgd', 'rmsprop')), 'l2': 0.0})
  rows = s.sample(KEY, 200)
  best = {k: v[:3] for k, v in rows.items()}
  r = s.refine(best, shrink=0.5)
  assert [type(d) for d in r.values()] == [type(d) for d in s.values()]
  assert r['l2'] == Fixed(0.0) and set(r['optimizer'].values) == set(best['optimizer'])
  lr = r['learning_rate']
  want = max(0.5 * 4.0, np.ptp(np.log10(best['learning_rate'])))  # 4 decades halved
  assert np.log10(lr.high / lr.low) == pytest.approx(want, rel=1e-6)
  with pytest.raises(SpaceError, match="lacks column 'hidden_units'"):
    s.refine({'learning_rate': best['learning_rate']})


def test_samples_are_prefixes_so_more_trials_only_append():
  for dist in (LogUniform(1e-4, 1), IntUniform(1, 9), Choice(('a', 'b', 'c'))):
    long = dist.sample(KEY, 5000)  # spans two internal blocks
    np.testing.assert_array_equal(dist.sample(KEY, 10), long[:10])
    np.testing.assert_array_equal(dist.sample(KEY, 4500), long[:4500])
  assert Uniform(0, 1).sample(KEY, 0).shape == (0,)

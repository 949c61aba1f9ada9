"""Tests for bnjax.space: the --space grammar, JSON files and the Keras-Tuner facade."""

import json
import re

import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnjax.space import (
  Choice,
  Fixed,
  HyperParameters,
  IntLogUniform,
  IntUniform,
  LogUniform,
  OneMinusLogUniform,
  Space,
  SpaceError,
  Uniform,
  load_space,
  parse_spec,
  space_from_json,
)

EXAMPLE = (
  'learning_rate=log:1e-4:1,beta1=1mlog:0.9:0.999,hidden_units=int:50:100,num_layers=int:2:4'
)

RICH = Space(
  {
    'learning_rate': LogUniform(1e-4, 1.0),
    'beta1': OneMinusLogUniform(0.9, 0.999),
    'beta2': Uniform(0.1 + 0.2, 0.9),  # 0.30000000000000004 must survive the trip exactly
    'batch_size': IntLogUniform(16, 512),
    'num_layers': IntUniform(2, 4),
    'optimizer': Choice(('adam', 'sgd', 'momentum')),
    'batch_norm': Choice((True, False)),
    'hidden_units': Choice((64, 128)),
    'keep_prob': Choice((0.5, 1.0)),
    'activation': 'tanh',
    'l2': 0.0,
    'hidden_units_2': 32,
  }
)


def test_example_parses_to_the_right_kinds_and_bounds():
  s = parse_spec(EXAMPLE)
  assert s == Space(
    {
      'learning_rate': LogUniform(1e-4, 1.0),
      'beta1': OneMinusLogUniform(0.9, 0.999),
      'hidden_units': IntUniform(50, 100),
      'num_layers': IntUniform(2, 4),
    }
  )
  assert s.names == ('learning_rate', 'beta1', 'hidden_units', 'num_layers')
  assert isinstance(s['hidden_units'].low, int) and isinstance(s['learning_rate'].low, float)


def test_values_and_whitespace():
  s = parse_spec(
    '  batch_size = choice: 32 | 64 ,batch_norm=choice:true|False , '
    'keep_prob=choice:0.5|1, optimizer=fixed:adam,l2=fixed:0  '
  )
  assert (
    s['batch_size'] == Choice((32, 64))
    and s['batch_size'].sample(jax.random.key(0), 4).dtype == np.int64
  )
  assert s['batch_norm'].values == (True, False)
  assert s['keep_prob'].values == (0.5, 1) and isinstance(s['keep_prob'].values[0], float)
  assert s['optimizer'] == Fixed('adam') and s['l2'].value == 0


def test_spec_round_trip_is_exact():
  text = RICH.to_spec()
  assert parse_spec(text) == RICH
  assert parse_spec(text).to_spec() == text
  assert 'beta2=uniform:0.30000000000000004:0.9' in text
  assert 'batch_norm=choice:true|false' in text


@settings(max_examples=50, deadline=None)
@given(
  lo=st.floats(1e-9, 1e3),
  ratio=st.floats(1.0001, 1e4),
  a=st.floats(0, 0.99),
  k=st.integers(1, 10**5),
  m=st.integers(0, 10**3),
)
def test_spec_and_json_round_trips_property(lo, ratio, a, k, m):
  s = Space(
    {
      'learning_rate': LogUniform(lo, lo * ratio),
      'bn_momentum': OneMinusLogUniform(a, a + (1 - a) / 2),
      'batch_size': IntLogUniform(k, k + m),
      'hidden_units': IntUniform(k, k + m),
    }
  )
  assert parse_spec(s.to_spec()) == s
  assert space_from_json(json.loads(s.to_json())) == s


def test_json_round_trip_via_file(tmp_path):
  path = tmp_path / 'space.json'
  path.write_text(RICH.to_json())
  assert load_space(str(path)) == RICH
  assert load_space(path) == RICH  # PathLike is fine too


def test_json_plain_values_and_format(tmp_path):
  path = tmp_path / 's.json'
  path.write_text(
    json.dumps(
      {
        'learning_rate': {'kind': 'log', 'low': 1e-4, 'high': 1},
        'optimizer': {'kind': 'choice', 'values': ['adam', 'sgd']},
        'batch_size': {'kind': 'intlog', 'low': 16, 'high': 512},
        'batch_norm': False,
        'l2': 1e-4,
      }
    )
  )
  s = load_space(str(path))
  assert s == Space(
    {
      'learning_rate': LogUniform(1e-4, 1.0),
      'optimizer': Choice(('adam', 'sgd')),
      'batch_size': IntLogUniform(16, 512),
      'batch_norm': False,
      'l2': 1e-4,
    }
  )
  assert json.loads(Space({'l2': 0.0}).to_json()) == {'l2': {'kind': 'fixed', 'value': 0.0}}


def test_load_space_falls_back_to_spec_strings():
  assert load_space(EXAMPLE) == parse_spec(EXAMPLE)


@pytest.mark.parametrize(
  ('content', 'match'),
  [
    ('{not json', 'not valid JSON'),
    ('[1, 2]', 'must be an object'),
    ('{"learning_rate": {"kind": "logg", "low": 1, "high": 2}}', "unknown kind 'logg'.*'log'"),
    ('{"learning_rate": {"kind": "log", "low": 1}}', 'takes keys low, high'),
    ('{"optimizer": ["adam", "sgd"]}', '"kind": "choice"'),
    ('{"beta1": {"kind": "uniform", "low": 0.5, "high": 1.5}}', r"'beta1'.*\[0, 1\)"),
    ('{"learnig_rate": 0.1}', "did you mean 'learning_rate'"),
  ],
)
def test_bad_json_files_raise_one_line(tmp_path, content, match):
  path = tmp_path / 'bad.json'
  path.write_text(content)
  with pytest.raises(SpaceError, match=match) as info:
    load_space(str(path))
  assert '\n' not in str(info.value)


def test_missing_json_file_is_reported_not_parsed_as_spec(tmp_path):
  with pytest.raises(SpaceError, match='does not exist'):
    load_space(str(tmp_path / 'nope.json'))


@pytest.mark.parametrize(
  ('spec', 'quoted', 'expected'),
  [
    ('', "''", 'NAME=KIND:ARGS'),
    ('   ', "'   '", 'NAME=KIND:ARGS'),
    ('learning_rate', "'learning_rate'", "lacks '='"),
    ('learning_rate=logg:1e-4:1', "'learning_rate=logg:1e-4:1'", 'kinds: uniform, log, 1mlog'),
    ('learning_rate=log:1e-4', "'learning_rate=log:1e-4'", 'learning_rate=log:LOW:HIGH'),
    ('learning_rate=log:1e-4:1:2', "'learning_rate=log:1e-4:1:2'", 'log:LOW:HIGH'),
    ('learning_rate=log:small:1', "'learning_rate=log:small:1'", "non-numeric bound 'small'"),
    ('hidden_units=int:50:true', "'hidden_units=int:50:true'", 'non-numeric'),
    ('l2=fixed:0,l2=fixed:1e-4', "'l2=fixed:1e-4'", "repeats name 'l2'"),
    ('l2=fixed:0,,eps=fixed:1e-8', "'l2=fixed:0,,eps=fixed:1e-8'", 'empty item'),
    ('=log:1e-4:1', "'=log:1e-4:1'", 'needs a name'),
    ('optimizer=choice:adam||sgd', "'optimizer=choice:adam||sgd'", 'empty value'),
    ('optimizer=fixed:adam:sgd', "'optimizer=fixed:adam:sgd'", 'optimizer=fixed:V'),
    ('learning_rate=log:1:1e-4', "'learning_rate=log:1:1e-4'", '0 < low < high'),
    ('beta1=uniform:0.5:1.5', "'beta1=uniform:0.5:1.5'", r'must lie in \[0, 1\)'),
    ('optimizer=choice:adam|sgdd', "'optimizer=choice:adam|sgdd'", "did you mean 'sgd'"),
    ('learnig_rate=log:1e-4:1', "'learnig_rate=log:1e-4:1'", "did you mean 'learning_rate'"),
    ('hidden_units=int:2.5:4', "'hidden_units=int:2.5:4'", 'integer'),
    # An int past the float range (found by tests/test_fuzz_inputs.py).
    ('keep_prob=uniform:0:' + '9' * 400, "'keep_prob=uniform:0:999", 'finite number'),
  ],
)
def test_malformed_specs_quote_the_item_and_the_expected_form(spec, quoted, expected):
  with pytest.raises(SpaceError) as info:
    parse_spec(spec)
  msg = str(info.value)
  assert quoted in msg and '\n' not in msg
  assert re.search(expected, msg), msg


def test_to_spec_refuses_strings_the_grammar_cannot_carry():
  with pytest.raises(SpaceError, match='to_json'):
    Choice(('a,b', 'c')).to_spec()
  with pytest.raises(SpaceError, match='to_json'):
    Fixed('3').to_spec()  # would read back as the int 3


# ------------------------------------------------------------------------------ hp facade


def _build(hp):
  lr = hp.Float('learning_rate', 1e-4, 1.0, sampling='log')
  beta1 = hp.Float('beta1', 0.9, 0.999, sampling='reverse_log')
  units = hp.Int('hidden_units', 50, 100)
  batch = hp.Int('batch_size', 16, 512, sampling='log')
  opt = hp.Choice('optimizer', ['adam', 'sgd'])
  bn = hp.Boolean('batch_norm')
  l2 = hp.Fixed('l2', 0.0)
  return lr, beta1, units, batch, opt, bn, l2


def test_hp_facade_builds_the_equivalent_space():
  hp = HyperParameters()
  assert _build(hp) == (1e-4, 0.9, 50, 16, 'adam', False, 0.0)
  assert hp.space() == Space(
    {
      'learning_rate': LogUniform(1e-4, 1.0),
      'beta1': OneMinusLogUniform(0.9, 0.999),
      'hidden_units': IntUniform(50, 100),
      'batch_size': IntLogUniform(16, 512),
      'optimizer': Choice(('adam', 'sgd')),
      'batch_norm': Choice((False, True)),
      'l2': 0.0,
    }
  )
  _build(hp)  # build functions run many times: same definitions are fine
  assert len(hp.space()) == 7
  assert hp.Float('eps', 1e-9, 1e-7, sampling='log', default=1e-8) == 1e-8


@pytest.mark.parametrize(
  ('call', 'match'),
  [
    (lambda hp: hp.Float('learning_rate', 1e-4, 1, sampling='logg'), "'linear', 'log'"),
    (lambda hp: hp.Int('batch_size', 16, 512, sampling='reverse_log'), 'sampling'),
    (lambda hp: hp.Float('beta1', 0.5, 1.5), r'\[0, 1\)'),
    (lambda hp: hp.Choice('optimiser', ['adam']), "did you mean 'optimizer'"),
    (lambda hp: hp.Int('num_layers', 1, 4, default=9), 'outside'),
    (lambda hp: (hp.Int('num_layers', 1, 4), hp.Int('num_layers', 1, 5)), 'already'),
  ],
)
def test_hp_facade_rejects_bad_calls(call, match):
  with pytest.raises(SpaceError, match=match):
    call(HyperParameters())

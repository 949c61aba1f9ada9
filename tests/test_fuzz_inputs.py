"""Fuzzing the edges users hand over: the --space grammar, JSON spaces, .npz and .h5 files.

Every input either loads or raises the library's own error (`SpaceError`, `DataError`) with a
one-line message; anything else is a bug. Each test's examples and time are bounded by its
settings, so the file runs in seconds. The inputs that once crashed `bnjax.space` are kept at the
end as regression cases.
"""

import json
import string
from datetime import timedelta

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bnjax import data, registry
from bnjax.data import DataError
from bnjax.space import KINDS, Space, SpaceError, load_space, parse_spec, space_from_json

FUZZ = settings(
  max_examples=150,
  deadline=timedelta(seconds=5),  # each example takes milliseconds; this only stops a hang
  database=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FILES = settings(FUZZ, max_examples=200)


def _one_line(error: Exception) -> None:
  message = str(error)
  assert message and '\n' not in message and '\r' not in message, repr(message)


# ---------------------------------------------------------------------------------------------
# The --space grammar and JSON spaces.

# Names the registry knows, near misses of them, and junk.
NAMES = st.sampled_from(
  [*registry.REGISTRY, 'hidden_units_1', 'hidden_units_0', 'hidden_units_' + '9' * 30, 'lr', '']
) | st.text(max_size=8)
KIND_NAMES = st.sampled_from([*KINDS, 'choice', 'fixed', 'Log', 'logg', '', ' log ']) | st.text(
  max_size=6
)
NUMBERS = st.one_of(
  st.floats().map(repr),  # nan, inf, -0.0, 5e-324, 1.7976931348623157e+308 among them
  st.integers(-(10**30), 10**30).map(str),
  st.sampled_from(
    ['nan', 'NaN', 'inf', '-inf', '1e400', '-1e400', '1e-400', '0', '-0', '0x10', '1_000']
    + ['true', 'false', 'True', 'None', '', ' ', '１', '٣', '9' * 400, '1e99999', '.', '-']
  ),
  st.text(alphabet=string.printable, max_size=5),
)
SEPARATORS = st.sampled_from([',', ', ', ',,', ' , ', '|', ';'])


@st.composite
def spec_items(draw):
  """`NAME=KIND:ARGS`, each piece right or slightly wrong."""
  name, kind = draw(NAMES), draw(KIND_NAMES)
  if kind == 'choice':
    values = NUMBERS | st.sampled_from(['adam', 'sgd', 'relu', 'he', 'adam '])
    body = 'choice:' + '|'.join(draw(st.lists(values, max_size=4)))
  else:
    body = ':'.join([kind, *draw(st.lists(NUMBERS, max_size=3))])
  return name + draw(st.sampled_from(['=', '=', '==', ':', '', ' = '])) + body


SPECS = st.builds(
  lambda items, sep: sep.join(items), st.lists(spec_items(), max_size=4), SEPARATORS
)
JSON_VALUES = st.recursive(
  st.none() | st.booleans() | st.floats() | st.integers(-(10**30), 10**30) | st.text(max_size=6),
  lambda inner: (
    st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
  ),
  max_leaves=10,
)
JSON_ENTRIES = st.fixed_dictionaries(
  {'kind': KIND_NAMES},
  optional={'low': JSON_VALUES, 'high': JSON_VALUES, 'values': JSON_VALUES, 'value': JSON_VALUES},
) | st.fixed_dictionaries(
  {},
  optional={'kind': JSON_VALUES, 'low': JSON_VALUES, 'high': JSON_VALUES, 'extra': JSON_VALUES},
)
JSON_SPACES = st.dictionaries(NAMES, JSON_ENTRIES | JSON_VALUES, max_size=3)


def _space_or_error(parse, value) -> None:
  try:
    space = parse(value)
  except SpaceError as e:
    _one_line(e)
  else:
    assert isinstance(space, Space)


@FUZZ
@given(st.text(max_size=80) | SPECS)
def test_space_spec_is_a_space_or_a_space_error(text):
  _space_or_error(parse_spec, text)
  _space_or_error(load_space, text)


@FUZZ
@given(JSON_VALUES | JSON_SPACES)
def test_json_space_is_a_space_or_a_space_error(value):
  _space_or_error(space_from_json, value)


@pytest.fixture(scope='module')
def fuzz_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('fuzz')


@FILES
@given(value=JSON_VALUES | JSON_SPACES, text=st.text(max_size=40), raw=st.booleans())
def test_json_space_file_is_a_space_or_a_space_error(fuzz_dir, value, text, raw):
  """JSON as written to disk: NaN and Infinity literals, duplicate keys, or no JSON at all."""
  path = fuzz_dir / 'space.json'
  path.write_text(text if raw else json.dumps(value), encoding='utf-8')
  try:
    space = load_space(str(path))
  except SpaceError as e:
    _one_line(e)
  else:
    assert isinstance(space, Space)


# ---------------------------------------------------------------------------------------------
# Data files.

DTYPES = [
  np.bool_,
  np.int8,
  np.uint8,
  np.int32,
  np.int64,
  np.uint64,
  np.float16,
  np.float32,
  np.float64,
  np.longdouble,
  np.complex64,
  np.complex128,
  'U3',
  'S3',
  'M8[s]',
  'm8[s]',
]
KEYS = ['x', 'y', 'x_test', 'y_test', 'X', 'labels', 'extra']


@st.composite
def any_arrays(draw, dtypes=DTYPES, max_side=6):
  """Arrays of any rank up to 3 (or 0-d), size 0 included, NaN and extremes included."""
  shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
  dtype = draw(st.sampled_from([*dtypes, object]))
  if dtype is object:  # pickled by np.savez; loading it needs allow_pickle
    values = draw(st.lists(st.none() | st.integers() | st.text(max_size=3), min_size=1))
    array = np.empty(shape, object)
    array.flat = values
    return array
  return draw(hnp.arrays(dtype, shape))


@st.composite
def near_valid(draw):
  """A data set that would load, then one thing done wrong (or none)."""
  n, width, classes = draw(st.integers(6, 30)), draw(st.integers(1, 4)), draw(st.integers(2, 5))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  arrays = {
    # Non-negative and small, so that a cast to any numeric dtype keeps the values.
    'x': rng.uniform(0, 100, size=(n, width)).astype(draw(st.sampled_from(DTYPES[:10]))),
    'y': np.arange(n) % classes,
  }
  if draw(st.booleans()):
    m = draw(st.integers(1, 8))
    arrays['x_test'] = rng.normal(size=(m, width))
    arrays['y_test'] = rng.integers(0, classes, size=m)
  fault = draw(
    st.sampled_from(
      ['none'] * 6
      + ['nan', 'inf', 'huge', 'stray_label', 'negative', 'fractional', 'width', 'length']
      + ['drop', 'rank', 'labels_2d', 'empty', 'replace']
    )
  )
  key = draw(st.sampled_from(sorted(arrays)))
  a = arrays[key]
  if fault in ('nan', 'inf', 'huge') and a.size and a.dtype.kind == 'f':
    with np.errstate(over='ignore'):  # 1e300 is inf in float16 and float32: fine too
      a.flat[draw(st.integers(0, a.size - 1))] = {'nan': np.nan, 'inf': np.inf, 'huge': 1e300}[
        fault
      ]
  elif fault == 'stray_label' and key.startswith('y') and a.size:
    a[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from([2**40, 2**62, n, n + 1]))
  elif fault == 'negative' and key.startswith('y') and a.size:
    a[0] = -1
  elif fault == 'fractional' and key.startswith('y'):
    arrays[key] = a + 0.5
  elif fault == 'width':
    arrays[key] = np.ones((len(a), width + 1))
  elif fault == 'length':
    arrays[key] = a[:-1]
  elif fault == 'empty':
    arrays[key] = a[:0]
  elif fault == 'drop':
    del arrays[key]
  elif fault == 'rank':
    arrays[key] = a.reshape(1, *a.shape, 1)
  elif fault == 'labels_2d':
    arrays[key] = np.stack([a, a], axis=-1)
  elif fault == 'replace':
    arrays[key] = draw(any_arrays())
  return arrays


def _check_splits(s: data.Splits) -> None:
  """What every caller of a loader relies on."""
  xs, ys = (s.x_train, s.x_dev, s.x_test), (s.y_train, s.y_dev, s.y_test)
  assert all(x.dtype == np.float32 and x.ndim == 2 and np.isfinite(x).all() for x in xs)
  assert len({x.shape[1] for x in xs}) == 1 and s.num_features >= 1
  assert all(y.dtype == np.int32 and y.shape == (len(x),) for x, y in zip(xs, ys, strict=True))
  assert min(len(x) for x in xs) >= 1
  assert 2 <= s.num_classes <= sum(len(y) for y in ys)
  assert all(y.min() >= 0 and y.max() < s.num_classes for y in ys)


def _splits_or_error(path) -> None:
  try:
    splits = data.load(str(path))
  except DataError as e:
    _one_line(e)
  else:
    _check_splits(splits)


@FILES
@given(arrays=st.dictionaries(st.sampled_from(KEYS), any_arrays(), max_size=5) | near_valid())
def test_npz_loads_or_raises_data_error(fuzz_dir, arrays):
  path = fuzz_dir / 'fuzz.npz'
  np.savez(path, **arrays)
  _splits_or_error(path)


H5_KEYS = ('train_set_x', 'train_set_y', 'test_set_x', 'test_set_y', 'list_classes')
# h5py writes neither unicode nor datetime arrays; strings go in as bytes or variable length.
H5_DTYPES = [d for d in DTYPES if d not in ('U3', 'M8[s]', 'm8[s]', np.longdouble)]


@st.composite
def h5_entries(draw):
  """The SIGNS layout, each entry kept, dropped, or replaced by something else HDF5 can hold."""
  n, m, classes = draw(st.integers(4, 12)), draw(st.integers(1, 6)), draw(st.integers(2, 4))
  rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
  entries = {
    'train_set_x': rng.integers(0, 255, size=(n, 2, 2, 3)).astype(np.uint8),
    'train_set_y': (np.arange(n) % classes).reshape(1, n),
    'test_set_x': rng.integers(0, 255, size=(m, 2, 2, 3)).astype(np.uint8),
    'test_set_y': rng.integers(0, classes, size=(1, m)),
    'list_classes': np.arange(classes),
  }
  for key in draw(st.lists(st.sampled_from(H5_KEYS), max_size=2, unique=True)):
    change = draw(st.sampled_from(['drop', 'array', 'group', 'link', 'empty', 'strings']))
    if change == 'drop':
      del entries[key]
    elif change == 'array':
      entries[key] = draw(any_arrays(H5_DTYPES).filter(lambda a: a.dtype != object))
    elif change == 'strings':
      # HDF5 ends a string at NUL, and stores UTF-8, which has no lone surrogates.
      word = st.text(
        st.characters(exclude_characters='\x00', exclude_categories=('Cs',)), max_size=4
      )
      words = draw(st.lists(word, min_size=1, max_size=5))
      entries[key] = np.array(words, dtype=h5py.string_dtype())
    else:
      entries[key] = change
  extra = draw(st.none() | any_arrays(H5_DTYPES).filter(lambda a: a.dtype != object))
  if extra is not None:
    entries['extra'] = extra
  return entries


@FILES
@given(entries=h5_entries())
def test_h5_loads_or_raises_data_error(fuzz_dir, entries):
  path = fuzz_dir / 'fuzz.h5'
  with h5py.File(path, 'w') as f:
    for key, value in entries.items():
      if isinstance(value, np.ndarray):
        f.create_dataset(key, data=value)
      elif value == 'group':
        f.create_group(key).create_dataset('inner', data=np.zeros(3))
      elif value == 'link':
        f[key] = h5py.SoftLink('/nowhere')
      elif value == 'empty':
        f.create_dataset(key, data=h5py.Empty('f8'))
  _splits_or_error(path)


@FILES
@given(content=st.binary(max_size=300), suffix=st.sampled_from(['.npz', '.h5', '.hdf5']))
def test_garbage_bytes_raise_data_error(fuzz_dir, content, suffix):
  path = fuzz_dir / f'garbage{suffix}'
  path.write_bytes(content)
  _splits_or_error(path)


# ---------------------------------------------------------------------------------------------
# Inputs the fuzzers found crashing bnjax.space (now fixed): each must give a one-line SpaceError.


def _long_json_name(tmp_path):
  return str(tmp_path / ('a' * 300 + '.json'))


def _file(content: bytes):
  def make(tmp_path):
    path = tmp_path / 'space.json'
    path.write_bytes(content)
    return str(path)

  return make


SPACE_CRASHES = {
  'spec_line_break_in_name': (lambda tmp_path: '0\n0=uniform', parse_spec),
  'spec_5000_digit_bound': (lambda tmp_path: 'hidden_units=int:1:' + '9' * 5000, parse_spec),
  'spec_5000_digit_fixed': (lambda tmp_path: 'hidden_units=fixed:' + '9' * 5000, load_space),
  'json_dict_kind': (lambda tmp_path: {'learning_rate': {'kind': {}}}, space_from_json),
  'json_list_kind': (lambda tmp_path: {'l2': {'kind': [[{}]]}}, space_from_json),
  'json_file_name_too_long': (_long_json_name, load_space),
  'json_file_not_utf8': (_file(b'\xff\xfe{'), load_space),
  'json_file_nested_too_deep': (_file(b'[' * 100_000), load_space),
}


@pytest.mark.parametrize('case', list(SPACE_CRASHES))
def test_former_space_crashes_are_space_errors(tmp_path, case):
  make, parse = SPACE_CRASHES[case]
  with pytest.raises(SpaceError) as info:
    parse(make(tmp_path))
  _one_line(info.value)

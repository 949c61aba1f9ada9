"""Tests for bnjax.data: loaders, splitting, normalization and input validation."""

import sys
from collections import Counter

import h5py
import numpy as np
import pytest

from bnjax import data
from bnjax.data import DataError, _builtin, _splits


@pytest.fixture(scope='module')
def mnist():
  # Generating MNIST-1D takes seconds; one call serves every test in this module.
  return data.mnist1d()


def _rows(x):
  """Rows as a multiset, to check that a split loses and duplicates nothing."""
  return Counter(map(bytes, np.ascontiguousarray(x)))


def _write_npz(path, **arrays):
  np.savez(path, **arrays)
  return path


def _write_signs(path, x, y, x_test, y_test, num_classes, y_shape_row=True):
  with h5py.File(path, 'w') as f:
    f['train_set_x'] = x
    f['train_set_y'] = y.reshape(1, -1) if y_shape_row else y
    f['test_set_x'] = x_test
    f['test_set_y'] = y_test.reshape(1, -1) if y_shape_row else y_test
    f['list_classes'] = np.arange(num_classes)
  return path


def _toy(n=50, features=5, num_classes=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(3.0, 2.0, size=(n, features))
  y = np.arange(n) % num_classes
  return x, y


def _check_splits(s, n_pool, n_test, features, num_classes):
  assert s.x_train.dtype == np.float32 and s.y_train.dtype == np.int32
  assert s.x_dev.dtype == np.float32 and s.y_test.dtype == np.int32
  assert len(s.x_train) + len(s.x_dev) == n_pool
  assert len(s.x_test) == n_test
  assert s.num_features == features
  assert s.x_train.shape[1] == s.x_dev.shape[1] == s.x_test.shape[1] == features
  assert s.num_classes == num_classes
  for y in (s.y_train, s.y_dev, s.y_test):
    assert y.min() >= 0 and y.max() < num_classes


def test_digits_shapes_and_classes():
  s = data.digits()
  _check_splits(s, 1797 - 360, 360, 64, 10)
  assert len(s.x_dev) == round(0.1 * (1797 - 360))
  assert s.name == 'digits' and s.input_shape == (8, 8, 1)  # images for the 2-D CNN
  # Stratified test split: every class is represented about equally (≈36 each).
  assert np.bincount(s.y_test, minlength=10).min() >= 34
  assert np.isfinite(s.x_train).all() and np.isfinite(s.x_test).all()


def test_mnist1d_shapes_and_classes(mnist):
  _check_splits(mnist, 4000, 1000, 40, 10)
  assert len(mnist.x_dev) == 400 and mnist.name == 'mnist1d'
  assert mnist.input_shape == (40, 1)  # sequences of one channel, for the 1-D CNN
  assert set(np.unique(mnist.y_train)) == set(range(10))


def test_mnist1d_is_cached_and_seed_moves_only_dev(mnist):
  hits = _builtin._mnist1d_raw.cache_info().hits
  other = data.mnist1d(seed=1)
  assert _builtin._mnist1d_raw.cache_info().hits == hits + 1  # no second generation
  np.testing.assert_array_equal(other.y_test, mnist.y_test)
  assert not np.array_equal(other.y_dev, mnist.y_dev)
  # The raw train+dev pool is the same, so its label counts agree.
  pool = lambda s: Counter(np.concatenate([s.y_train, s.y_dev]).tolist())
  assert pool(other) == pool(mnist)


def test_mnist1d_generation_leaves_global_rng_alone():
  np.random.seed(123)  # noqa: NPY002
  expected = np.random.random(3)  # noqa: NPY002
  np.random.seed(123)  # noqa: NPY002
  small = data.mnist1d(num_samples=100)  # a size not cached yet, so it is generated
  np.testing.assert_array_equal(np.random.random(3), expected)  # noqa: NPY002
  _check_splits(small, 80, 20, 40, 10)


def test_normalize_uses_training_statistics_only():
  rng = np.random.default_rng(1)
  x_train = rng.normal([1.0, -5.0, 100.0], [0.5, 3.0, 20.0], size=(200, 3))
  x_dev = rng.normal(7.0, 1.0, size=(30, 3))  # deliberately a different distribution
  n_train, n_dev = data.normalize(x_train, x_dev)
  mu, sigma = x_train.mean(0), x_train.std(0)
  np.testing.assert_allclose(n_train.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(n_train.std(0), 1, atol=1e-5)
  np.testing.assert_allclose(n_dev, (x_dev - mu) / sigma, rtol=1e-5, atol=1e-5)
  # Its own statistics would give mean 0; the train statistics must not.
  assert np.abs(n_dev.mean(0)).min() > 0.5
  assert n_train.dtype == n_dev.dtype == np.float32


def test_loader_normalizes_dev_and_test_with_train_statistics(tmp_path):
  x, y = _toy(100, seed=2)
  x_test = x[:20] * 3.0 + 10.0
  path = _write_npz(tmp_path / 'toy.npz', x=x, y=y, x_test=x_test, y_test=y[:20])
  s = data.from_npz(path, seed=4)
  raw_train, _, raw_dev, _ = data.split_dev(x, y, 0.1, seed=4)
  mu, sigma = raw_train.mean(0), raw_train.std(0)
  np.testing.assert_allclose(s.x_train, (raw_train - mu) / sigma, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s.x_dev, (raw_dev - mu) / sigma, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(s.x_test, (x_test - mu) / sigma, rtol=1e-5, atol=1e-5)


def test_constant_features_do_not_produce_nan():
  x_train = np.array([[1.0, 7.0], [3.0, 7.0], [5.0, 7.0]])
  x_test = np.array([[3.0, 7.0], [3.0, 9.0]])
  n_train, n_test = data.normalize(x_train, x_test)
  assert np.isfinite(n_train).all() and np.isfinite(n_test).all()
  np.testing.assert_allclose(n_train[:, 1], 0.0, atol=1e-6)
  np.testing.assert_allclose(n_test[:, 1], [0.0, 2.0], atol=1e-6)  # (9 - 7) / 1
  # digits has pixels that are always 0 on train.
  s = data.digits()
  assert np.isfinite(s.x_train).all() and np.isfinite(s.x_dev).all()


def test_huge_features_standardize_like_ordinary_ones():
  """Squares of 1e306 overflow float64: a plain std is inf and turns every feature into 0."""
  x_train = np.random.default_rng(5).normal(3.0, 2.0, size=(50, 3))
  x_dev = x_train[:7] * 2.0
  ordinary = data.normalize(x_train, x_dev)
  huge = data.normalize(x_train * 1e306, x_dev * 1e306)
  # Scaling by 1e306 (not a power of two) rounds each value in float64 (1e-16 relative); the
  # float32 results agree to their own rounding.
  for a, b in zip(ordinary, huge, strict=True):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(huge[0].std(axis=0), 1.0, rtol=1e-5)


def test_split_dev_is_deterministic_disjoint_and_complete():
  x, y = _toy(101)
  a = data.split_dev(x, y, 0.2, seed=7)
  b = data.split_dev(x, y, 0.2, seed=7)
  c = data.split_dev(x, y, 0.2, seed=8)
  for u, v in zip(a, b, strict=True):
    np.testing.assert_array_equal(u, v)
  assert not np.array_equal(a[2], c[2])
  x_train, y_train, x_dev, y_dev = a
  assert len(x_dev) == round(0.2 * 101) and len(x_train) == 101 - 20
  assert not set(_rows(x_train)) & set(_rows(x_dev))
  assert _rows(np.concatenate([x_train, x_dev])) == _rows(x)
  # Labels stay attached to their rows.
  label_of = {bytes(r): label for r, label in zip(x, y, strict=True)}
  assert all(label_of[bytes(r)] == label for r, label in zip(x_dev, y_dev, strict=True))


def test_split_dev_takes_at_least_one_row():
  x, y = _toy(5)
  assert len(data.split_dev(x, y, 0.01, seed=0)[2]) == 1


def test_npz_round_trip_with_test_split_and_images(tmp_path):
  rng = np.random.default_rng(3)
  x = rng.integers(0, 255, size=(40, 4, 4, 3)).astype(np.uint8)
  y = np.arange(40) % 4
  x_test = rng.integers(0, 255, size=(10, 4, 4, 3)).astype(np.uint8)
  y_test = np.full(10, 5)  # the largest label over all splits sets num_classes
  path = _write_npz(tmp_path / 'img.npz', x=x, y=y, x_test=x_test, y_test=y_test)
  s = data.load(str(path), dev_fraction=0.25, seed=1)
  _check_splits(s, 40, 10, 48, 6)
  assert s.name == 'img.npz' and len(s.x_dev) == 10
  np.testing.assert_array_equal(s.y_test, y_test)
  raw_train = data.split_dev(x.reshape(40, -1), y, 0.25, seed=1)[0].astype(np.float64)
  expected = (x_test.reshape(10, -1) - raw_train.mean(0)) / raw_train.std(0)
  np.testing.assert_allclose(s.x_test, expected, rtol=1e-5, atol=1e-5)


def test_npz_without_test_split_carves_one(tmp_path):
  x, y = _toy(100, num_classes=3)
  path = _write_npz(tmp_path / 'plain.npz', x=x.astype(np.float32), y=y.astype(np.float64))
  s = data.from_npz(path, test_fraction=0.3, seed=0)
  _check_splits(s, 70, 30, 5, 3)
  # The test rows do not depend on seed (dev does). Their normalized values do, through the
  # train statistics, so compare them after undoing that per-feature affine map.
  t = data.from_npz(path, test_fraction=0.3, seed=5)
  z = lambda a: (a - a.mean(0)) / a.std(0)
  np.testing.assert_allclose(z(s.x_test), z(t.x_test), rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(s.y_test, t.y_test)
  assert not np.array_equal(s.y_dev, t.y_dev) or not np.array_equal(s.x_dev, t.x_dev)


@pytest.mark.parametrize('row_labels', [True, False])
def test_h5_signs_round_trip(tmp_path, row_labels):
  rng = np.random.default_rng(4)
  x = rng.integers(0, 255, size=(30, 8, 8, 3)).astype(np.uint8)
  y = np.arange(30) % 4
  x_test = rng.integers(0, 255, size=(12, 8, 8, 3)).astype(np.uint8)
  y_test = np.arange(12) % 4
  path = _write_signs(tmp_path / 'signs.h5', x, y, x_test, y_test, 6, row_labels)
  s = data.load(str(path), dev_fraction=0.2)
  _check_splits(s, 30, 12, 8 * 8 * 3, 6)  # num_classes = len(list_classes), not max+1
  assert s.name == 'signs.h5' and s.input_shape == (8, 8, 3)  # NHWC for the 2-D CNN
  # Standardized per channel with the training statistics: rows are (row, column, channel).
  pixels = s.x_train.reshape(-1, 8, 8, 3).astype(np.float64)
  np.testing.assert_allclose(pixels.mean(axis=(0, 1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(pixels.std(axis=(0, 1, 2)), 1, rtol=1e-5)
  assert np.ptp(pixels.std(axis=0)) > 0.01  # per channel, not per pixel: pixels' spreads differ
  np.testing.assert_array_equal(s.y_test, y_test)
  assert Counter(np.concatenate([s.y_train, s.y_dev])) == Counter(y)


def test_load_dispatches_by_name(mnist):
  assert data.load('digits').name == 'digits'
  assert data.load('mnist1d').x_test.shape == mnist.x_test.shape


def test_missing_h5py_names_the_install(tmp_path, monkeypatch):
  x, y = _toy(20)
  path = _write_signs(tmp_path / 's.h5', x, y, x, y, 3)
  monkeypatch.setitem(sys.modules, 'h5py', None)  # makes `import h5py` fail
  with pytest.raises(DataError, match=r"pip install 'bnjax\[h5\]'"):
    data.from_h5(path)


def _npz_case(kw=None, **arrays):
  def make(tmp_path):
    path = _write_npz(tmp_path / 'bad.npz', **arrays)
    return lambda: data.from_npz(path, **(kw or {}))

  return make


def _file_case(name, content, loader):
  def make(tmp_path):
    path = tmp_path / name
    path.write_bytes(content)
    return lambda: loader(path)

  return make


def _h5_case(num_classes=3, drop=None):
  def make(tmp_path):
    x, y = _toy(20, num_classes=4)
    path = _write_signs(tmp_path / 'bad.h5', x, y, x, y, num_classes)
    if drop:
      with h5py.File(path, 'a') as f:
        del f[drop]
    return lambda: data.from_h5(path)

  return make


def _npy_as_npz(tmp_path):
  with open(tmp_path / 'bad.npz', 'wb') as f:
    np.save(f, np.zeros(3))
  return lambda: data.from_npz(tmp_path / 'bad.npz')


def _call(fn, *args, **kwargs):
  return lambda tmp_path: lambda: fn(*args, **kwargs)


def _h5_edit(edit):
  """A valid SIGNS file of 40 examples and 3 classes, then `edit(f)` on it."""

  def make(tmp_path):
    x, y = _toy(20, num_classes=3)
    path = _write_signs(tmp_path / 'bad.h5', x, y, x, y, 3)
    with h5py.File(path, 'a') as f:
      edit(f)
    return lambda: data.from_h5(path)

  return make


def _replace(key, make_new):
  def edit(f):
    del f[key]
    make_new(f, key)

  return edit


def _stray(y, row, label):
  y = y.copy()
  y[row] = label
  return y


_X, _Y = _toy(20)
_NAN = _X.copy()
_NAN[3, 1] = np.nan
_INF = _X.copy()
_INF[[0, 5], 2] = np.inf

BAD_INPUTS = {
  'nan': (_npz_case(x=_NAN, y=_Y), r'1 non-finite values \(1 NaN, 0 inf\)'),
  'inf_in_test': (
    _npz_case(x=_X, y=_Y, x_test=_INF, y_test=_Y),
    r'bad.npz test: x has 2 non-finite values \(0 NaN, 2 inf\)',
  ),
  'label_out_of_range': (_h5_case(num_classes=3), r'label 3 is outside the range \[0, 3\)'),
  'label_out_of_range_validate': (_call(data.validate, _X, _Y + 5, 4), r'label 7 is outside'),
  'negative_label': (_npz_case(x=_X, y=_Y - 1), 'negative label -1'),
  'float_labels': (_npz_case(x=_X, y=_Y + 0.5), r'labels are not integers \(y\[0\] = 0.5\)'),
  'string_labels': (_npz_case(x=_X, y=_Y.astype(str)), 'labels must be integer'),
  'length_mismatch': (_npz_case(x=_X, y=_Y[:-2]), 'x has 20 rows but y has 18'),
  'missing_key': (_npz_case(x=_X, labels=_Y), r'missing array\(s\) y \(it has: x, labels\)'),
  'half_test': (_npz_case(x=_X, y=_Y, x_test=_X), 'both or neither'),
  'one_class': (_npz_case(x=_X, y=np.zeros(20, int)), 'at least 2'),
  'empty_test': (_npz_case(x=_X, y=_Y, x_test=_X[:0], y_test=_Y[:0]), 'split is empty'),
  'too_small': (_npz_case(x=_X[:1], y=_Y[:1], x_test=_X, y_test=_Y), 'too few to carve'),
  'garbage_npz': (_file_case('bad.npz', b'not a zip at all', data.from_npz), 'not a valid .npz'),
  'npy_as_npz': (_npy_as_npz, 'single .npy array'),
  'garbage_h5': (_file_case('bad.h5', b'garbage' * 100, data.from_h5), 'not a valid HDF5'),
  'h5_missing_dataset': (_h5_case(drop='list_classes'), r'missing dataset\(s\) list_classes'),
  'missing_file': (_call(data.from_npz, '/no/such/file.npz'), 'file not found'),
  'unknown_dataset': (_call(data.load, 'cifar10'), "unknown dataset 'cifar10'.*mnist1d, digits"),
  'unsupported_suffix': (_file_case('d.csv', b'1,2', data.load), 'unsupported file type'),
  'dev_fraction_zero': (_call(data.digits, dev_fraction=0.0), 'dev_fraction=0.0'),
  'dev_fraction_one': (_call(data.load, 'digits', dev_fraction=1.0), 'dev_fraction=1.0'),
  'dev_fraction_negative': (_call(data.split_dev, _X, _Y, -0.1, 0), 'dev_fraction=-0.1'),
  'test_fraction': (_call(data.digits, test_fraction=1.5), 'test_fraction=1.5'),
  'unstratifiable': (_call(data.digits, test_fraction=0.001), 'cannot be stratified'),
  'npz_test_fraction': (_npz_case(x=_X, y=_Y, kw={'test_fraction': 0}), 'test_fraction=0'),
  'x_rank': (_call(data.validate, _X[0], _Y), r'must be \[n, features\]'),
  'x_test_width': (
    _npz_case(x=_X, y=_Y, x_test=np.ones((6, 7)), y_test=_Y[:6]),
    r'x_test has 7 features per row \(shape \(6, 7\)\) but x has 5 \(shape \(20, 5\)\)',
  ),
  'dev_width': (
    _call(_splits.finish, 'toy', _X, _Y, _X, _Y, dev_fraction=0.1, seed=0, dev=(_X[:, :4], _Y)),
    r'toy: the dev split has 4 features per row \(shape \(20, 4\)\) but x has 5 \(shape',
  ),
  'h5_test_width': (
    _h5_edit(_replace('test_set_x', lambda f, k: f.create_dataset(k, data=np.ones((20, 2, 2))))),
    r'test_set_x has 4 features per row .* but train_set_x has 5',
  ),
  'h5_group_for_dataset': (
    _h5_edit(_replace('train_set_y', lambda f, k: f.create_group(k))),
    'train_set_y is an HDF5 group, where a dataset should be',
  ),
  'h5_group_for_classes': (
    _h5_edit(_replace('list_classes', lambda f, k: f.create_group(k))),
    'list_classes is an HDF5 group',
  ),
  'h5_dangling_link': (
    _h5_edit(_replace('test_set_y', lambda f, k: f.__setitem__(k, h5py.SoftLink('/nowhere')))),
    'cannot open test_set_y',
  ),
  'h5_string_labels': (
    _h5_edit(_replace('train_set_y', lambda f, k: f.create_dataset(k, data=[b'a'] * 20))),
    'labels must be integer class ids',
  ),
  'h5_string_features': (
    _h5_edit(_replace('train_set_x', lambda f, k: f.create_dataset(k, data=['a'] * 20))),
    'features must be real numbers',
  ),
  'h5_huge_class_list': (  # declared, never written: a small file that claims a million classes
    _h5_edit(_replace('list_classes', lambda f, k: f.create_dataset(k, (10**6,), 'i1'))),
    'the class list names 1000000 classes, more than the 40 examples',
  ),
  'h5_more_than_memory': (  # 8 TB declared in a file of a few KB
    _h5_edit(
      _replace('train_set_x', lambda f, k: f.create_dataset(k, (10**12,), 'f8', chunks=(1000,)))
    ),
    r'its datasets take .* GiB, more than the .* GiB of memory here',
  ),
  'stray_label': (
    _npz_case(x=_X, y=_stray(_Y, 3, 2**40)),
    r'label 1099511627776 \(row 3 of y\) would mean 1099511627777 classes, more than the '
    '20 examples',
  ),
  'stray_test_label': (
    _npz_case(x=_X, y=_Y, x_test=_X[:6], y_test=_stray(_Y[:6], 2, 500)),
    r'label 500 \(row 2 of y_test\) would mean 501 classes, more than the 26 examples',
  ),
  'stray_float_label': (
    _npz_case(x=_X, y=_stray(_Y.astype(float), 7, 1e15)),
    r'label 1000000000000000 \(row 7 of y\)',
  ),
  'stray_label_validate_alone': (_call(data.validate, _X, _stray(_Y, 0, 2**40), 4), 'outside'),
  'no_features': (_npz_case(x=np.ones((20, 0)), y=_Y), r'shape \(20, 0\), no features'),
  'empty_x': (_npz_case(x=np.ones((0, 5)), y=_Y[:0]), 'split is empty'),
  'complex_features': (_npz_case(x=_X + 1j, y=_Y), 'complex128; features must be real'),
  'object_features': (
    _npz_case(x=np.array([{}] * 20, dtype=object), y=_Y),
    r"cannot read array 'x' \(ValueError: Object arrays cannot be loaded",
  ),
  'test_far_outside_training_range': (
    _npz_case(x=np.zeros((20, 2)), y=_Y, x_test=np.full((4, 2), 1e300), y_test=_Y[:4]),
    'bad.npz test: features overflow float32',
  ),
  'seed_beyond_64_bits': (_call(data.load, 'digits', seed=2**64), 'seed=18446744073709551616'),
  'seed_huge': (_call(data.digits, seed=2**1000), r'seed=<a 1001-bit integer> is out of range'),
  'seed_negative': (_npz_case(x=_X, y=_Y, kw={'seed': -1}), r'seed=-1 .*\[0, 2\*\*64\)'),
  'seed_float': (_call(data.mnist1d, seed=1.5), 'seed=1.5 is out of range'),
  'seed_bool': (_call(data.split_dev, _X, _Y, 0.1, True), 'seed=True'),
  'seed_h5': (_call(data.from_h5, '/no/such.h5', seed=-3), 'seed=-3'),  # before the file
  'num_samples_float': (_call(data.mnist1d, num_samples=100.5), 'must be an integer'),
  'path_not_a_path': (_call(data.from_npz, 5), 'must be a str or os.PathLike; got int'),
  'dataset_not_a_name': (_call(data.load, None), 'unknown dataset None'),
  'dataset_an_array': (
    _call(data.load, np.zeros((50, 50))),
    r'unknown dataset array\(\[\[0\..*\.\.\.:',
  ),
  'dataset_with_nul': (_call(data.load, 'a\0b.npz'), 'unknown dataset'),
  'dev_fraction_nan': (_call(data.load, 'digits', dev_fraction=float('nan')), 'dev_fraction=nan'),
}


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_raises_one_clear_line(tmp_path, case):
  make, pattern = BAD_INPUTS[case]
  with pytest.raises(DataError, match=pattern) as info:
    make(tmp_path)()
  assert '\n' not in str(info.value)
  assert isinstance(info.value, ValueError)


def test_class_count_may_equal_the_examples_and_extra_arrays_are_not_read(tmp_path):
  x, y = _toy(20)
  y = np.arange(20)  # 20 classes, one example each: unusual, not absurd
  # An extra array that cannot be read without pickle is ignored: only x, y, x_test, y_test are.
  path = _write_npz(tmp_path / 'many.npz', x=x, y=y, notes=np.array([{}], dtype=object))
  assert data.from_npz(path, test_fraction=0.2).num_classes == 20
  with pytest.raises(DataError, match=r'label 20 \(row 19 of y\) would mean 21 classes'):
    data.from_npz(_write_npz(tmp_path / 'one_more.npz', x=x, y=y + 1))


def test_largest_seed_is_accepted():
  x, y = _toy(20)
  train, _, dev, _ = data.split_dev(x, y, 0.25, seed=2**64 - 1)
  assert len(train) == 15 and len(dev) == 5
  assert data.split_dev(x, y, 0.25, seed=np.uint64(2**64 - 1))[2].shape == (5, 5)

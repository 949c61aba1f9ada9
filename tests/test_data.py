"""Tests for bnjax.data: loaders, splitting, normalization and input validation."""

import sys
from collections import Counter

import h5py
import numpy as np
import pytest

from bnjax import data
from bnjax.data import DataError


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
  assert s.name == 'digits'
  # Stratified test split: every class is represented about equally (≈36 each).
  assert np.bincount(s.y_test, minlength=10).min() >= 34
  assert np.isfinite(s.x_train).all() and np.isfinite(s.x_test).all()


def test_mnist1d_shapes_and_classes(mnist):
  _check_splits(mnist, 4000, 1000, 40, 10)
  assert len(mnist.x_dev) == 400 and mnist.name == 'mnist1d'
  assert set(np.unique(mnist.y_train)) == set(range(10))


def test_mnist1d_is_cached_and_seed_moves_only_dev(mnist):
  hits = data._mnist1d_raw.cache_info().hits
  other = data.mnist1d(seed=1)
  assert data._mnist1d_raw.cache_info().hits == hits + 1  # no second generation
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
  assert s.name == 'signs.h5'
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
}


@pytest.mark.parametrize('case', BAD_INPUTS)
def test_bad_input_raises_one_clear_line(tmp_path, case):
  make, pattern = BAD_INPUTS[case]
  with pytest.raises(DataError, match=pattern) as info:
    make(tmp_path)()
  assert '\n' not in str(info.value)
  assert isinstance(info.value, ValueError)

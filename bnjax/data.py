"""Data sets as normalized train/dev/test splits of host numpy arrays.

Every loader returns a `Splits` whose features are float32 `[n, features]`, standardized with
the mean and std of the *training* split only, and whose labels are int32 class ids. Bad input
raises `DataError` with one line naming the problem and the fix, before anything is computed.

The test split never depends on `seed`: it is either given by the data set or carved with a
fixed seed, so runs that vary `seed` (which only moves the train/dev boundary) are scored on the
same test rows.
"""

import functools
import numbers
import random
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

_NAMES = ('mnist1d', 'digits')
_H5_KEYS = ('train_set_x', 'train_set_y', 'test_set_x', 'test_set_y', 'list_classes')


class DataError(ValueError):
  """Input data that cannot be used; the message names the problem and the fix."""


class Splits(NamedTuple):
  """Normalized train/dev/test splits.

  Attributes:
      x_train: `[n_train, features]` float32, standardized with its own mean and std.
      y_train: `[n_train]` int32 class ids in `[0, num_classes)`.
      x_dev: `[n_dev, features]` float32, standardized with the training statistics.
      y_dev: `[n_dev]` int32.
      x_test: `[n_test, features]` float32, standardized with the training statistics.
      y_test: `[n_test]` int32.
      num_classes: number of classes.
      name: 'mnist1d', 'digits', or the file name the data came from.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_dev: np.ndarray
  y_dev: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str

  @property
  def num_features(self) -> int:
    """Width of the feature vectors."""
    return int(self.x_train.shape[1])


def load(dataset: str, *, dev_fraction: float = 0.1, seed: int = 0) -> Splits:
  """Loads a data set by name ('mnist1d', 'digits') or from a .npz / .h5 / .hdf5 path."""
  if dataset == 'mnist1d':
    return mnist1d(dev_fraction=dev_fraction, seed=seed)
  if dataset == 'digits':
    return digits(dev_fraction=dev_fraction, seed=seed)
  path = Path(dataset)
  if not path.is_file():
    raise DataError(
      f'unknown dataset {dataset!r}: it is neither one of {", ".join(_NAMES)} nor an '
      'existing file; pass one of those names or a path to a .npz/.h5 file'
    )
  suffix = path.suffix.lower()
  if suffix == '.npz':
    return from_npz(path, dev_fraction=dev_fraction, seed=seed)
  if suffix in ('.h5', '.hdf5'):
    return from_h5(path, dev_fraction=dev_fraction, seed=seed)
  raise DataError(f'{path}: unsupported file type {suffix!r}; use a .npz, .h5 or .hdf5 file')


def mnist1d(*, dev_fraction: float = 0.1, seed: int = 0, num_samples: int = 5000) -> Splits:
  """MNIST-1D, generated locally (never downloaded): 40 features, 10 classes.

  With the default `num_samples=5000` this is the standard data set: 4000 train+dev rows and
  1000 test rows.
  """
  if num_samples < 20:
    raise DataError(f'mnist1d: num_samples={num_samples} is too few; use at least 20')
  x, y, x_test, y_test = _mnist1d_raw(num_samples)
  return _finish('mnist1d', x, y, x_test, y_test, 10, dev_fraction, seed)


@functools.lru_cache(maxsize=4)
def _mnist1d_raw(num_samples: int) -> tuple[np.ndarray, ...]:
  """Generates MNIST-1D once per process (~2.6 s); the arrays are read-only to keep the cache
  intact."""
  from mnist1d.data import get_dataset_args, make_dataset

  args = get_dataset_args()  # its seed=42 default is what makes this the standard data set
  args.num_samples = num_samples
  # make_dataset reseeds the global RNGs; restore them so loading data has no side effects.
  np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
  try:
    d = make_dataset(args)
  finally:
    np.random.set_state(np_state)  # noqa: NPY002
    random.setstate(py_state)
  arrays = tuple(np.asarray(d[k]) for k in ('x', 'y', 'x_test', 'y_test'))
  for a in arrays:
    a.flags.writeable = False
  return arrays


def digits(*, dev_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0) -> Splits:
  """scikit-learn's 8x8 digits (ships with sklearn): 1797 rows, 64 features, 10 classes.

  The test split is stratified by class and carved with a fixed seed.
  """
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  _check_fraction('test_fraction', test_fraction)
  x, y = load_digits(return_X_y=True)
  try:
    x, x_test, y, y_test = train_test_split(
      x, y, test_size=test_fraction, random_state=0, stratify=y
    )
  except ValueError as e:  # too few rows on one side to hold every class
    raise DataError(
      f'digits: test_fraction={test_fraction} cannot be stratified '
      f'({_one_line(e)}); use a value nearer 0.2'
    ) from e
  return _finish('digits', x, y, x_test, y_test, 10, dev_fraction, seed)


def from_npz(
  path: str | Path, *, dev_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
  """Loads `x` `[n, ...]` and int labels `y` `[n]` from a .npz file.

  If the file also holds `x_test`/`y_test` they are the test split; otherwise `test_fraction`
  of the rows is carved off with a fixed seed. Features of rank > 2 are flattened, and
  `num_classes` is the largest label over all splits plus one.
  """
  path = _existing(path)
  try:
    z = np.load(path, allow_pickle=False)
    if isinstance(z, np.lib.npyio.NpzFile):
      with z:
        arrays = {k: z[k] for k in z.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f'{path}: not a valid .npz file ({_one_line(e)}); check the path') from e
  if not isinstance(z, np.lib.npyio.NpzFile):
    raise DataError(
      f'{path}: holds a single .npy array, not an .npz archive; save it with '
      'np.savez(path, x=..., y=...)'
    )
  missing = [k for k in ('x', 'y') if k not in arrays]
  if missing:
    raise DataError(
      f'{path}: missing array(s) {", ".join(missing)} (it has: {", ".join(arrays) or "none"})'
      '; save features as `x` and labels as `y`'
    )
  if ('x_test' in arrays) != ('y_test' in arrays):
    raise DataError(f'{path}: has only one of x_test/y_test; provide both or neither')
  x, y = arrays['x'], _flat_labels(arrays['y'])
  if 'x_test' in arrays:
    x_test, y_test = arrays['x_test'], _flat_labels(arrays['y_test'])
  else:
    _check_fraction('test_fraction', test_fraction)
    # Validate before carving: a length mismatch would otherwise misalign rows and labels.
    validate(_flatten(x, path.name), y, where=path.name)
    x, y, x_test, y_test = _carve(x, y, test_fraction, 0, path.name, 'test')
  return _finish(path.name, x, y, x_test, y_test, None, dev_fraction, seed)


def from_h5(path: str | Path, *, dev_fraction: float = 0.1, seed: int = 0) -> Splits:
  """Loads the SIGNS layout: `train_set_x` `[m, 64, 64, 3]`, `train_set_y` `[m]` or `[1, m]`,
  `test_set_x`, `test_set_y` and `list_classes` `[C]`.

  Images are flattened; no 1/255 scaling is needed because features are standardized anyway.
  """
  path = _existing(path)
  try:
    import h5py
  except ImportError as e:
    raise DataError("reading .h5 files needs h5py: pip install 'bnjax[h5]'") from e
  try:
    with h5py.File(path, 'r') as f:
      missing = [k for k in _H5_KEYS if k not in f]
      if missing:
        raise DataError(
          f'{path}: missing dataset(s) {", ".join(missing)}; the SIGNS layout needs '
          f'{", ".join(_H5_KEYS)}'
        )
      a = {k: np.asarray(f[k][()]) for k in _H5_KEYS}
  except OSError as e:
    raise DataError(f'{path}: not a valid HDF5 file ({_one_line(e)}); check the path') from e
  x, y = a['train_set_x'], _flat_labels(a['train_set_y'])
  x_test, y_test = a['test_set_x'], _flat_labels(a['test_set_y'])
  num_classes = int(a['list_classes'].size)
  return _finish(path.name, x, y, x_test, y_test, num_classes, dev_fraction, seed)


def split_dev(
  x: np.ndarray, y: np.ndarray, dev_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Splits `x` `[n, ...]`, `y` `[n]` into train and dev by a permutation fixed by `seed`.

  Returns:
      `(x_train, y_train, x_dev, y_dev)`; the dev split has `max(1, round(dev_fraction * n))`
      rows and train has the rest.
  """
  _check_fraction('dev_fraction', dev_fraction)
  return _carve(x, y, dev_fraction, seed, 'data', 'dev')


def normalize(x_train: np.ndarray, *others: np.ndarray) -> tuple[np.ndarray, ...]:
  """Standardizes every array with the per-feature mean and std of `x_train`.

  Using the training statistics for dev and test (rather than their own) keeps every split in
  the same coordinates the model was trained in. Features constant on train are divided by 1,
  not 0, so they come out as (near) zero instead of nan/inf.

  Args:
      x_train: `[n_train, features]`.
      *others: `[n_i, features]` each, e.g. dev and test.

  Returns:
      float32 arrays, in the order given: `(x_train, *others)`.
  """
  x_train = np.asarray(x_train, dtype=np.float64)
  mu = x_train.mean(axis=0)
  # Test constancy exactly (range 0) rather than std == 0, which rounding can miss.
  sigma = np.where(np.ptp(x_train, axis=0) == 0, 1.0, x_train.std(axis=0))
  return tuple(
    ((np.asarray(x, dtype=np.float64) - mu) / sigma).astype(np.float32) for x in (x_train, *others)
  )


def validate(
  x: np.ndarray, y: np.ndarray, num_classes: int | None = None, *, where: str = 'data'
) -> int:
  """Checks one split: `x` `[n, features]` finite numbers, `y` `[n]` integer class ids.

  Args:
      x: `[n, features]` features.
      y: `[n]` labels; floats are accepted if they hold whole numbers.
      num_classes: if given, labels must lie in `[0, num_classes)` and it must be >= 2.
      where: names the split in error messages, e.g. 'digits train'.

  Returns:
      The number of classes the labels imply (largest label + 1).

  Raises:
      DataError: on the first problem found.
  """
  x, y = np.asarray(x), np.asarray(y)
  if x.ndim != 2:
    raise DataError(f'{where}: x has shape {x.shape}; it must be [n, features]')
  if y.ndim != 1:
    raise DataError(f'{where}: y has shape {y.shape}; it must be [n] class ids')
  if len(x) != len(y):
    raise DataError(f'{where}: x has {len(x)} rows but y has {len(y)}; give one label per row')
  if len(x) == 0:
    raise DataError(f'{where}: the split is empty; it needs at least one row')
  if x.dtype.kind not in 'biuf':
    raise DataError(f'{where}: x has dtype {x.dtype}; features must be numbers')
  bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
  if bad:
    nans = int(np.count_nonzero(np.isnan(x)))
    raise DataError(
      f'{where}: x has {bad} non-finite values ({nans} NaN, {bad - nans} inf); '
      'drop or impute them before loading'
    )
  if y.dtype.kind not in 'biuf':
    raise DataError(f'{where}: y has dtype {y.dtype}; labels must be integer class ids')
  fractional = np.flatnonzero(~(np.isfinite(y) & (y == np.round(y)))) if y.dtype.kind == 'f' else []
  if len(fractional):
    i = int(fractional[0])
    raise DataError(
      f'{where}: labels are not integers (y[{i}] = {y[i]}); labels must be class ids 0..C-1'
    )
  lo, hi = int(y.min()), int(y.max())
  if lo < 0:
    raise DataError(f'{where}: negative label {lo}; labels must be class ids 0..C-1')
  if num_classes is not None:
    _check_label_range(hi, num_classes, where)
  return hi + 1


def _finish(name, x, y, x_test, y_test, num_classes, dev_fraction, seed) -> Splits:
  """Validates raw train+dev and test arrays, splits off dev, and normalizes."""
  _check_fraction('dev_fraction', dev_fraction)
  x, x_test = _flatten(x, f'{name} train'), _flatten(x_test, f'{name} test')
  implied = max(
    validate(x, y, where=f'{name} train'), validate(x_test, y_test, where=f'{name} test')
  )
  num_classes = implied if num_classes is None else num_classes
  _check_label_range(implied - 1, num_classes, name)
  x_train, y_train, x_dev, y_dev = _carve(x, y, dev_fraction, seed, f'{name} train', 'dev')
  x_train, x_dev, x_test = normalize(x_train, x_dev, x_test)
  y_train, y_dev, y_test = (np.asarray(v).astype(np.int32) for v in (y_train, y_dev, y_test))
  return Splits(x_train, y_train, x_dev, y_dev, x_test, y_test, int(num_classes), name)


def _carve(x, y, fraction, seed, where, what):
  """Moves `max(1, round(fraction * n))` rows, picked by a seeded permutation, to a new split."""
  n = len(x)
  k = max(1, round(fraction * n))
  if k >= n:
    raise DataError(
      f'{where}: {n} row(s) are too few to carve a {what} split of {k} from; '
      f'supply more data or a smaller {what}_fraction'
    )
  perm = np.random.default_rng(seed).permutation(n)
  keep, out = perm[k:], perm[:k]
  x, y = np.asarray(x), np.asarray(y)
  return x[keep], y[keep], x[out], y[out]


def _check_label_range(max_label: int, num_classes: int, where: str) -> None:
  if num_classes < 2:
    raise DataError(f'{where}: only {num_classes} class(es); classification needs at least 2')
  if max_label >= num_classes:
    raise DataError(
      f'{where}: label {max_label} is outside the range [0, {num_classes}); '
      f'relabel to 0..{num_classes - 1} or fix the class list'
    )


def _check_fraction(name: str, value: float) -> None:
  if isinstance(value, bool) or not (isinstance(value, numbers.Real) and 0 < value < 1):
    raise DataError(f'{name}={value!r} is out of range; it must be a number in (0, 1)')


def _existing(path: str | Path) -> Path:
  path = Path(path)
  if not path.is_file():
    raise DataError(f'{path}: file not found; check the path')
  return path


def _flatten(x: np.ndarray, where: str) -> np.ndarray:
  """`[n, ...]` -> `[n, features]`, so images and 1-D feature arrays are handled alike."""
  x = np.asarray(x)
  if x.ndim == 0:
    raise DataError(f'{where}: x is a scalar; it must be [n, features]')
  # Not reshape(n, -1): that cannot infer the width of an empty array.
  return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))


def _flat_labels(y: np.ndarray) -> np.ndarray:
  """Accepts `[n]`, `[1, n]` (the SIGNS layout) or `[n, 1]` labels."""
  y = np.asarray(y)
  return y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y


def _one_line(e: Exception) -> str:
  return ' '.join(f'{type(e).__name__}: {e}'.split())

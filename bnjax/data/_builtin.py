"""The built-in data sets: MNIST-1D (generated locally) and scikit-learn's digits."""

import functools
import numbers
import random

import numpy as np

from bnjax.data._checks import DataError, check_fraction, check_seed, one_line
from bnjax.data._splits import Splits, finish


def mnist1d(*, dev_fraction: float = 0.1, seed: int = 0, num_samples: int = 5000) -> Splits:
  """MNIST-1D, generated locally (never downloaded): 40 features, 10 classes.

  With the default `num_samples=5000` this is the standard data set: 4000 train+dev rows and
  1000 test rows.
  """
  check_fraction('dev_fraction', dev_fraction)
  check_seed(seed)
  if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral):
    raise DataError(f'mnist1d: num_samples={num_samples!r} must be an integer, e.g. 5000')
  if num_samples < 20:
    raise DataError(f'mnist1d: num_samples={num_samples} is too few; use at least 20')
  x, y, x_test, y_test = _mnist1d_raw(int(num_samples))
  return finish(
    'mnist1d', x, y, x_test, y_test, num_classes=10, dev_fraction=dev_fraction, seed=seed
  )


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

  The test split is stratified by class and carved with a fixed seed. Each
  row is an 8x8 one-channel image (`input_shape` (8, 8, 1)), standardized per
  pixel as the MLP has always seen it.
  """
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  check_fraction('dev_fraction', dev_fraction)
  check_fraction('test_fraction', test_fraction)
  check_seed(seed)
  x, y = load_digits(return_X_y=True)
  x = x.reshape(-1, 8, 8)
  try:
    x, x_test, y, y_test = train_test_split(
      x, y, test_size=test_fraction, random_state=0, stratify=y
    )
  except ValueError as e:  # too few rows on one side to hold every class
    raise DataError(
      f'digits: test_fraction={test_fraction} cannot be stratified '
      f'({one_line(e)}); use a value nearer 0.2'
    ) from e
  return finish(
    'digits', x, y, x_test, y_test, num_classes=10, dev_fraction=dev_fraction, seed=seed
  )

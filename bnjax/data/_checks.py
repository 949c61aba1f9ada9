"""`DataError` and the checks every loader runs before anything is computed."""

import numbers
from collections.abc import Mapping

import numpy as np

# Seeds go to np.random.default_rng, which takes any non-negative int; JAX keys take 64 bits.
SEED_LIMIT = 2**64


class DataError(ValueError):
  """Input data that cannot be used; the message names the problem and the fix."""


def validate(
  x: np.ndarray, y: np.ndarray, num_classes: int | None = None, *, where: str = 'data'
) -> int:
  """Checks one split: `x` `[n, features]` finite numbers, `y` `[n]` integer class ids.

  Args:
      x: `[n, features]` features, at least one row and one feature.
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
  if x.shape[1] == 0:
    raise DataError(f'{where}: x has shape {x.shape}, no features; it needs at least one column')
  if x.dtype.kind not in 'biuf':
    raise DataError(f'{where}: x has dtype {x.dtype}; features must be real numbers')
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
    check_label_range(hi, num_classes, where)
  return hi + 1


def check_class_count(name: str, labels: Mapping[str, np.ndarray], num_classes: int | None) -> int:
  """The class count, if it is no more than the examples; else a `DataError`.

  More classes than examples cannot be a classification data set, and a stray label such as
  2**40 would otherwise ask for a 1.1e12-wide output layer and hang.

  Args:
      name: the data set, for messages.
      labels: validated `[n_i]` labels of every split, by the key they were stored under.
      num_classes: the count the data set declares, or None to take the largest label + 1.
  """
  examples = sum(len(y) for y in labels.values())
  if num_classes is not None:
    if num_classes > examples:
      raise DataError(
        f'{name}: the class list names {num_classes} classes, more than the {examples} '
        'examples; fix the class list'
      )
    return num_classes
  key = max(labels, key=lambda k: int(np.max(labels[k])))
  row = int(np.argmax(labels[key]))
  label = int(labels[key][row])
  if label + 1 > examples:
    raise DataError(
      f'{name}: label {label} (row {row} of {key}) would mean {label + 1} classes, more than '
      f'the {examples} examples; labels must be class ids 0..C-1 (renumber them, e.g. '
      'np.unique(y, return_inverse=True)[1])'
    )
  return label + 1


def check_label_range(max_label: int, num_classes: int, where: str) -> None:
  if num_classes < 2:
    raise DataError(f'{where}: only {num_classes} class(es); classification needs at least 2')
  if max_label >= num_classes:
    raise DataError(
      f'{where}: label {max_label} is outside the range [0, {num_classes}); '
      f'relabel to 0..{num_classes - 1} or fix the class list'
    )


def check_fraction(name: str, value: float) -> None:
  if isinstance(value, bool) or not (isinstance(value, numbers.Real) and 0 < value < 1):
    raise DataError(f'{name}={short_repr(value)} is out of range; it must be a number in (0, 1)')


def check_seed(seed: int) -> None:
  if isinstance(seed, bool) or not (isinstance(seed, numbers.Integral) and 0 <= seed < SEED_LIMIT):
    raise DataError(f'seed={short_repr(seed)} is out of range; it must be an integer in [0, 2**64)')


def flatten(x: np.ndarray, where: str) -> np.ndarray:
  """`[n, ...]` -> `[n, features]`, so images and 1-D feature arrays are handled alike."""
  x = np.asarray(x)
  if x.ndim == 0:
    raise DataError(f'{where}: x is a scalar; it must be [n, features]')
  # Not reshape(n, -1): that cannot infer the width of an empty array.
  return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))


def flat_labels(y: np.ndarray) -> np.ndarray:
  """Accepts `[n]`, `[1, n]` (the SIGNS layout) or `[n, 1]` labels."""
  y = np.asarray(y)
  return y.reshape(-1) if y.ndim == 2 and 1 in y.shape else y


def one_line(e: BaseException) -> str:
  return ' '.join(f'{type(e).__name__}: {e}'.split())[:300]


def short_repr(value) -> str:
  """`repr(value)` on one line, cut short: a 300-digit seed is not worth printing in full."""
  if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
    return f'{"-" if value < 0 else ""}<a {abs(value).bit_length()}-bit integer>'
  text = ' '.join(repr(value).split())
  return text if len(text) <= 60 else text[:57] + '...'

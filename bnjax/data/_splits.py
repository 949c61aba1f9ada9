"""`Splits`, the dev split, normalization, and `finish`: the step every loader ends with."""

import math
from typing import NamedTuple

import numpy as np

from bnjax.data._checks import (
  DataError,
  check_class_count,
  check_fraction,
  check_label_range,
  check_seed,
  flatten,
  validate,
)

# The names of `x`, `y`, `x_test`, `y_test` in a .npz file; loaders of other layouts pass theirs.
NPZ_KEYS = ('x', 'y', 'x_test', 'y_test')


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
      input_shape: one example's shape before it was flattened, channels last, as a CNN
          convolves it: `(length, channels)` or `(height, width, channels)`; features that
          came flat are a sequence of one channel, `(features, 1)`.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_dev: np.ndarray
  y_dev: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str
  input_shape: tuple[int, ...] = ()

  @property
  def num_features(self) -> int:
    """Width of the feature vectors."""
    return int(self.x_train.shape[1])


def split_dev(
  x: np.ndarray, y: np.ndarray, dev_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Splits `x` `[n, ...]`, `y` `[n]` into train and dev by a permutation fixed by `seed`.

  Returns:
      `(x_train, y_train, x_dev, y_dev)`; the dev split has `max(1, round(dev_fraction * n))`
      rows and train has the rest.
  """
  check_fraction('dev_fraction', dev_fraction)
  check_seed(seed)
  return carve(x, y, dev_fraction, seed, 'data', 'dev')


def example_shape(stored: tuple[int, ...]) -> tuple[int, ...]:
  """`Splits.input_shape` from the stored shape of x, `[n, ...]`.

  `[n, features]` is a sequence of one channel, `[n, height, width]` a one-channel
  image, `[n, height, width, channels]` an image; any other rank is read as a
  flat sequence.
  """
  example = tuple(int(d) for d in stored[1:])
  if len(example) == 2:
    return (*example, 1)
  if len(example) == 3:
    return example
  return (math.prod(example), 1)


def normalize_per_channel(
  input_shape: tuple[int, ...], x_train: np.ndarray, *others: np.ndarray
) -> tuple[np.ndarray, ...]:
  """`normalize` with one mean and std per channel (the last axis of `input_shape`).

  Images are standardized this way: every position of a channel shares its
  statistics, so a corner pixel that is always black is not blown up by its tiny std.
  """
  channels = input_shape[-1]
  as_channels = [np.asarray(x).reshape(-1, channels) for x in (x_train, *others)]
  out = normalize(*as_channels)
  return tuple(y.reshape(len(x), -1) for y, x in zip(out, (x_train, *others), strict=True))


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
  # Each feature is first divided by a power of two near its largest magnitude: exact, so the
  # result is the plain formula's bit for bit, but squares of features near 1e300 cannot
  # overflow (an infinite std would turn the feature into zeros, silently).
  largest = np.abs(x_train).max(axis=0, initial=0.0)
  scale = np.ldexp(1.0, np.frexp(largest)[1] - 1)
  scaled = [np.asarray(x, dtype=np.float64) / scale for x in (x_train, *others)]
  mu = scaled[0].mean(axis=0)
  # Test constancy exactly (range 0) rather than std == 0, which rounding can miss; a constant
  # feature is divided by 1 in its own units, which is 1 / scale in the scaled ones.
  sigma = np.where(np.ptp(scaled[0], axis=0) == 0, 1.0 / scale, scaled[0].std(axis=0))
  return tuple(((x - mu) / sigma).astype(np.float32) for x in scaled)


def finish(
  name: str,
  x: np.ndarray,
  y: np.ndarray,
  x_test: np.ndarray | None,
  y_test: np.ndarray | None,
  *,
  dev_fraction: float,
  seed: int,
  num_classes: int | None = None,
  test_fraction: float | None = None,
  keys: tuple[str, str, str, str] = NPZ_KEYS,
  per_channel: bool = False,
  dev: tuple[np.ndarray, np.ndarray] | None = None,
) -> Splits:
  """Validates raw arrays, carves test (if not given) and dev, and normalizes.

  Every check runs on the arrays as stored, so a message's row numbers are the file's.

  Args:
      name: the data set, for messages and `Splits.name`.
      x, y: the train+dev pool (and the test rows too when `x_test` is None).
      x_test, y_test: the test split, or None to carve `test_fraction` of the pool with a
          fixed seed.
      dev_fraction, seed: the dev split, carved from what is left by a `seed` permutation.
      num_classes: the count the data set declares, or None for the largest label + 1.
      keys: the stored names of x, y, x_test, y_test, for messages.
      per_channel: standardize each channel of an image (`x` stored as `[n, height,
          width, channels]`) rather than each feature.
      dev: a dev split `(x_dev, y_dev)` the data set gives; then nothing is carved for dev
          and `seed` moves nothing.
  """
  check_fraction('dev_fraction', dev_fraction)
  check_seed(seed)
  x_key, y_key, x_test_key, y_test_key = keys
  stored = np.shape(x)
  input_shape = example_shape(stored)
  x = flatten(x, f'{name} train')
  validate(x, y, where=f'{name} train')
  train = (x.shape[1], f'{x_key} has {x.shape[1]} (shape {stored})')
  labels = {y_key: np.asarray(y)}
  if x_test is not None:
    x_test = _given_split(name, 'test', x_test_key, x_test, y_test, train)
    labels[y_test_key] = np.asarray(y_test)
  if dev is not None:
    x_dev = _given_split(name, 'dev', 'the dev split', *dev, train)
    labels['dev'] = np.asarray(dev[1])
  num_classes = check_class_count(name, labels, num_classes)
  check_label_range(max(int(np.max(v)) for v in labels.values()), num_classes, name)
  if x_test is None:
    check_fraction('test_fraction', test_fraction)
    x, y, x_test, y_test = carve(x, y, test_fraction, 0, name, 'test')
  if dev is None:
    x_train, y_train, x_dev, y_dev = carve(x, y, dev_fraction, seed, f'{name} train', 'dev')
  else:
    x_train, y_train, y_dev = x, y, np.asarray(dev[1])
  with np.errstate(over='ignore', invalid='ignore'):
    if per_channel and len(input_shape) == 3:
      normalized = normalize_per_channel(input_shape, x_train, x_dev, x_test)
    else:
      normalized = normalize(x_train, x_dev, x_test)
  for split, values in zip(('train', 'dev', 'test'), normalized, strict=True):
    if not np.isfinite(values).all():
      raise DataError(
        f'{name} {split}: features overflow float32 once standardized with the training mean '
        'and std (values too large, or far outside the training range); rescale them first'
      )
  x_train, x_dev, x_test = normalized
  y_train, y_dev, y_test = (np.asarray(v).astype(np.int32) for v in (y_train, y_dev, y_test))
  return Splits(x_train, y_train, x_dev, y_dev, x_test, y_test, int(num_classes), name, input_shape)


def _given_split(name, split, split_key, x_split, y_split, train):
  """A test or dev split the data set gives, flattened and validated like the train pool.

  `train` is the pool's `(features per row, how to name it in a message)`.
  """
  stored = np.shape(x_split)
  x_split = flatten(x_split, f'{name} {split}')
  validate(x_split, y_split, where=f'{name} {split}')
  features, described = train
  if x_split.shape[1] != features:
    raise DataError(
      f'{name}: {split_key} has {x_split.shape[1]} features per row (shape {stored}) but '
      f'{described}; both splits need the same features'
    )
  return x_split


def carve(x, y, fraction, seed, where, what):
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

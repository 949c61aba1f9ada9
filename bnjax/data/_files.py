"""Data sets from files (.npz, and .h5 in the SIGNS layout), and `load`, which picks a loader."""

import os
from pathlib import Path

import numpy as np

from bnjax.data._builtin import digits, mnist1d
from bnjax.data._checks import (
  DataError,
  check_fraction,
  check_seed,
  flat_labels,
  one_line,
  short_repr,
)
from bnjax.data._images import from_folder
from bnjax.data._splits import Splits, finish

_NAMES = ('mnist1d', 'digits')
_H5_KEYS = ('train_set_x', 'train_set_y', 'test_set_x', 'test_set_y')
_H5_CLASSES = 'list_classes'


def load(
  dataset: str | os.PathLike, *, dev_fraction: float = 0.1, seed: int = 0, image_size: int = 64
) -> Splits:
  """Loads a data set by name ('mnist1d', 'digits'), from a .npz / .h5 / .hdf5 path, or from
  a folder of images (`from_folder`, resized to `image_size`)."""
  check_fraction('dev_fraction', dev_fraction)
  check_seed(seed)
  named = isinstance(dataset, str | os.PathLike)
  if named and dataset == 'mnist1d':
    return mnist1d(dev_fraction=dev_fraction, seed=seed)
  if named and dataset == 'digits':
    return digits(dev_fraction=dev_fraction, seed=seed)
  if named and _is_dir(Path(dataset)):
    return from_folder(dataset, image_size=image_size, dev_fraction=dev_fraction, seed=seed)
  if not named or not _is_file(Path(dataset)):
    raise DataError(
      f'unknown dataset {short_repr(dataset)}: it is neither one of {", ".join(_NAMES)} nor an '
      'existing file or folder; pass one of those names, a path to a .npz/.h5 file or a folder '
      'of images'
    )
  path = Path(dataset)
  suffix = path.suffix.lower()
  if suffix == '.npz':
    return from_npz(path, dev_fraction=dev_fraction, seed=seed)
  if suffix in ('.h5', '.hdf5'):
    return from_h5(path, dev_fraction=dev_fraction, seed=seed)
  raise DataError(f'{path}: unsupported file type {suffix!r}; use a .npz, .h5 or .hdf5 file')


def from_npz(
  path: str | os.PathLike, *, dev_fraction: float = 0.1, test_fraction: float = 0.2, seed: int = 0
) -> Splits:
  """Loads `x` `[n, ...]` and int labels `y` `[n]` from a .npz file.

  If the file also holds `x_test`/`y_test` they are the test split; otherwise `test_fraction`
  of the rows is carved off with a fixed seed. Features of rank > 2 are flattened, and
  `num_classes` is the largest label over all splits plus one. Other arrays in the file are
  not read.
  """
  check_fraction('dev_fraction', dev_fraction)
  check_seed(seed)
  path = _existing(path)
  try:
    z = np.load(path, allow_pickle=False)
  except Exception as e:  # numpy, zipfile and zlib each raise their own
    raise DataError(f'{path}: not a valid .npz file ({one_line(e)}); check the path') from e
  if not isinstance(z, np.lib.npyio.NpzFile):
    raise DataError(
      f'{path}: holds a single .npy array, not an .npz archive; save it with '
      'np.savez(path, x=..., y=...)'
    )
  with z:
    names = list(z.files)
    missing = [k for k in ('x', 'y') if k not in names]
    if missing:
      raise DataError(
        f'{path}: missing array(s) {", ".join(missing)} (it has: {", ".join(names) or "none"})'
        '; save features as `x` and labels as `y`'
      )
    if ('x_test' in names) != ('y_test' in names):
      raise DataError(f'{path}: has only one of x_test/y_test; provide both or neither')
    arrays = {k: _read_npz(path, z, k) for k in ('x', 'y', 'x_test', 'y_test') if k in names}
  x_test, y_test = arrays.get('x_test'), arrays.get('y_test')
  return finish(
    path.name,
    arrays['x'],
    flat_labels(arrays['y']),
    x_test,
    None if y_test is None else flat_labels(y_test),
    dev_fraction=dev_fraction,
    seed=seed,
    test_fraction=test_fraction,
  )


def from_h5(path: str | os.PathLike, *, dev_fraction: float = 0.1, seed: int = 0) -> Splits:
  """Loads the SIGNS layout: `train_set_x` `[m, 64, 64, 3]`, `train_set_y` `[m]` or `[1, m]`,
  `test_set_x`, `test_set_y` and `list_classes` `[C]`.

  Images are standardized per channel with the training statistics (no 1/255 scaling
  needed) and flattened; `Splits.input_shape` keeps their shape for the CNN. Only the
  length of `list_classes` is read: it is the number of classes.
  """
  check_fraction('dev_fraction', dev_fraction)
  check_seed(seed)
  path = _existing(path)
  try:
    import h5py
  except ImportError as e:
    raise DataError("reading .h5 files needs h5py: pip install 'bnjax[h5]'") from e
  try:
    f = h5py.File(path, 'r')
  except Exception as e:  # h5py raises OSError mostly, but not only
    raise DataError(f'{path}: not a valid HDF5 file ({one_line(e)}); check the path') from e
  with f:
    datasets = _h5_datasets(path, f, h5py)
    _check_fits(path, [datasets[k] for k in _H5_KEYS])
    a = {k: _read_h5(path, k, datasets[k]) for k in _H5_KEYS}
    shape = datasets[_H5_CLASSES].shape
    num_classes = 0 if shape is None else int(np.prod(shape))
  return finish(
    path.name,
    a['train_set_x'],
    flat_labels(a['train_set_y']),
    a['test_set_x'],
    flat_labels(a['test_set_y']),
    num_classes=num_classes,
    dev_fraction=dev_fraction,
    seed=seed,
    keys=_H5_KEYS,
    per_channel=True,
  )


def _read_npz(path: Path, z, key: str) -> np.ndarray:
  try:
    return np.asarray(z[key])
  except Exception as e:  # object arrays (pickles), truncated or corrupt members
    raise DataError(
      f'{path}: cannot read array {key!r} ({one_line(e)}); save it from a numeric array '
      'with np.savez'
    ) from e


def _h5_datasets(path: Path, f, h5py) -> dict:
  """The SIGNS datasets of an open file, each checked to be a dataset."""
  wanted = (*_H5_KEYS, _H5_CLASSES)
  try:
    missing = [k for k in wanted if k not in f]
  except Exception as e:
    raise DataError(f'{path}: not a valid HDF5 file ({one_line(e)}); check the path') from e
  if missing:
    raise DataError(
      f'{path}: missing dataset(s) {", ".join(missing)}; the SIGNS layout needs {", ".join(wanted)}'
    )
  found = {}
  for k in wanted:
    try:
      found[k] = f[k]
    except Exception as e:  # a dangling soft or external link
      raise DataError(f'{path}: cannot open {k} ({one_line(e)}); store it as a dataset') from e
    if not isinstance(found[k], h5py.Dataset):
      raise DataError(
        f'{path}: {k} is an HDF5 {type(found[k]).__name__.lower()}, where a dataset should be; '
        f'store the array itself under {k}'
      )
  return found


def _read_h5(path: Path, key: str, dataset) -> np.ndarray:
  try:
    return np.asarray(dataset[()])
  except Exception as e:  # unsupported types or filters, corrupt chunks
    raise DataError(
      f'{path}: cannot read {key} ({one_line(e)}); store it as a plain numeric array'
    ) from e


def _check_fits(path: Path, datasets) -> None:
  """An HDF5 dataset may declare far more than the file holds; refuse what memory cannot hold."""
  need = sum(int(d.size or 0) * d.dtype.itemsize for d in datasets)
  try:
    have = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (AttributeError, ValueError, OSError):  # no sysconf (Windows): nothing to compare
    return
  if need > have:
    raise DataError(
      f'{path}: its datasets take {need / 2**30:.3g} GiB, more than the {have / 2**30:.3g} GiB '
      'of memory here; use a smaller file or a machine with more memory'
    )


def _is_file(path: Path) -> bool:
  try:
    return path.is_file()
  except (OSError, ValueError):  # a name too long, or with a NUL byte
    return False


def _is_dir(path: Path) -> bool:
  try:
    return path.is_dir()
  except (OSError, ValueError):
    return False


def _existing(path: str | os.PathLike) -> Path:
  if not isinstance(path, str | os.PathLike):
    raise DataError(f'the path must be a str or os.PathLike; got {type(path).__name__}')
  path = Path(path)
  if not _is_file(path):
    raise DataError(f'{path}: file not found; check the path')
  return path

"""Image folders: one subfolder per class, decoded with Pillow, resized, cached as a .npz.

Two layouts, the one TFDS and Hugging Face exports of beans use and the one
people make by hand:

    beans/train/<class>/*.png    beans/validation/<class>/...    beans/test/<class>/...
    flowers/<class>/*.jpg

With `train/`, the `validation/` folder (if any) is the dev split and `test/`
(if any) the test split; what is missing is carved from train, test with a
fixed seed and dev with `seed`. A folder without `train/` is one pool split
the same way. Classes are the subfolder names in sorted order (of `train/`
where there is one).

Every image is resized to `image_size` x `image_size` (squashed, not
cropped). A data set whose images are all grayscale keeps one channel;
otherwise every image is converted to RGB (grayscale replicated, alpha and
palettes dropped). 16-bit and float images keep their values and one
channel, so they cannot be mixed with 8-bit ones. The decoded arrays are
cached beside the folder (`<folder>.<size>px.npz`) and rebuilt whenever a
file's name, size or modification time changes.
"""

import hashlib
import os
from pathlib import Path

import numpy as np

from bnjax.data._checks import DataError, check_fraction, check_seed, one_line
from bnjax.data._splits import Splits, finish

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
SPLIT_FOLDERS = ('train', 'validation', 'test')
_GRAY = ('1', 'L', 'LA', 'La')
_DEEP = ('I', 'I;16', 'I;16L', 'I;16B', 'I;16N', 'F')  # more than 8 bits, one channel
_CACHE_VERSION = 1


def from_folder(
  path: str | os.PathLike,
  *,
  image_size: int = 64,
  dev_fraction: float = 0.1,
  test_fraction: float = 0.2,
  seed: int = 0,
  cache: bool = True,
) -> Splits:
  """Loads a folder of images, one subfolder per class; see the module docstring.

  Args:
    path: the folder.
    image_size: pixels of the square every image is resized to.
    dev_fraction, test_fraction: shares carved where the folder gives no
      `validation/` or `test/` split.
    seed: moves the dev split (a carved test split never moves).
    cache: read and write `<folder>.<image_size>px.npz` beside the folder.

  Returns:
    `Splits` with `input_shape` `(image_size, image_size, channels)`,
    standardized per channel with the training statistics.
  """
  check_fraction('dev_fraction', dev_fraction)
  check_fraction('test_fraction', test_fraction)
  check_seed(seed)
  if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
    raise DataError(f'image_size={image_size!r} must be a positive integer, e.g. 64')
  root = Path(path)
  if not root.is_dir():
    raise DataError(f'{root}: not a folder of images; check the path')
  splits = _layout(root)
  classes = sorted(splits['train'])
  for split, found in splits.items():
    extra = sorted(set(found) - set(classes))
    if extra:
      raise DataError(
        f'{root / split}: class folder(s) {", ".join(extra)} are not in {root / "train"}; '
        'every split needs the classes train has'
      )
  files = {split: _images_of(found) for split, found in splits.items()}
  arrays = _cached(root, image_size, files, classes) if cache else None
  if arrays is None:
    arrays = _decode_all(root, files, classes, image_size)
    if cache:
      _write_cache(root, image_size, files, classes, arrays)
  dev = (arrays['x_validation'], arrays['y_validation']) if 'x_validation' in arrays else None
  return finish(
    root.name,
    arrays['x_train'],
    arrays['y_train'],
    arrays.get('x_test'),
    arrays.get('y_test'),
    num_classes=len(classes),
    dev_fraction=dev_fraction,
    test_fraction=test_fraction,
    seed=seed,
    keys=('train', 'train', 'test', 'test'),
    per_channel=True,
    dev=dev,
  )


def _layout(root: Path) -> dict[str, dict[str, Path]]:
  """split -> class name -> its folder: `train` (the pool) and, if given, `validation`, `test`."""
  given = [name for name in SPLIT_FOLDERS if (root / name).is_dir()]
  if given and 'train' not in given:
    raise DataError(
      f'{root}: has {"/, ".join(given)}/ but no train/ folder; add train/<class>/ images, or '
      'put the class folders directly in the folder'
    )
  if not given:
    return {'train': _classes(root)}
  return {name: _classes(root / name) for name in given}


def _classes(folder: Path) -> dict[str, Path]:
  subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith('.'))
  if not subfolders:
    loose = [p for p in folder.iterdir() if _is_image(p)]
    where = f'it holds {len(loose)} images but' if loose else 'it'
    raise DataError(
      f'{folder}: no images found: {where} has no class subfolders; put the images of each '
      'class in a subfolder named after it'
    )
  return {p.name: p for p in subfolders}


def _is_image(path: Path) -> bool:
  return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith('.')


def _images_of(classes: dict[str, Path]) -> dict[str, list[Path]]:
  out = {
    name: sorted(p for p in folder.rglob('*') if _is_image(p)) for name, folder in classes.items()
  }
  empty = [name for name, found in out.items() if not found]
  if len(empty) == len(out):
    folder = next(iter(classes.values())).parent
    raise DataError(
      f'{folder}: no images found in its {len(out)} class folder(s) '
      f'({", ".join(IMAGE_SUFFIXES)}); check the path'
    )
  if empty:
    raise DataError(
      f'{classes[empty[0]]}: class {empty[0]!r} has no images; add some or remove the folder'
    )
  return out


def _decode_all(root, files, classes, image_size) -> dict[str, np.ndarray]:
  """`x_<split>` `[n, size, size, channels]` and `y_<split>` `[n]` for every split in `files`."""
  from PIL import Image  # Pillow: only image folders need it

  # The headers first (cheap): every mode must be known before any image is converted.
  modes = {}
  for found in files.values():
    for paths in found.values():
      for path in paths:
        modes.setdefault(_mode(Image, path), path)
  deep = sorted(m for m in modes if m in _DEEP)
  if deep and len(deep) < len(modes):
    shallow = next(m for m in modes if m not in _DEEP)
    raise DataError(
      f'{root}: mixed image modes: {modes[deep[0]]} is {deep[0]} (more than 8 bits) but '
      f'{modes[shallow]} is {shallow}; convert every image to one bit depth'
    )
  target = 'F' if deep else 'L' if all(m in _GRAY for m in modes) else 'RGB'
  arrays = {}
  for split, found in files.items():
    pairs = [(path, classes.index(name)) for name in found for path in found[name]]
    arrays[f'x_{split}'] = np.stack([_pixels(Image, path, target, image_size) for path, _ in pairs])
    arrays[f'y_{split}'] = np.asarray([label for _, label in pairs], np.int32)
  return arrays


def _unreadable(path: Path, e: Exception) -> DataError:
  return DataError(f'{path}: cannot read the image ({one_line(e)}); replace or remove it')


def _mode(Image, path: Path) -> str:
  try:
    with Image.open(path) as image:
      return image.mode
  except Exception as e:  # Pillow raises its own, OSError, SyntaxError, ValueError...
    raise _unreadable(path, e) from e


def _pixels(Image, path: Path, target: str, image_size: int) -> np.ndarray:
  """`[size, size, channels]`: uint8, or float32 for images deeper than 8 bits."""
  try:
    with Image.open(path) as image:
      image.load()
      if target == 'RGB' and image.mode in ('RGBA', 'LA', 'PA', 'P'):
        image = image.convert('RGBA')  # palettes and alpha: colours kept, alpha dropped below
      image = image.convert(target).resize((image_size, image_size), Image.BILINEAR)
  except Exception as e:  # a truncated file fails here, not at open
    raise _unreadable(path, e) from e
  pixels = np.asarray(image, np.float32 if target == 'F' else np.uint8)
  return pixels.reshape(image_size, image_size, -1)


def cache_path(root: str | os.PathLike, image_size: int) -> Path:
  """Where the decoded arrays of `root` at `image_size` pixels are cached."""
  root = Path(root)
  return root.parent / f'{root.name}.{image_size}px.npz'


def _fingerprint(files, classes) -> str:
  digest = hashlib.sha256(f'{_CACHE_VERSION} {classes}'.encode())
  for split in sorted(files):
    for name in sorted(files[split]):
      for p in files[split][name]:
        stat = p.stat()
        digest.update(f'{split}/{name}/{p.name} {stat.st_size} {stat.st_mtime_ns}\n'.encode())
  return digest.hexdigest()


def _cached(root, image_size, files, classes) -> dict[str, np.ndarray] | None:
  path = cache_path(root, image_size)
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as z:
      if str(z['fingerprint']) != _fingerprint(files, classes):
        return None
      return {k: np.asarray(z[k]) for k in z.files if k != 'fingerprint'}
  except Exception:  # a stale or broken cache is rebuilt, never trusted
    return None


def _write_cache(root, image_size, files, classes, arrays) -> None:
  path = cache_path(root, image_size)
  temporary = path.with_name(f'.{path.name}.{os.getpid()}.tmp.npz')
  try:
    np.savez(temporary, fingerprint=_fingerprint(files, classes), **arrays)
    os.replace(temporary, path)
  except OSError:  # a read-only place: the data set still loads, only slower next time
    temporary.unlink(missing_ok=True)

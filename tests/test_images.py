"""Image folders: synthetic PNGs round trip, splits, the cache, modes, and bad folders."""

import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from bnjax import data
from bnjax.data import DataError

CLASSES = ('angular_leaf_spot', 'bean_rust', 'healthy')  # beans' classes, in sorted order
SIZE = 6


def _pixels(rng, mode='RGB', size=SIZE):
  shape = {'RGB': (size, size, 3), 'RGBA': (size, size, 4), 'L': (size, size)}[mode]
  return rng.integers(0, 256, shape, dtype=np.uint8)


def make_folder(root, counts, *, mode='RGB', seed=0) -> dict:
  """`root/<split>/<class>/<i>.png` for `counts = {split: per class}` ('' for no split folder).

  Returns split -> `(pixels [n, SIZE, SIZE, ...], labels [n])` in the loader's order
  (classes sorted, files sorted by name).
  """
  rng = np.random.default_rng(seed)
  written = {}
  for split, per_class in counts.items():
    images, labels = [], []
    for label, name in enumerate(CLASSES):
      folder = root / split / name
      folder.mkdir(parents=True)
      for i in range(per_class):
        pixels = _pixels(rng, mode)
        Image.fromarray(pixels, mode).save(folder / f'{i:03d}.png')
        images.append(pixels)
        labels.append(label)
    written[split or 'train'] = (np.stack(images), np.asarray(labels))
  return written


def test_round_trip_with_train_validation_and_test(tmp_path):
  written = make_folder(tmp_path / 'beans', {'train': 4, 'validation': 2, 'test': 3})
  s = data.load(str(tmp_path / 'beans'), image_size=SIZE)
  assert s.name == 'beans' and s.num_classes == 3 and s.input_shape == (SIZE, SIZE, 3)
  # Nothing is carved: validation is dev, test is test, in file order.
  np.testing.assert_array_equal(s.y_train, written['train'][1])
  np.testing.assert_array_equal(s.y_dev, written['validation'][1])
  np.testing.assert_array_equal(s.y_test, written['test'][1])
  # Same size, so no resampling: the pixels standardized per channel with train's statistics.
  train = written['train'][0].astype(np.float64)
  mean, std = train.mean(axis=(0, 1, 2)), train.std(axis=(0, 1, 2))
  for split, x in (('train', s.x_train), ('validation', s.x_dev), ('test', s.x_test)):
    want = (written[split][0] - mean) / std
    np.testing.assert_allclose(x, want.reshape(len(want), -1), rtol=1e-5, atol=1e-5)
  # And the seed moves nothing when the folder gives every split.
  other = data.from_folder(tmp_path / 'beans', image_size=SIZE, seed=3)
  np.testing.assert_array_equal(other.x_dev, s.x_dev)


def test_single_folder_is_split_with_a_fixed_test_and_a_seeded_dev(tmp_path):
  make_folder(tmp_path / 'pool', {'': 10})
  a = data.from_folder(tmp_path / 'pool', image_size=SIZE, seed=0)
  b = data.from_folder(tmp_path / 'pool', image_size=SIZE, seed=1)
  assert len(a.y_test) == 6 and len(a.y_dev) == 2 and len(a.y_train) == 22  # 20% of 30, 10% of 24
  # The test rows do not move with the seed; their values are standardized by each train.
  np.testing.assert_array_equal(a.y_test, b.y_test)
  assert not np.array_equal(a.y_dev, b.y_dev) or not np.array_equal(a.x_dev, b.x_dev)


def test_images_are_resized(tmp_path):
  make_folder(tmp_path / 'f', {'': 2})
  s = data.from_folder(tmp_path / 'f', image_size=4, dev_fraction=0.2, test_fraction=0.2)
  assert s.input_shape == (4, 4, 3) and s.num_features == 48


def test_cache_is_read_back_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
  make_folder(tmp_path / 'f', {'train': 3, 'test': 1})
  first = data.from_folder(tmp_path / 'f', image_size=SIZE)
  assert data._images.cache_path(tmp_path / 'f', SIZE).is_file()
  with monkeypatch.context() as patch:  # a cached load decodes nothing
    patch.setattr(Image, 'open', lambda *a, **k: pytest.fail('decoded despite the cache'))
    cached = data.from_folder(tmp_path / 'f', image_size=SIZE)
  np.testing.assert_array_equal(cached.x_train, first.x_train)
  changed = tmp_path / 'f' / 'train' / 'healthy' / '000.png'
  Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(changed)
  os.utime(changed, ns=(1, 1))  # a new modification time, whatever the clock's resolution
  rebuilt = data.from_folder(tmp_path / 'f', image_size=SIZE)
  assert not np.array_equal(rebuilt.x_train, first.x_train)


def test_grayscale_and_rgba_are_converted_to_rgb(tmp_path):
  make_folder(tmp_path / 'f', {'': 2})
  gray = np.arange(SIZE * SIZE, dtype=np.uint8).reshape(SIZE, SIZE)
  Image.fromarray(gray, 'L').save(tmp_path / 'f' / 'healthy' / 'gray.png')
  rgba = np.full((SIZE, SIZE, 4), 7, np.uint8)
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'f' / 'healthy' / 'rgba.png')
  arrays = data._images._decode_all(
    tmp_path / 'f',
    {'train': data._images._images_of(data._images._classes(tmp_path / 'f'))},
    list(CLASSES),
    SIZE,
  )
  x, y = arrays['x_train'], arrays['y_train']
  assert x.shape == (8, SIZE, SIZE, 3) and x.dtype == np.uint8
  healthy = x[y == 2]  # files sorted: 000, 001, gray, rgba
  np.testing.assert_array_equal(healthy[2], np.repeat(gray[..., None], 3, axis=-1))
  np.testing.assert_array_equal(healthy[3], 7)


def test_an_all_grayscale_folder_keeps_one_channel(tmp_path):
  make_folder(tmp_path / 'f', {'': 3}, mode='L')
  assert data.from_folder(tmp_path / 'f', image_size=SIZE).input_shape == (SIZE, SIZE, 1)


def _empty(root):
  root.mkdir()


def _class_without_images(root):
  make_folder(root, {'': 2})
  for path in (root / 'bean_rust').iterdir():
    path.unlink()
  (root / 'bean_rust' / 'notes.txt').write_text('not an image')


def _no_images_at_all(root):
  for name in CLASSES:
    (root / name).mkdir(parents=True)


def _unreadable(root):
  make_folder(root, {'': 2})
  (root / 'healthy' / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n' + b'garbage' * 10)


def _truncated(root):
  make_folder(root, {'': 2})
  path = root / 'healthy' / '000.png'
  path.write_bytes(path.read_bytes()[:60])


def _mixed_depths(root):
  make_folder(root, {'': 2})
  Image.fromarray(np.full((SIZE, SIZE), 40000, np.uint16)).save(root / 'healthy' / 'deep.png')


def _validation_without_train(root):
  make_folder(root, {'validation': 1, 'test': 1})


def _class_only_in_test(root):
  make_folder(root, {'train': 2, 'test': 1})
  (root / 'test' / 'zebra').mkdir()
  Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / 'test' / 'zebra' / 'z.png')


def _loose_images(root):
  root.mkdir()
  Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(root / 'a.png')


@pytest.mark.parametrize(
  'make,message',
  [
    (_empty, r'/f: no images found: it has no class subfolders'),
    (_loose_images, r'/f: no images found: it holds 1 images but has no class subfolders'),
    (_no_images_at_all, r'/f: no images found in its 3 class folder\(s\)'),
    (_class_without_images, r"/f/bean_rust: class 'bean_rust' has no images"),
    (_unreadable, r'/f/healthy/broken.png: cannot read the image'),
    (_truncated, r'/f/healthy/000.png: cannot read the image'),
    (_mixed_depths, r'mixed image modes: .*deep.png is I;16 \(more than 8 bits\) but .* is RGB'),
    (_validation_without_train, r'/f: has validation/, test/ but no train/ folder'),
    (_class_only_in_test, r'/f/test: class folder\(s\) zebra are not in .*/f/train'),
  ],
  ids=lambda v: getattr(v, '__name__', '').strip('_') or None,
)
def test_bad_folders_fail_with_one_line_naming_the_problem(tmp_path, make, message):
  make(tmp_path / 'f')
  with pytest.raises(DataError, match=message) as info:
    data.load(str(tmp_path / 'f'), image_size=SIZE)
  assert '\n' not in str(info.value)


def test_image_size_must_be_positive(tmp_path):
  make_folder(tmp_path / 'f', {'': 1})
  with pytest.raises(DataError, match='image_size=0 must be a positive integer'):
    data.from_folder(tmp_path / 'f', image_size=0)


def test_an_unwritable_place_loads_without_a_cache(tmp_path, monkeypatch):
  make_folder(tmp_path / 'f', {'': 2})

  def refuse(*args, **kwargs):
    raise PermissionError('read-only')

  monkeypatch.setattr(np, 'savez', refuse)
  s = data.from_folder(tmp_path / 'f', image_size=SIZE)
  assert len(s.y_train) + len(s.y_dev) + len(s.y_test) == 6
  assert not data._images.cache_path(tmp_path / 'f', SIZE).exists()
  assert not list(pathlib.Path(tmp_path).glob('.*.tmp.npz'))

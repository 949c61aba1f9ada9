"""Data sets as normalized train/dev/test splits of host numpy arrays.

Every loader returns a `Splits` whose features are float32 `[n, features]`, standardized with
the mean and std of the *training* split only (per channel for images), and whose labels are
int32 class ids; `Splits.input_shape` is the shape a CNN sees each row in. Bad input
raises `DataError` with one line naming the problem and the fix, before anything is computed.

The test split never depends on `seed`: it is either given by the data set or carved with a
fixed seed, so runs that vary `seed` (which only moves the train/dev boundary) are scored on the
same test rows.

This module only re-exports. Behind it:

* `_checks`: `DataError`, `validate` and the checks every loader runs (shapes, dtypes, finite
  features, class ids, class counts, fractions, seeds);
* `_splits`: `Splits`, `split_dev`, `normalize`, and the step every loader ends with;
* `_builtin`: `mnist1d` and `digits`, generated or shipped locally;
* `_files`: `load`, `from_npz` and `from_h5`;
* `_images`: `from_folder`, folders of images (one subfolder per class), cached as a .npz.
"""

from bnjax.data._builtin import digits, mnist1d
from bnjax.data._checks import DataError, validate
from bnjax.data._files import from_h5, from_npz, load
from bnjax.data._images import from_folder
from bnjax.data._splits import Splits, normalize, split_dev

__all__ = [
  'DataError',
  'Splits',
  'digits',
  'from_folder',
  'from_h5',
  'from_npz',
  'load',
  'mnist1d',
  'normalize',
  'split_dev',
  'validate',
]

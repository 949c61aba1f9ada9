"""Flags and helpers the launchers share: data set, seed, output directory."""

import json
import logging
import os

from absl import flags

from bnjax import data

DATASET = flags.DEFINE_string(
  'dataset',
  'mnist1d',
  "'mnist1d' (generated locally), 'digits' (scikit-learn), or a path to a .npz file "
  '(arrays x, y; optional x_test, y_test) or a SIGNS-layout .h5 file.',
)
DEV_FRACTION = flags.DEFINE_float(
  'dev_fraction', 0.1, 'Share of the training split held out as the dev set.'
)
SEED = flags.DEFINE_integer('seed', 0, 'Seed of every random choice (data split aside).')

# absl shows INFO logs; JAX's search for absent TPU/GPU plugins is noise here.
logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def load_data() -> data.Splits:
  """The data set the flags name; a bad file stops with one line."""
  try:
    return data.load(DATASET.value, dev_fraction=DEV_FRACTION.value)
  except data.DataError as error:
    raise SystemExit(f'error: {error}') from None


def describe(splits: data.Splits) -> str:
  return (
    f'{splits.name}: {len(splits.y_train)} train / {len(splits.y_dev)} dev / '
    f'{len(splits.y_test)} test, {splits.num_features} features, '
    f'{splits.num_classes} classes'
  )


def write_json(output_dir: str, name: str, payload: dict) -> str:
  os.makedirs(output_dir, exist_ok=True)
  path = os.path.join(output_dir, name)
  with open(path, 'w') as f:
    json.dump(payload, f, indent=2, default=float)
  return path

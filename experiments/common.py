"""What the launchers share: data set, seed and output flags, flags made from the registry."""

import logging

from absl import flags

from bnjax import data, files, registry

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


def define_hyperparameter_flags(names, defaults=None) -> dict[str, flags.FlagHolder]:
  """One flag per registry name, with its kind, choices, help and default.

  Args:
    names: registry names to expose.
    defaults: name -> the launcher's own default where it differs from the
      registry's (say why beside the dict).

  Returns:
    name -> FlagHolder.
  """
  defaults = dict(defaults or {})
  holders = {}
  for name in names:
    entry = registry.REGISTRY[name]
    default = defaults.get(name, entry.default)
    if entry.kind == 'choice':
      holders[name] = flags.DEFINE_enum(name, default, list(entry.choices), entry.help)
    elif entry.kind == 'bool':
      holders[name] = flags.DEFINE_boolean(name, default, entry.help)
    elif entry.kind == 'int':
      holders[name] = flags.DEFINE_integer(name, default, entry.help)
    else:
      holders[name] = flags.DEFINE_float(name, default, f'{entry.help} In {entry.interval()}.')
  return holders


def output_dir_or_exit(path: str) -> str:
  """The output directory, created and writable, checked before any compute."""
  try:
    return files.check_output_dir(path)
  except files.OutputError as error:
    raise SystemExit(f'error: {error}') from None


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

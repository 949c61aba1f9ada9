"""What the launchers share: data set, seed and output flags, flags made from the registry.

`run(main)` starts a launcher so that whatever a user can type ends in one
line on stderr, `error: ...`, and a non-zero exit, never a traceback: a flag
absl cannot parse, and every error the library raises for bad input
(`LIBRARY_ERRORS`), wherever in `main` it comes from.
"""

import functools
import logging
import sys

from absl import app, flags

from bnjax import data, files, registry, search

DATASET = flags.DEFINE_string(
  'dataset',
  'mnist1d',
  "'mnist1d' (generated locally), 'digits' (scikit-learn), or a path to a .npz file "
  '(arrays x, y; optional x_test, y_test) or a SIGNS-layout .h5 file.',
)
DEV_FRACTION = flags.DEFINE_float(
  'dev_fraction', 0.1, 'Share of the training split held out as the dev set.'
)
SEED = flags.DEFINE_integer(
  'seed', 0, 'Seed of every random choice (data split aside): an integer in [0, 2**64).'
)

# The library's errors for bad input: each has a one-line message naming the fix.
LIBRARY_ERRORS = (
  registry.HyperparameterError,  # and its bnjax.space.SpaceError
  data.DataError,
  files.OutputError,
  search.SearchError,
)

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


def run(main) -> None:
  """`app.run(main)`, with every bad flag or input as one `error: ...` line and exit status 1."""
  app.run(errors_as_messages(main), flags_parser=parse_flags)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad flag as one line (absl writes two)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    raise SystemExit(f'error: {one_line(error)}; see --help') from None


def errors_as_messages(main):
  """`main`, with the library's errors for bad input (`LIBRARY_ERRORS`) as `error: ...` exits."""

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except LIBRARY_ERRORS as error:
      raise SystemExit(f'error: {one_line(error)}') from None

  return wrapped


def one_line(error: BaseException) -> str:
  return ' '.join(str(error).split())


def fail(message: str) -> None:
  """Exits with status 1 and `error: message` on stderr, after whatever stdout holds."""
  sys.stdout.flush()
  raise SystemExit(f'error: {message}')

"""What the launchers share: data set, seed, output and process flags, flags from the registry.

`run(main)` starts a launcher so that whatever a user can type ends in one
line on stderr, `error: ...`, and a non-zero exit, never a traceback: a flag
absl cannot parse, and every error the library raises for bad input
(`LIBRARY_ERRORS`), wherever in `main` it comes from. Before `main`, it
joins the other processes of a search that spans several (`--num_processes`
or `--distributed`, see `bnjax.distributed`).
"""

import functools
import logging
import os
import sys

import jax
from absl import app, flags

from bnjax import data, distributed, files, registry, search

DATASET = flags.DEFINE_string(
  'dataset',
  'mnist1d',
  "'mnist1d' (generated locally), 'digits' (scikit-learn), or a path to a .npz file "
  '(arrays x, y; optional x_test, y_test), a SIGNS-layout .h5 file, or a folder of images '
  '(one subfolder per class; optional train/, validation/, test/ splits).',
)
IMAGE_SIZE = flags.DEFINE_integer(
  'image_size', 64, 'Image folders: every image is resized to this many pixels square.'
)
DEV_FRACTION = flags.DEFINE_float(
  'dev_fraction', 0.1, 'Share of the training split held out as the dev set.'
)
SEED = flags.DEFINE_integer(
  'seed', 0, 'Seed of every random choice (data split aside): an integer in [0, 2**64).'
)
COMPILE_CACHE = flags.DEFINE_boolean(
  'compile_cache',
  True,
  "Keep compiled programs in --compile_cache_dir (JAX's persistent compilation cache), so that "
  'a rerun, a resumed search or one with the same shapes skips compiling (about 10 s a program '
  'on a CPU); --nocompile_cache turns it off.',
)
COMPILE_CACHE_DIR = flags.DEFINE_string(
  'compile_cache_dir',
  os.path.join('~', '.cache', 'bnjax', 'jax'),
  'Where --compile_cache keeps the compiled programs (safe to delete).',
)

COORDINATOR_ADDRESS = flags.DEFINE_string(
  'coordinator_address',
  None,
  'Several processes, one search: host:port where process 0 serves the others (its address '
  'as they reach it, any free port). With --num_processes and --process_id; all three may be '
  'left out under --distributed.',
)
NUM_PROCESSES = flags.DEFINE_integer(
  'num_processes', None, 'Several processes, one search: how many take part.'
)
PROCESS_ID = flags.DEFINE_integer(
  'process_id', None, "Several processes, one search: this one's index, 0 to num_processes - 1."
)
DISTRIBUTED = flags.DEFINE_boolean(
  'distributed',
  False,
  'Several processes, one search, with the three settings above read from the cluster by JAX '
  '(SLURM, a Cloud TPU pod slice, Open MPI) where they are not given.',
)
HEARTBEAT_TIMEOUT = flags.DEFINE_integer(
  'heartbeat_timeout',
  100,
  'Several processes: seconds after which a silent process counts as dead and the others stop.',
)

# The library's errors for bad input: each has a one-line message naming the fix.
LIBRARY_ERRORS = (
  registry.HyperparameterError,  # and its bnjax.space.SpaceError
  data.DataError,
  files.OutputError,
  search.SearchError,
  search.LedgerError,  # a storage that cannot hold the study
  search.CheckpointError,  # a population checkpoint that is not bnjax's
  distributed.DistributedError,
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
  """The output directory, created and writable, checked before any compute (by process 0 alone)."""
  if not distributed.is_writer():
    return path  # several processes, one search: process 0 writes, on its own disk
  try:
    return files.check_output_dir(path)
  except files.OutputError as error:
    raise SystemExit(f'error: {error}') from None


def load_data() -> data.Splits:
  """The data set the flags name; a bad file stops with one line."""
  try:
    return data.load(DATASET.value, dev_fraction=DEV_FRACTION.value, image_size=IMAGE_SIZE.value)
  except data.DataError as error:
    raise SystemExit(f'error: {error}') from None


def describe(splits: data.Splits) -> str:
  return (
    f'{splits.name}: {len(splits.y_train)} train / {len(splits.y_dev)} dev / '
    f'{len(splits.y_test)} test, {splits.num_features} features '
    f'({"x".join(map(str, splits.input_shape))}), {splits.num_classes} classes'
  )


def run(main) -> None:
  """`app.run(main)`, with every bad flag or input as one `error: ...` line and exit status 1.

  The compilation cache (`--compile_cache`) is on before `main` compiles anything.
  """
  app.run(errors_as_messages(with_compile_cache(with_processes(main))), flags_parser=parse_flags)


def with_processes(main):
  """`main`, run after joining the other processes (if the flags name any), before any device use.

  Process 0 prints; the others keep stdout quiet (their results are the
  same) and say only errors. A process that loses the others stops with one
  line saying how to resume, as does a single process after a crash: start
  every process again with the same flags, and the search resumes from
  process 0's ledger.
  """

  @functools.wraps(main)
  def wrapped(argv):
    try:
      started = distributed.initialize(
        coordinator_address=COORDINATOR_ADDRESS.value,
        num_processes=NUM_PROCESSES.value,
        process_id=PROCESS_ID.value,
        detect=DISTRIBUTED.value,
        heartbeat_timeout=HEARTBEAT_TIMEOUT.value,
      )
    except distributed.DistributedError as error:
      fail(str(error))
    except (RuntimeError, ValueError) as error:  # jax's: no cluster found, a refused connection
      fail(f'cannot join the other processes: {one_line(error)}')
    if not started or not distributed.is_multiprocess():
      return main(argv)
    me, count = jax.process_index(), jax.process_count()
    resume = f'start all {count} processes again with the same flags'
    print(
      f'process {me} of {count}: {jax.local_device_count()} of {jax.device_count()} devices; '
      f'if a process dies the others stop within --heartbeat_timeout={HEARTBEAT_TIMEOUT.value} s, '
      f'and to resume, {resume}',
      file=sys.stderr,
      flush=True,
    )
    if not distributed.is_writer():
      sys.stdout.flush()  # the descriptor, so that what C++ prints (Gloo) goes too
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    try:
      return main(argv)
    except jax.errors.JaxRuntimeError as error:
      sys.stderr.write(
        f'error: process {me} of {count}: a step across processes failed '
        f'({one_line(error)[:300]}). If another process died, every trial told so far is in '
        f"process 0's ledger: to resume, {resume}.\n"
      )
      sys.stderr.flush()
      # The runtime cannot shut down cleanly without its peers; leave now, not after its timeout.
      os._exit(1)

  return wrapped


def with_compile_cache(main):
  """`main`, run with JAX's persistent compilation cache in `--compile_cache_dir` (if on)."""

  @functools.wraps(main)
  def wrapped(argv):
    if COMPILE_CACHE.value:
      jax.config.update('jax_compilation_cache_dir', os.path.expanduser(COMPILE_CACHE_DIR.value))
      # Cache every program that takes a noticeable time to build, not only those over 1 s.
      jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.1)
    return main(argv)

  return wrapped


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

r"""Hyperparameter search: hundreds of BN-MLPs trained at once, one command.

  python experiments/random_search.py                       # MNIST-1D, defaults
  python experiments/random_search.py --dataset=digits --num_trials=64 --output_dir=runs/digits
  python experiments/random_search.py --output_dir=runs/notes_space \
      --space='learning_rate=log:1e-4:1,beta1=1mlog:0.9:0.999,hidden_units=int:50:100'
  python experiments/random_search.py --strategy=coarse_to_fine --rounds=3 --output_dir=runs/c2f
  python experiments/random_search.py --strategy=bayes --num_trials=48 --output_dir=runs/bayes
  python experiments/random_search.py --cv=5 --output_dir=runs/cv5   # 5-fold selection
  python experiments/random_search.py --strategy=hyperband --max_epochs=27 --output_dir=runs/hb
  python experiments/random_search.py --strategy=pbt --population_size=16 --output_dir=runs/pbt
  python experiments/random_search.py --model=cnn --output_dir=runs/cnn   # BN conv nets

Each search keeps its own output directory: one that holds another search's
study is refused with a message (a different data set, space or epochs would
mix two studies).

Selection uses the dev split only; the top configurations are evaluated on the
test split once, at the end. Writes <output_dir>/results.csv (one row per
trial), best.json and the plots. Exits non-zero if every trial diverged.

Hyperband (Li et al. 2018) runs brackets of successive halving from
--min_epochs to --max_epochs, keeping the top 1/--eta of each rung; pruned
trials are rows with status 'pruned' and the epochs they reached. PBT
(Jaderberg et al. 2017) trains --population_size members of one bucket for
--epochs, and every --ready epochs the bottom --quantile_fraction copy the
top's state and hyperparameters and perturb them (Ray Tune's defaults); it
also writes lineage.csv, and the winner's schedule.csv and schedule.png, which
`experiments/train.py --schedule=<output_dir>/best.json` replays. Both keep
their population checkpointed in <output_dir>/population.msgpack at each
rung or generation: rerun the same command after a crash and they go on from
there.

The search is an Optuna study kept in <output_dir>/study.journal: rerun the
same command after a crash or Ctrl-C and it resumes (trials done are kept,
the ones cut off run again with the same results). Several workers share one
study through --storage (e.g. postgresql+psycopg://user@host/db) and
--study_name; `optuna-dashboard <storage>` shows it live.
"""

import math
import os
import shlex
import sys
import time

if __package__ in (None, ''):  # Run as a script: make `experiments` importable.
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
from absl import flags

from bnjax import distributed, registry, search
from bnjax.space import Space, SpaceError
from experiments import common

SPACE = flags.DEFINE_string(
  'space',
  search.DEFAULT_SPACE,
  'The search space: comma-separated name=KIND:ARGS with kinds uniform:LOW:HIGH, '
  'log:LOW:HIGH (10**r), 1mlog:LOW:HIGH (beta = 1 - 10**r), int:LOW:HIGH, intlog:LOW:HIGH, '
  'choice:A|B|C, fixed:V; or a path to a .json space. Names not given take their defaults '
  '(bnjax.space.DEFAULTS). Default: the MLP space, or with --model=cnn bnjax.search.'
  'DEFAULT_CNN_SPACE.',
)
# Registry entries that fix a name in --space: --model also picks the default
# space; --matmul_dtype=bfloat16 is the fast choice on CPUs with AMX.
FIXING = common.define_hyperparameter_flags(('model', 'matmul_dtype'))
MODEL = FIXING['model']
STRATEGY = flags.DEFINE_enum('strategy', 'random', search.STRATEGIES, 'How trials are chosen.')
NUM_TRIALS = flags.DEFINE_integer('num_trials', 24, 'Trials (per round for coarse_to_fine).')
EPOCHS = flags.DEFINE_integer('epochs', 40, 'Epochs per trial.')
EXECUTIONS = flags.DEFINE_integer(
  'executions_per_trial', 1, 'Seeds per configuration; rows report mean and spread.'
)
SELECT = flags.DEFINE_enum(
  'select',
  'final',
  ['final', 'best'],
  "Rank by the final epoch's dev accuracy or the best epoch's.",
)
TOP_K = flags.DEFINE_integer('top_k', 10, 'Configurations shown and evaluated on test.')
CHUNK_SIZE = flags.DEFINE_integer(
  'chunk_size',
  0,
  'Runs per program; 0: from the bucket and the devices only (on a CPU as many as keep their '
  'training state in the last-level cache, 1 to 8; else from memory), so a trial gives the same '
  'numbers whatever --num_trials is.',
)
WIDTH_RATIO = flags.DEFINE_string(
  'width_ratio',
  None,
  "How trials of one static setting split into buckets (compiled programs): 'cost' (the split "
  'that prices compiles, chunk filler and padding lowest; the default where the strategy takes '
  'it: random, grid, coarse_to_fine, bayes, hyperband), a number (no trial padded wider than '
  "that many times its width) or 'none' (one bucket).",
)
SEGMENT_EPOCHS = flags.DEFINE_integer(
  'segment_epochs',
  0,
  'Epochs between checkpoints of a chunk in flight (a kill -9 loses at most that many of each); '
  '0: about 10, dividing --epochs where it can. The numbers do not depend on it.',
)
CONCURRENT_CHUNKS = flags.DEFINE_integer(
  'concurrent_chunks',
  0,
  'Chunks trained at once, each in its own thread; 0: 2 on a single CPU device (the second '
  'fills the cores the first leaves idle), else 1. The numbers do not depend on it.',
)
POINTS = flags.DEFINE_integer('points_per_axis', 3, 'grid: values per searched name.')
ROUNDS = flags.DEFINE_integer('rounds', 2, 'coarse_to_fine: rounds.')
KEEP = flags.DEFINE_float('keep', 0.1, 'coarse_to_fine: share of trials the next round centres on.')
SHRINK = flags.DEFINE_float('shrink', 0.5, 'coarse_to_fine: range shrink per round.')
OUTPUT_DIR = flags.DEFINE_string(
  'output_dir',
  'runs/random_search',
  'Where results.csv, best.json, the plots and the study (study.journal) go; rerunning with '
  'the same directory resumes the study there.',
)
STORAGE = flags.DEFINE_string(
  'storage',
  None,
  'An Optuna storage URL (postgresql+psycopg://user@host/db, sqlite:///x.db) or a .journal '
  'file, shared by several workers; default: <output_dir>/study.journal.',
)
STUDY_NAME = flags.DEFINE_string('study_name', None, "The study in --storage (default 'bnjax').")
SAMPLER = flags.DEFINE_string(
  'sampler', 'tpe', "bayes: 'tpe', 'gp' (pip install 'bnjax[gp]') or an optuna.samplers class."
)
CV = flags.DEFINE_integer(
  'cv',
  0,
  'K-fold cross-validated selection: train and dev pooled into K stratified folds (fixed '
  'seed), every configuration trained on each, ranked by the mean dev accuracy over folds '
  '(spread in dev_accuracy_std); the top k tested once by the fold ensemble. Runs in memory: '
  'no study, so no resume and no --storage. 0: the dev split selects.',
)
TRIALS_PER_ROUND = flags.DEFINE_integer(
  'trials_per_round', 0, 'bayes: trials asked and trained together; 0: 8 on a CPU, else memory.'
)
MIN_EPOCHS = flags.DEFINE_integer('min_epochs', 1, 'hyperband: epochs of the first rung.')
MAX_EPOCHS = flags.DEFINE_integer(
  'max_epochs', 0, 'hyperband: epochs of the last rung (the most a trial trains); 0: --epochs.'
)
ETA = flags.DEFINE_integer('eta', 3, 'hyperband: each rung keeps the top 1/eta.')
POPULATION_SIZE = flags.DEFINE_integer('population_size', 16, 'pbt: members of the population.')
READY = flags.DEFINE_integer('ready', 4, 'pbt: epochs between exploits (a divisor of --epochs).')
QUANTILE_FRACTION = flags.DEFINE_float(
  'quantile_fraction', 0.25, 'pbt: the bottom share copies the top share (Ray Tune: 0.25).'
)
PERTURBATION_FACTORS = flags.DEFINE_list(
  'perturbation_factors',
  ['0.8', '1.2'],
  'pbt: explore multiplies each value (on its scale) by one of these (Ray Tune: 0.8,1.2).',
)
RESAMPLE_PROBABILITY = flags.DEFINE_float(
  'resample_probability', 0.25, 'pbt: the chance explore draws a value anew (Ray Tune: 0.25).'
)


class ProgressBar:
  """`[#####-----] 12/48 trials  0.9 trials/s  ETA 40 s` on one line of stderr."""

  def __init__(self, width: int = 30):
    self.width, self.start = width, time.perf_counter()

  def __call__(self, done: int, total: int) -> None:
    elapsed = time.perf_counter() - self.start
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else math.inf
    filled = int(self.width * done / total)
    sys.stderr.write(
      f'\r[{"#" * filled}{"-" * (self.width - filled)}] {done}/{total} trials  '
      f'{rate:.2f} trials/s  ETA {eta:.0f} s   '
    )
    if done == total:
      sys.stderr.write('\n')
    sys.stderr.flush()


def space_of_flags() -> Space:
  """--space, or the default space of --model, with the names --model and --matmul_dtype fix."""
  fixed = {name: holder.value for name, holder in FIXING.items() if flags.FLAGS[name].present}
  if not flags.FLAGS['space'].present:
    space = search.as_space(search.DEFAULT_CNN_SPACE if MODEL.value == 'cnn' else SPACE.value)
    fixed.pop('model', None)  # it picked the space
  else:
    space = search.as_space(SPACE.value)
  model = space.get('model')
  for name in fixed:
    if name in space:
      raise SpaceError(f'--space names {name} and so does --{name}: name it in one of them')
    if model is not None and model.kind == 'fixed' and not registry.used_by(name, model.value):
      raise SpaceError(f'--{name} does not apply to model={model.value}: drop it')
  return Space({**fixed, **space}) if fixed else space


def width_ratio_of_flag(value: str) -> float | str | None:
  if value == 'none':
    return None
  if value == 'cost':
    return value
  try:
    return float(value)
  except ValueError:
    common.fail(f"--width_ratio takes 'cost', a number >= 1 or 'none'; got {value}")


def strategy_options(strategy: str, output_dir: str) -> dict:
  """The options `search.run(strategy, ...)` takes, from the flags; a flag it ignores exits."""
  options = dict(
    seed=common.SEED.value,
    epochs=EPOCHS.value,
    executions_per_trial=EXECUTIONS.value,
    select=SELECT.value,
    top_k=TOP_K.value,
    chunk_size=CHUNK_SIZE.value or None,
    segment_epochs=SEGMENT_EPOCHS.value or None,
    concurrent_chunks=CONCURRENT_CHUNKS.value or None,
    output_dir=output_dir,
    storage=STORAGE.value,
    study_name=STUDY_NAME.value,
    report=print,
  )
  options |= {name: flags.FLAGS[name].value for name in search.STRATEGY_OPTIONS[strategy]}
  if WIDTH_RATIO.present:
    options['width_ratio'] = width_ratio_of_flag(WIDTH_RATIO.value)
  if 'trials_per_round' in options:
    options['trials_per_round'] = options['trials_per_round'] or None
  if strategy == 'hyperband':
    options['max_epochs'] = MAX_EPOCHS.value or EPOCHS.value
  if strategy == 'pbt':
    try:
      options['perturbation_factors'] = tuple(float(f) for f in PERTURBATION_FACTORS.value)
    except ValueError:
      common.fail(
        f'--perturbation_factors takes numbers, e.g. 0.8,1.2; got {PERTURBATION_FACTORS.value}'
      )
  if CV.value:  # in memory, no study: the output directory only receives the files
    if STORAGE.value or STUDY_NAME.value:
      common.fail('--cv runs in memory, outside a study; drop --storage and --study_name')
    for name in search.STUDY_OPTIONS:
      options.pop(name, None)
    options['cv'] = CV.value
  allowed = search.allowed_options(strategy)
  for name in list(options):
    if name not in allowed:
      if name in flags.FLAGS and flags.FLAGS[name].present:
        common.fail(f'--{name} does not apply to --strategy={strategy}; leave it out')
      del options[name]
  return options


def main(argv):
  del argv
  output_dir = common.output_dir_or_exit(OUTPUT_DIR.value)
  options = strategy_options(STRATEGY.value, output_dir)
  try:
    space = space_of_flags()
    search.check(STRATEGY.value, space, **options)
    search.check_storage(STORAGE.value)
  except ValueError as error:  # the checks only validate: any ValueError there is bad input
    raise SystemExit(f'error: {error}') from None
  splits = common.load_data()
  print(common.describe(splits))
  print(
    f'{STRATEGY.value} search on {len(jax.devices())} {jax.default_backend()} device(s); '
    f'space: {space.to_spec()}'
  )
  try:
    progress = ProgressBar() if distributed.is_writer() else None  # one bar, process 0's
    results = search.run(STRATEGY.value, space, splits, progress=progress, **options)
  except KeyboardInterrupt:
    command = shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])
    lost = (
      'the training since the last population checkpoint was dropped'
      if STRATEGY.value in search.POPULATION_STRATEGIES
      else 'the chunks in flight lost what they trained since their last saved segment'
    )
    print(
      f'\ninterrupted: {lost}, every trial told so far is kept in the study; to resume, '
      f'rerun: python {command}',
      file=sys.stderr,
    )
    raise SystemExit(130) from None
  info = results.info
  print(
    f'{len(results)} trials in {info["seconds"]:.1f} s ({info["buckets"]} bucket(s), '
    f'{info["compiles"]} compile(s), {info["chunks"]} chunk(s))'
  )
  if STRATEGY.value in search.POPULATION_STRATEGIES:
    share = info['checkpoint_seconds'] / max(info['seconds'], 1e-9)
    print(
      f'{info["trial_epochs"]} trial-epochs; {info["checkpoints"]} checkpoint(s) in '
      f'{info["checkpoint_seconds"]:.1f} s ({100 * share:.1f}% of the search)'
    )
  print(results.summary(TOP_K.value))
  try:
    paths = results.save(output_dir, dataset=splits.name, strategy=STRATEGY.value)
  except OSError as error:  # a full disk, say: each file there is whole, old or new
    raise SystemExit(
      f'error: cannot write the results to {output_dir!r} ({error.strerror or error}); '
      'free some space or choose another --output_dir'
    ) from None
  print(f'wrote {output_dir}/{", ".join(os.path.basename(path) for path in paths)}')
  if results.all_diverged():
    raise SystemExit(
      f'error: all {len(results)} trials diverged; lower the learning_rate range of --space'
    )
  winner = results.best(1)[0]
  print(
    f'winner: trial {winner["trial_id"]}  dev_accuracy {winner["dev_accuracy"]:.4f}  '
    f'test_accuracy {winner["test_accuracy"]:.4f}  (dev selects, test measured once)'
  )


if __name__ == '__main__':
  common.run(main)

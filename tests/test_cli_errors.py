"""Bad input at the launchers: one `error: ...` line, a non-zero exit, and nothing lost.

Each case below is something a user can type. It must end in a non-zero exit
status and exactly one line on stderr, `error: ...`, that names the problem
(its key word is checked), with no traceback; and an output directory that
held a previous run's results must hold the same bytes afterwards.

Importing JAX costs seconds, so each launcher runs its whole table in one
process: this file, run as a script, is the driver. Between cases it resets
absl's flags and calls the launcher the way `common.run` does
(`common.parse_flags`, then `common.errors_as_messages(main)`), capturing the
exit status, stdout and stderr. Two cases also run through the real entry
point (`app.run`), as a user starts it. `pytest -v` prints the whole table.
"""

import contextlib
import csv
import io
import json
import os
import pathlib
import subprocess
import sys
import time
import traceback

import numpy as np
import pytest
from test_launchers import read_json, user_env

ROOT = pathlib.Path(__file__).resolve().parents[1]
SENTINEL = {'results.csv': 'trial_id,dev_accuracy\n0,0.5\n', 'best.json': '{"trial_id": 0}\n'}

# (id, flags, key word of the one line). Placeholders: {file} an existing file,
# {readonly} a directory nobody may write to, {out} the case's own output
# directory (with a previous run's results; every case gets one unless it
# names --output_dir), {fresh} a directory that does not exist yet, {bad_npz}
# an .npz whose x_test is narrower than x, {bad_json} a .json space that is not JSON.
TRAIN = '--dataset=digits --epochs=1 --hidden_sizes=16'
TRAIN_CASES = [
  ('hidden_sizes_empty', '--hidden_sizes=', 'hidden_sizes'),
  ('hidden_sizes_negative', '--hidden_sizes=-5', 'hidden_sizes'),
  ('hidden_sizes_zero', '--hidden_sizes=16,0', 'hidden_sizes'),
  ('hidden_sizes_text', '--hidden_sizes=wide', 'hidden_sizes'),
  ('epochs_zero', '--epochs=0', 'epochs'),
  ('epochs_text', '--epochs=ten', 'epochs'),
  ('batch_size_zero', '--batch_size=0', 'batch_size'),
  ('batch_size_above_train', '--batch_size=100000', 'batch_size'),
  ('seed_negative', '--seed=-1', 'seed'),
  ('seed_65_bits', '--seed=18446744073709551616', 'seed'),
  ('dev_fraction', '--dev_fraction=1.5', 'dev_fraction'),
  ('dataset_missing', '--dataset=/nonexistent.npz', 'nonexistent'),
  ('dataset_x_test_width', '--dataset={bad_npz}', 'x_test'),
  ('output_dir_is_file', '--output_dir={file}', 'is a file'),
  ('output_dir_under_file', '--output_dir={file}/sub', 'output directory'),
  ('output_dir_read_only', '--output_dir={readonly}', 'output directory'),
  ('learning_rate_nan', '--learning_rate=nan', 'learning_rate'),
  ('beta1_one', '--beta1=1.0', 'beta1'),
  ('beta2_above_one', '--beta2=1.5', 'beta2'),
  ('l2_negative', '--l2=-1', 'l2'),
  ('bn_momentum_above_one', '--bn_momentum=1.5', 'bn_momentum'),
  ('lr_decay_negative', '--lr_decay=-0.5', 'lr_decay'),
  ('exponential_decay_two', '--lr_schedule=exponential --lr_decay=2', 'lr_decay'),
  ('keep_prob_zero', '--keep_prob=0', 'keep_prob'),
  ('optimizer_unknown', '--optimizer=adamw', 'optimizer'),
  ('flag_unknown', '--learning_rat=0.1', 'learning_rat'),
  ('network_too_big', '--hidden_sizes=1000000,1000000', 'GiB'),
  ('diverged', '--optimizer=sgd --learning_rate=1e30 --output_dir={fresh}', 'diverged'),
]
SEARCH = '--dataset=digits --epochs=1 --num_trials=2'
SEARCH_CASES = [
  ('top_k_zero', '--top_k=0', 'top_k'),
  ('top_k_negative', '--top_k=-3', 'top_k'),
  ('chunk_size_negative', '--chunk_size=-1', 'chunk_size'),
  ('seed_negative', '--seed=-1', 'seed'),
  ('seed_65_bits', '--seed=18446744073709551616', 'seed'),
  ('dev_fraction', '--dev_fraction=1.5', 'dev_fraction'),
  ('space_garbage', '--space=garbage', 'garbage'),
  ('space_file_missing', '--space=/nonexistent.json', 'nonexistent'),
  ('space_file_not_json', '--space={bad_json}', 'JSON'),
  ('space_log_of_zero', '--space=learning_rate=log:0:1', 'learning_rate'),
  ('space_unknown_name', '--space=lerning_rate=log:1e-3:1e-1', 'lerning_rate'),
  ('shrink_zero', '--strategy=coarse_to_fine --shrink=0', 'shrink'),
  ('shrink_two', '--strategy=coarse_to_fine --shrink=2', 'shrink'),
  ('keep_zero', '--strategy=coarse_to_fine --keep=0', 'keep'),
  ('rounds_zero', '--strategy=coarse_to_fine --rounds=0', 'rounds'),
  ('num_trials_zero', '--num_trials=0', 'num_trials'),
  ('num_trials_ten_million', '--num_trials=10000000', 'num_trials'),
  ('points_per_axis_zero', '--strategy=grid --points_per_axis=0', 'points_per_axis'),
  ('grid_too_large', '--strategy=grid --points_per_axis=1000', 'grid'),
  ('epochs_zero', '--epochs=0', 'epochs'),
  ('executions_zero', '--executions_per_trial=0', 'executions_per_trial'),
  ('select_unknown', '--select=last', 'select'),
  ('width_ratio_text', '--width_ratio=wide', 'width_ratio'),
  ('width_ratio_below_one', '--width_ratio=0.5', 'width_ratio'),
  ('width_ratio_pbt', '--strategy=pbt --width_ratio=1.5', 'width_ratio'),
  ('strategy_unknown', '--strategy=annealing', 'strategy'),
  ('dataset_missing', '--dataset=/nonexistent.npz', 'nonexistent'),
  ('dataset_x_test_width', '--dataset={bad_npz}', 'x_test'),
  ('output_dir_is_file', '--output_dir={file}', 'is a file'),
  ('output_dir_under_file', '--output_dir={file}/sub', 'output directory'),
  ('output_dir_read_only', '--output_dir={readonly}', 'output directory'),
  ('batch_size_above_train', '--space=batch_size=fixed:100000', 'batch_size'),
  ('trial_too_big', '--space=hidden_units=fixed:1000000', 'GiB'),
  # 100000 trials must be planned, not hang: here each is too big, so the plan says so at
  # once (test_search_engine.py checks the plan of 100000 trials that do fit).
  ('many_trials_too_big', '--num_trials=100000 --space=hidden_units=fixed:1000000', 'GiB'),
  # coarse_to_fine's later rounds may draw the widest trial: it must fit before round 0.
  (
    'later_round_too_big',
    '--strategy=coarse_to_fine --space=hidden_units=int:8:100000',
    'GiB',
  ),
  (
    'all_diverged',
    '--space=learning_rate=fixed:1e30,optimizer=fixed:sgd,hidden_units=fixed:8,'
    'num_layers=fixed:1 --output_dir={fresh}',
    'diverged',
  ),
]
LAUNCHERS = {
  'train.py': (TRAIN, TRAIN_CASES),
  'random_search.py': (SEARCH, SEARCH_CASES),
}
# Through the real entry point (`app.run`), as a user starts it: (launcher, case id).
REAL = [('train.py', 'beta1_one'), ('random_search.py', 'select_unknown')]
CASES = [(launcher, case) for launcher, (_, cases) in LAUNCHERS.items() for case in cases]


def snapshot(directory: pathlib.Path) -> dict[str, bytes]:
  return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def make_places(root: pathlib.Path) -> dict[str, str]:
  """The placeholders' files and directories under `root`."""
  afile = root / 'a_file'
  afile.write_text('not a directory\n')
  readonly = root / 'readonly'
  readonly.mkdir()
  readonly.chmod(0o500)
  if os.access(readonly, os.W_OK):  # root writes anywhere: a path under a file fails alike
    readonly = afile / 'readonly'
  bad_npz = root / 'bad.npz'
  rng = np.random.default_rng(0)
  np.savez(
    bad_npz,
    x=rng.normal(size=(40, 4)),
    y=np.arange(40) % 2,
    x_test=rng.normal(size=(10, 3)),
    y_test=np.arange(10) % 2,
  )
  bad_json = root / 'space.json'
  bad_json.write_text('{"learning_rate": {"kind": "log", "low": 1e-3,')
  return {
    'file': str(afile),
    'readonly': str(readonly),
    'bad_npz': str(bad_npz),
    'bad_json': str(bad_json),
  }


def case_argv(base: str, flags: str, places: dict, out: pathlib.Path, fresh: pathlib.Path):
  argv = [*base.split(), *flags.split()]
  if not any(arg.startswith('--output_dir=') for arg in argv):
    argv.append('--output_dir={out}')
  return [arg.format(**places, out=out, fresh=fresh) for arg in argv]


@pytest.fixture(scope='module')
def outcomes(tmp_path_factory):
  """Every case run: (launcher, id) -> {'code', 'stdout', 'stderr', 'seconds', dirs}."""
  root = tmp_path_factory.mktemp('cli_errors')
  places = make_places(root)
  plans, processes = {}, {}
  for launcher, (base, cases) in LAUNCHERS.items():
    plan = []
    for case, flags, _ in cases:
      out, fresh = root / launcher / case / 'out', root / launcher / case / 'fresh'
      out.mkdir(parents=True)
      for name, text in SENTINEL.items():
        (out / name).write_text(text)
      plan.append({'id': case, 'argv': case_argv(base, flags, places, out, fresh)})
      plans[launcher, case] = {'out': out, 'fresh': fresh, 'before': snapshot(out)}
    table = root / f'{launcher}.cases.json'
    table.write_text(json.dumps(plan))
    processes[launcher] = subprocess.Popen(
      [sys.executable, __file__, launcher, str(table), str(root / f'{launcher}.outcomes.json')],
      cwd=ROOT,
      env=user_env(),
    )
  real = {}
  for launcher, case in REAL:
    base, cases = LAUNCHERS[launcher]
    flags = next(flags for name, flags, _ in cases if name == case)
    out = root / 'real' / launcher / case
    out.mkdir(parents=True)
    real[launcher, case] = (
      out,
      subprocess.Popen(
        [sys.executable, str(ROOT / 'experiments' / launcher)]
        + case_argv(base, flags, places, out, out / 'fresh'),
        cwd=ROOT,
        env=user_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      ),
    )
  for launcher, process in processes.items():
    assert process.wait(timeout=300) == 0, f'the {launcher} driver failed'
  results = {}
  for launcher in LAUNCHERS:
    table = json.loads((root / f'{launcher}.outcomes.json').read_text())
    for outcome in table:
      results[launcher, outcome['id']] = {**outcome, **plans[launcher, outcome['id']]}
  for (launcher, case), (out, process) in real.items():
    stdout, stderr = process.communicate(timeout=300)
    results['real ' + launcher, case] = {
      'code': process.returncode,
      'stdout': stdout,
      'stderr': stderr,
      'out': out,
      'before': {},
    }
  return results


def messages(stderr: str) -> list[str]:
  """stderr's lines, less the search's progress bar (redrawn with \\r)."""
  return [line for line in stderr.splitlines() if line.strip() and not line.startswith('[')]


def is_clear(outcome: dict, keyword: str) -> bool:
  lines = messages(outcome['stderr'])
  return (
    outcome['code'] not in (0, None)
    and len(lines) == 1
    and lines[0].startswith('error: ')
    and keyword.lower() in lines[0].lower()
    and 'Traceback' not in outcome['stderr']
  )


@pytest.mark.parametrize('launcher, case', CASES, ids=[f'{name}:{case[0]}' for name, case in CASES])
def test_bad_input_ends_in_one_clear_line(outcomes, launcher, case):
  name, _, keyword = case
  outcome = outcomes[launcher, name]
  stderr = outcome['stderr']
  assert 'Traceback' not in stderr, stderr
  assert outcome['code'] not in (0, None), (outcome['code'], outcome['stdout'][-2000:])
  lines = messages(stderr)
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr
  assert keyword.lower() in lines[0].lower(), lines[0]
  if name not in ('diverged', 'all_diverged'):
    assert not any(line.startswith('[') for line in stderr.splitlines()), 'no trial ran'
  # The previous run's results are where they were, byte for byte.
  assert snapshot(outcome['out']) == outcome['before']


def test_a_diverged_run_writes_strict_json_with_nulls(outcomes):
  metrics = read_json(outcomes['train.py', 'diverged']['fresh'] / 'metrics.json')
  assert metrics['status'] == 'diverged' and metrics['diverged_step'] >= 0
  assert metrics['test_accuracy'] is None and metrics['dev_accuracy'] is None


def test_an_all_diverged_search_writes_strict_json_with_nulls(outcomes):
  fresh = outcomes['random_search.py', 'all_diverged']['fresh']
  best = read_json(fresh / 'best.json')
  assert best['status'] == 'all_diverged'
  assert best['trial_id'] is None and best['dev_accuracy'] is None
  assert best['test_accuracy'] is None and best['hyperparameters'] is None
  with open(fresh / 'results.csv', newline='') as f:
    assert [row['status'] for row in csv.DictReader(f)] == ['diverged', 'diverged']


@pytest.mark.parametrize('launcher, case', REAL, ids=[f'{name}:{case}' for name, case in REAL])
def test_the_real_entry_point_prints_one_line_too(outcomes, launcher, case):
  keyword = next(word for name, _, word in LAUNCHERS[launcher][1] if name == case)
  outcome = outcomes['real ' + launcher, case]
  assert is_clear(outcome, keyword), outcome['stderr']


def test_every_bad_input_gets_a_clear_error(outcomes, request, capsys):
  """The table in one view: how many cases end in one clear line (`pytest -v` lists them)."""
  rows = [
    (launcher, name, is_clear(outcomes[launcher, name], keyword), outcomes[launcher, name])
    for launcher, (name, _, keyword) in CASES
  ]
  clear = sum(ok for *_, ok, _ in rows)
  with capsys.disabled():
    print(f'\nbad-input table: {clear} of {len(rows)} cases end in one clear error line')
    if request.config.getoption('verbose') > 0:
      for launcher, name, ok, outcome in rows:
        line = (messages(outcome['stderr']) or ['(nothing on stderr)'])[0]
        print(f'  {"ok  " if ok else "FAIL"} {launcher:16s} {name:24s} {line[:110]}')
  assert clear == len(rows)


@pytest.mark.parametrize(
  'raised, clear',
  [
    ("search.LedgerError('the journal is locked; stop the other writer')", True),
    ("search.CheckpointError('ckpt is not a bnjax population checkpoint')", True),
    ("ValueError('a bug deep in the engine')", False),
  ],
  ids=['ledger', 'checkpoint', 'bug'],
)
def test_only_the_librarys_errors_from_inside_a_search_become_one_line(raised, clear, tmp_path):
  """A bad-input error raised while the search runs is one line; any other keeps its traceback."""
  script = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from bnjax import search
from experiments import common, random_search

def run(*args, **kwargs):
  raise {raised}

search.run = run
argv = [sys.argv[0], '--dataset=digits', '--num_trials=2', '--output_dir={tmp_path}']
common.errors_as_messages(random_search.main)(common.parse_flags(argv))
"""
  done = subprocess.run(
    [sys.executable, '-c', script], cwd=ROOT, env=user_env(), capture_output=True, text=True
  )
  assert done.returncode == 1
  message = raised.split("'")[1]
  if clear:
    assert messages(done.stderr) == [f'error: {message}'], done.stderr
  else:
    assert 'Traceback' in done.stderr and f'ValueError: {message}' in done.stderr, done.stderr


# ----------------------------------------------------------------------------- the driver


def run_case(module, common, argv: list[str]) -> dict:
  """One launcher call as `common.run` makes it, in this process."""
  from absl import flags

  flags.FLAGS.unparse_flags()
  sys.argv = argv
  stdout, stderr = io.StringIO(), io.StringIO()
  start = time.perf_counter()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
      common.errors_as_messages(module.main)(common.parse_flags(argv))
      code = 0
    except SystemExit as exit:  # what the interpreter does with it
      code = exit.code
      if isinstance(code, str):
        print(code, file=sys.stderr)
        code = 1
      code = 0 if code is None else code
    except BaseException:
      traceback.print_exc()
      code = 1
  return {
    'code': code,
    'stdout': stdout.getvalue(),
    'stderr': stderr.getvalue(),
    'seconds': time.perf_counter() - start,
  }


def drive(launcher: str, table: str, output: str) -> None:
  import importlib

  sys.path.insert(0, str(ROOT))
  module = importlib.import_module(f'experiments.{launcher.removesuffix(".py")}')
  from experiments import common

  program = str(ROOT / 'experiments' / launcher)
  cases = json.loads(pathlib.Path(table).read_text())
  outcomes = []
  for case in cases:
    print(f'{launcher} {case["id"]} ...', file=sys.stderr, flush=True)  # shows where it hangs
    outcomes.append({'id': case['id'], **run_case(module, common, [program, *case['argv']])})
  pathlib.Path(output).write_text(json.dumps(outcomes))


if __name__ == '__main__':
  drive(*sys.argv[1:])

"""The launchers as a user runs them: a one-epoch smoke run each, and the real runs (slow).

The smoke runs are in the default suite. The `slow` ones run the launchers with
their defaults on the real data and check the accuracies the README claims;
`pytest -m slow` selects them (about 6 minutes on a 2-core CPU, plus about 10 for the
two CNN searches and several more for the population strategies' real runs).
Accuracies differ a little between machines, so the thresholds sit below the
README's numbers, at the figures it compares with.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PLOTS = ('hyperparameters.png', 'learning_curves.png', 'parallel_coordinates.png')


def _reject(constant):
  raise ValueError(f'bare {constant} in JSON: strict parsers reject it; write null')


def read_json(path: pathlib.Path):
  """JSON as strict parsers read it: NaN and Infinity are errors, not numbers."""
  return json.loads(path.read_text(), parse_constant=_reject)


def user_env() -> dict:
  """This process's environment as a user's shell has it: one CPU device, not conftest's four."""
  env = dict(os.environ)
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
    '--xla_force_host_platform_device_count=4', ''
  )
  return env


def launch(script: str, *flags: str, timeout: float) -> subprocess.CompletedProcess:
  """Runs `python experiments/<script> <flags>` from the repository root."""
  return subprocess.run(
    [sys.executable, str(ROOT / 'experiments' / script), *flags],
    cwd=ROOT,
    env=user_env(),
    capture_output=True,
    text=True,
    timeout=timeout,
  )


def succeeded(run: subprocess.CompletedProcess) -> bool:
  if run.returncode != 0:
    print(run.stdout[-3000:], run.stderr[-3000:], sep='\n')
  return run.returncode == 0


def check_search_outputs(output_dir: pathlib.Path, num_trials: int) -> dict:
  """results.csv has a row per trial, best.json is strict JSON, the plots exist."""
  with open(output_dir / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == num_trials
  assert sorted(int(row['trial_id']) for row in rows) == list(range(num_trials))
  best = read_json(output_dir / 'best.json')
  assert best['trial_id'] in range(num_trials)
  assert 0 <= best['dev_accuracy'] <= 1 and 0 <= best['test_accuracy'] <= 1
  for name in PLOTS:
    assert (output_dir / name).stat().st_size > 0, name
  return best


def test_train_smoke(tmp_path):
  run = launch(
    'train.py',
    '--dataset=digits',
    '--epochs=1',
    '--hidden_sizes=16',
    f'--output_dir={tmp_path}',
    timeout=300,
  )
  assert succeeded(run)
  metrics = read_json(tmp_path / 'metrics.json')
  assert metrics['status'] == 'ok' and metrics['dataset'] == 'digits'
  assert 0 <= metrics['dev_accuracy'] <= 1 and 0 <= metrics['test_accuracy'] <= 1
  assert 'test_accuracy' in run.stdout


def test_train_diverged_run_writes_strict_json(tmp_path):
  run = launch(
    'train.py',
    '--dataset=digits',
    '--epochs=1',
    '--hidden_sizes=16',
    '--optimizer=sgd',
    '--learning_rate=1e30',
    f'--output_dir={tmp_path}',
    timeout=300,
  )
  assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
  assert run.stderr.startswith('error: training diverged at step') and run.stderr.count('\n') == 1
  metrics = read_json(tmp_path / 'metrics.json')
  assert metrics['status'] == 'diverged'
  assert metrics['dev_accuracy'] is None and metrics['test_accuracy'] is None


def test_random_search_smoke(tmp_path):
  run = launch(
    'random_search.py',
    '--dataset=digits',
    '--num_trials=2',
    '--epochs=1',
    f'--output_dir={tmp_path / "run"}',
    f'--compile_cache_dir={tmp_path / "cache"}',
    timeout=300,
  )
  assert succeeded(run)
  check_search_outputs(tmp_path / 'run', num_trials=2)
  assert 'winner' in run.stdout
  # The compiled programs were kept for the next run (the persistent cache is on by default).
  assert any((tmp_path / 'cache').iterdir())


def test_random_search_matmul_dtype_flag_fixes_it_in_the_space(tmp_path):
  run = launch(
    'random_search.py',
    '--dataset=digits',
    '--matmul_dtype=bfloat16',
    '--num_trials=2',
    '--epochs=1',
    f'--output_dir={tmp_path / "run"}',
    '--nocompile_cache',
    timeout=300,
  )
  assert succeeded(run)
  assert 'matmul_dtype=fixed:bfloat16' in run.stdout
  with open(tmp_path / 'run' / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert [row['matmul_dtype'] for row in rows] == ['bfloat16'] * 2
  # Refused before any compute, one line each: a CNN has no MLP matmuls, and a name twice.
  for flags, message in (
    (('--model=cnn',), '--matmul_dtype does not apply to model=cnn: drop it'),
    (('--space=matmul_dtype=fixed:float32',), '--space names matmul_dtype and so does'),
  ):
    out = tmp_path / flags[0][2:7]
    run = launch(
      'random_search.py', '--matmul_dtype=bfloat16', *flags, f'--output_dir={out}', timeout=120
    )
    assert run.returncode != 0 and message in run.stdout + run.stderr, run.stderr[-2000:]
    assert not out.exists() or not any(out.iterdir())


def make_beans(root: pathlib.Path, size: int = 10) -> pathlib.Path:
  """A synthetic folder in the layout of the README's beans export: split/class/*.png."""
  from PIL import Image

  rng = np.random.default_rng(0)
  for split, count in (('train', 45), ('validation', 4), ('test', 4)):
    for label, name in enumerate(('angular_leaf_spot', 'bean_rust', 'healthy')):
      (root / split / name).mkdir(parents=True)
      for i in range(count):
        # Each class its own colour, so one epoch can learn something.
        pixels = rng.integers(0, 96, (size, size, 3)) + 80 * np.eye(3, dtype=int)[label]
        Image.fromarray(pixels.astype(np.uint8)).save(root / split / name / f'{i}.png')
  return root


def test_readme_beans_command_on_a_synthetic_folder(tmp_path):
  # The README's beans command, with a smaller image, fewer trials and one epoch.
  beans = make_beans(tmp_path / 'beans')
  run = launch(
    'random_search.py',
    '--model=cnn',
    f'--dataset={beans}',
    '--image_size=8',
    '--num_trials=2',
    '--epochs=1',
    f'--output_dir={tmp_path / "runs"}',
    timeout=300,
  )
  assert succeeded(run)
  assert 'beans: 135 train / 12 dev / 12 test, 192 features (8x8x3), 3 classes' in run.stdout
  assert 'model=fixed:cnn' in run.stdout
  check_search_outputs(tmp_path / 'runs', num_trials=2)
  assert (tmp_path / 'beans.8px.npz').is_file()  # the cache, beside the folder


def test_train_cnn_smoke(tmp_path):
  run = launch(
    'train.py',
    '--dataset=digits',
    '--model=cnn',
    '--channels=4,4',
    '--epochs=1',
    f'--output_dir={tmp_path}',
    timeout=300,
  )
  assert succeeded(run)
  assert '64 features (8x8x1)' in run.stdout
  metrics = read_json(tmp_path / 'metrics.json')
  assert metrics['status'] == 'ok' and metrics['hyperparameters']['channels'] == [4, 4]
  assert metrics['hyperparameters']['model'] == 'cnn'
  assert 0 <= metrics['test_accuracy'] <= 1


@pytest.mark.slow
@pytest.mark.parametrize(
  'dataset, threshold',
  [
    ('mnist1d', 0.68),  # the MLP of the MNIST-1D paper; seeds 0..3 gave 72.4 to 73.9%
    ('digits', 0.96),  # seeds 0..5 gave 96.9 to 98.6%
  ],
)
def test_train_defaults_reach_readme_accuracy(tmp_path, dataset, threshold):
  run = launch('train.py', f'--dataset={dataset}', f'--output_dir={tmp_path}', timeout=900)
  assert succeeded(run)
  metrics = read_json(tmp_path / 'metrics.json')
  assert metrics['status'] == 'ok'
  assert metrics['test_accuracy'] >= threshold, metrics['test_accuracy']


@pytest.mark.slow
@pytest.mark.parametrize(
  'dataset, threshold',
  [
    ('mnist1d', 0.70),  # the README's top 10 test at 71.4 to 73.9%, its winner 72.6%
    ('digits', 0.96),  # the README's top 10 test at 97.5 to 98.3%
  ],
)
def test_random_search_defaults_reach_readme_accuracy(tmp_path, dataset, threshold):
  run = launch('random_search.py', f'--dataset={dataset}', f'--output_dir={tmp_path}', timeout=1500)
  assert succeeded(run)
  best = check_search_outputs(tmp_path, num_trials=24)  # the launcher's default
  assert best['test_accuracy'] >= threshold, best


SMALL_SPACE = (
  'learning_rate=log:1e-3:1e-1,beta1=1mlog:0.8:0.95,hidden_units=int:16:24,num_layers=fixed:1'
)


def test_hyperband_smoke_writes_pruned_trials_with_their_epochs(tmp_path):
  run = launch(
    'random_search.py',
    '--strategy=hyperband',
    '--dataset=digits',
    '--max_epochs=3',  # brackets (1, 3, 3): 3 trials x 1 epoch then 1 x 3; 2 x 3
    f'--space={SMALL_SPACE}',
    '--top_k=2',
    f'--output_dir={tmp_path}',
    timeout=600,
  )
  assert succeeded(run)
  check_search_outputs(tmp_path, num_trials=5)
  with open(tmp_path / 'results.csv', newline='') as f:
    rows = list(csv.DictReader(f))
  assert sorted(row['status'] for row in rows) == ['ok', 'ok', 'ok', 'pruned', 'pruned']
  assert all(row['epochs'] == ('1' if row['status'] == 'pruned' else '3') for row in rows)
  assert sum(row['test_accuracy'] != '' and row['test_accuracy'] != 'nan' for row in rows) == 2
  assert 'trial-epochs' in run.stdout and 'checkpoint(s)' in run.stdout
  assert not (tmp_path / 'population.msgpack').exists()  # the search is done: only candidates stay


def test_pbt_smoke_and_train_replays_its_winner_bit_for_bit(tmp_path):
  search_dir, replay_dir = tmp_path / 'pbt', tmp_path / 'replay'
  run = launch(
    'random_search.py',
    '--strategy=pbt',
    '--dataset=digits',
    '--population_size=4',
    '--epochs=3',
    '--ready=1',
    f'--space={SMALL_SPACE}',
    '--top_k=1',
    f'--output_dir={search_dir}',
    timeout=600,
  )
  assert succeeded(run)
  best = check_search_outputs(search_dir, num_trials=4)
  for name in ('lineage.csv', 'schedule.csv', 'schedule.png'):
    assert (search_dir / name).stat().st_size > 0, name
  assert [step['epochs'] for step in best['schedule']] == [[0, 1], [1, 2], [2, 3]]
  replay = launch(
    'train.py',
    '--dataset=digits',
    f'--schedule={search_dir / "best.json"}',
    f'--output_dir={replay_dir}',
    timeout=600,
  )
  assert succeeded(replay)
  metrics = read_json(replay_dir / 'metrics.json')
  # The same machine, devices and population shape: the winner's numbers, bit for bit.
  assert metrics['dev_accuracy'] == best['dev_accuracy']
  assert metrics['test_accuracy'] == best['test_accuracy']
  wrong = launch(
    'train.py',
    f'--schedule={search_dir / "best.json"}',
    '--learning_rate=0.1',
    f'--output_dir={replay_dir}',
    timeout=300,
  )
  assert wrong.returncode == 1 and wrong.stderr.startswith('error: --learning_rate does not apply')


@pytest.mark.slow
@pytest.mark.parametrize(
  'strategy, flags, num_trials',
  [
    # brackets 9 -> 3 -> 1, 5 -> 1 and 3 trials: 17 trials, 69 trial-epochs
    ('hyperband', ('--max_epochs=9',), 17),
    ('pbt', ('--population_size=16', '--epochs=12'), 16),  # 192 trial-epochs, ready 4
  ],
)
@pytest.mark.parametrize(
  'dataset, threshold',
  [
    ('mnist1d', 0.55),  # measured here: hyperband's winner 62.8%, pbt's 68.8%
    ('digits', 0.90),  # measured here: hyperband's winner 95.3%, pbt's above 90%
  ],
)
def test_population_strategies_run_on_the_real_data(
  tmp_path, strategy, flags, num_trials, dataset, threshold
):
  run = launch(
    'random_search.py',
    f'--strategy={strategy}',
    f'--dataset={dataset}',
    *flags,
    f'--output_dir={tmp_path}',
    timeout=1500,
  )
  assert succeeded(run)
  best = check_search_outputs(tmp_path, num_trials=num_trials)
  assert best['test_accuracy'] >= threshold, best


@pytest.mark.slow
@pytest.mark.parametrize(
  'dataset, threshold',
  [
    ('mnist1d', 0.94),  # the MNIST-1D paper's CNN; the README's winner 98.2%, top 10 96.8 to 98.3%
    # Five trials tie at 100% dev and float rounding picks among them: their
    # test accuracies spanned 98.1-99.2% and, with the 16-bit dropout masks,
    # 97.8-98.9% (winners 99.2% and 98.1%); the floor is that span's bottom.
    ('digits', 0.975),
  ],
)
def test_random_search_cnn_defaults_reach_readme_accuracy(tmp_path, dataset, threshold):
  run = launch(
    'random_search.py',
    '--model=cnn',
    f'--dataset={dataset}',
    f'--output_dir={tmp_path}',
    timeout=3600,
  )
  assert succeeded(run)
  best = check_search_outputs(tmp_path, num_trials=24)
  assert best['test_accuracy'] >= threshold, best

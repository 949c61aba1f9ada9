"""Many workers on one study in a real PostgreSQL: each trial once, a dead worker's recovered.

The test starts its own server (`initdb`, `pg_ctl`) in a temporary directory on
a free localhost port, as the `postgres` user when it runs as root, and stops
it at the end; it skips, saying why, where the binaries or psycopg are
missing. Workers are subprocesses started at the same moment on an empty
database (the race on creating the tables and the study), with the same
chunk size as a single-process reference run, so their results are compared
bit for bit. Slow: several interpreter starts and compiles.
"""

import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile

import optuna
import pytest

from bnjax.search import ledger
from bnjax.search.results import Results

pytestmark = pytest.mark.slow
ROOT = pathlib.Path(__file__).resolve().parents[1]
SPEC = (
  'learning_rate=log:1e-3:1e-1,beta1=1mlog:0.8:0.99,keep_prob=uniform:0.8:1.0,'
  'hidden_units=int:8:12,num_layers=fixed:2,batch_size=fixed:32'
)
NUM_TRIALS = 8
WORKER = """
import sys
from bnjax import data, search
splits = data.load(sys.argv[1])
results = search.run('random', sys.argv[2], splits, num_trials=8, seed=1, epochs=2, top_k=2,
                     chunk_size=2, output_dir=sys.argv[3], storage=sys.argv[4] or None,
                     study_name=sys.argv[5] or None, report=print)
print('chunks run', results.info['chunks'])
if not sys.argv[4]:
  results.to_csv(sys.argv[3] + '/results.csv')
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


@pytest.fixture(scope='module')
def postgres():
  """A private PostgreSQL server on localhost; yields its URL."""
  initdb, pg_ctl = shutil.which('initdb'), shutil.which('pg_ctl')
  if initdb is None or pg_ctl is None:
    pytest.skip('PostgreSQL server binaries (initdb, pg_ctl) are not on PATH')
  pytest.importorskip('psycopg', reason="psycopg is missing: pip install 'bnjax[postgres]'")
  as_user = []
  base = tempfile.mkdtemp(prefix='bnjax-postgres-')
  if os.geteuid() == 0:  # the server refuses to run as root
    try:
      user = pwd.getpwnam('postgres')
    except KeyError:
      pytest.skip('running as root and there is no postgres user to run the server')
    os.chown(base, user.pw_uid, user.pw_gid)
    as_user = ['runuser', '-u', 'postgres', '--']
  data, port = os.path.join(base, 'data'), _free_port()
  run = lambda *args: subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)
  try:
    run(initdb, '-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync')
    options = f'-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off'
    run(pg_ctl, '-D', data, '-l', os.path.join(base, 'log'), '-w', '-o', options, 'start')
  except subprocess.CalledProcessError as error:
    shutil.rmtree(base, ignore_errors=True)
    pytest.skip(f'could not start PostgreSQL: {error.stderr.strip()[:200]}')
  try:
    yield f'postgresql+psycopg://postgres@127.0.0.1:{port}/postgres'
  finally:
    subprocess.run([*as_user, pg_ctl, '-D', data, '-m', 'immediate', 'stop'], capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope='module')
def data_file(blob_npz):
  return blob_npz


def start(data_file, output_dir, storage='', study_name='', crash_at=None) -> subprocess.Popen:
  env = dict(os.environ)
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
    '--xla_force_host_platform_device_count=4', ''
  )
  env.pop('BNJAX_CRASH_AT', None)
  if crash_at:
    env['BNJAX_CRASH_AT'] = crash_at
  os.makedirs(output_dir, exist_ok=True)
  args = [str(data_file), SPEC, str(output_dir), storage, study_name]
  return subprocess.Popen(
    [sys.executable, '-c', WORKER, *args],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )


def finish(process: subprocess.Popen) -> tuple[int, str]:
  out, err = process.communicate(timeout=900)
  return process.returncode, out + err


@pytest.fixture(scope='module')
def reference(data_file, tmp_path_factory):
  """One process, a journal file: the numbers the workers must give, bit for bit."""
  output_dir = tmp_path_factory.mktemp('reference')
  code, log = finish(start(data_file, output_dir))
  assert code == 0, log[-3000:]
  return (output_dir / 'results.csv').read_text()


def every_trial_once(url: str, name: str, path: pathlib.Path) -> str:
  """Checks the study's trials; returns its results.csv (a view of the ledger) as text."""
  made = optuna.load_study(study_name=name, storage=url)
  trials = made.trials
  assert [t.number for t in trials] == list(range(NUM_TRIALS))
  assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
  assert all('duplicate' not in t.user_attrs for t in trials)
  assert ledger.TESTED in made.user_attrs
  Results.from_study(made).to_csv(path)
  return path.read_text()


def test_two_workers_started_together_share_one_study(postgres, data_file, reference, tmp_path):
  # One machine: the workers share an output directory, so the last one to finish
  # finds every top-k candidate there for the test.
  workers = [start(data_file, tmp_path, postgres, 'together') for _ in range(2)]
  done = [finish(worker) for worker in workers]
  for code, log in done:
    assert code == 0, log[-3000:]
  assert every_trial_once(postgres, 'together', tmp_path / 'view.csv') == reference
  # Four chunks in all, each run by one worker only.
  chunks = [int(log.split('chunks run ')[1].split()[0]) for _, log in done]
  assert sum(chunks) == NUM_TRIALS // 2, chunks


def test_a_killed_worker_is_recovered_by_the_others(postgres, data_file, reference, tmp_path):
  killed = start(data_file, tmp_path, postgres, 'killed', crash_at='chunk1:claimed')
  other = start(data_file, tmp_path, postgres, 'killed')
  code, log = finish(killed)
  assert code == -9, log[-3000:]
  code, log = finish(other)
  assert code == 0, log[-3000:]
  # The other worker took the dead one's chunk back (its pid is gone on this host);
  # a restarted worker finds the study whole, or finishes it.
  code, log = finish(start(data_file, tmp_path, postgres, 'killed'))
  assert code == 0, log[-3000:]
  assert every_trial_once(postgres, 'killed', tmp_path / 'view.csv') == reference

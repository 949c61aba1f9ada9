"""One search over two processes on localhost, as over two hosts (`bnjax.distributed`).

Each process is the launcher with `JAX_PLATFORMS=cpu` and two virtual CPU
devices; process 0 serves the coordinator on a free port. Each runs in its
own working directory with the same relative `--output_dir`, as two hosts
without a shared disk would, so a file written by process 1 would show.
These are the README's "Scaling out" localhost commands.
"""

import os
import pathlib
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import optuna
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from optuna.storages.journal import JournalFileBackend

from bnjax import distributed
from bnjax.search import hosts, ledger

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / 'experiments' / 'random_search.py'
SEARCH = (
  '--num_trials=8',
  '--epochs=2',
  '--chunk_size=4',  # two chunks of four trials: one trial per device
  '--top_k=2',
  '--seed=3',
  '--space=learning_rate=log:1e-3:1e-1,hidden_units=int:8:12',
)
HEARTBEAT = 10  # seconds; JAX's default is 100


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def start(data_file, workdirs, *, devices, crash_at=None, last_flags=(), search=SEARCH):
  """The launcher once per working directory, as processes 0, 1, ... of one search."""
  port = free_port()
  processes = []
  for index, workdir in enumerate(workdirs):
    env = dict(os.environ)
    env.pop('BNJAX_CRASH_AT', None)
    env.update(
      JAX_PLATFORMS='cpu',
      XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
      PYTHONPATH=str(ROOT),
      # Compiles cheaply (these runs are tiny); both sides alike, so results still agree bitwise.
      JAX_DISABLE_MOST_OPTIMIZATIONS='1',
    )
    if crash_at and index == 1:
      env['BNJAX_CRASH_AT'] = crash_at
    command = [sys.executable, str(LAUNCHER), f'--dataset={data_file}', *search, '--output_dir=out']
    if index == len(workdirs) - 1:
      command += list(last_flags)
    if len(workdirs) > 1:
      command += [
        f'--coordinator_address=localhost:{port}',
        f'--num_processes={len(workdirs)}',
        f'--process_id={index}',
        f'--heartbeat_timeout={HEARTBEAT}',
      ]
    workdir.mkdir(exist_ok=True)
    processes.append(
      subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
      )
    )
  return processes


def finish(processes, timeout=300):
  """(returncode, stdout, stderr) of each process."""
  outputs = [p.communicate(timeout=timeout) for p in processes]
  return [(p.returncode, *output) for p, output in zip(processes, outputs, strict=True)]


def journal(output_dir: pathlib.Path) -> optuna.Study:
  storage = optuna.storages.JournalStorage(JournalFileBackend(str(output_dir / 'study.journal')))
  return optuna.load_study(study_name=ledger.STUDY_NAME, storage=storage)


def per_trial(study: optuna.Study) -> dict:
  """Everything the ledger holds of each trial that a run computes (not its clock times)."""
  return {
    t.number: (t.state, t.value, t.params, t.user_attrs) for t in study.get_trials(deepcopy=False)
  }


@pytest.fixture(scope='module')
def one_process(blob_npz, tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one')
  [(code, out, err)] = finish(start(blob_npz, [workdir], devices=4))
  assert code == 0, err[-3000:]
  return workdir / 'out', out


@pytest.fixture(scope='module')
def two_processes(blob_npz, tmp_path_factory):
  workdirs = [tmp_path_factory.mktemp('host0'), tmp_path_factory.mktemp('host1')]
  runs = finish(start(blob_npz, workdirs, devices=2))
  for code, _, err in runs:
    assert code == 0, err[-3000:]
  return workdirs, runs


def test_two_processes_of_two_devices_give_one_process_of_four_bitwise(one_process, two_processes):
  one_dir, _ = one_process
  workdirs, _ = two_processes
  one, two = per_trial(journal(one_dir)), per_trial(journal(workdirs[0] / 'out'))
  assert sorted(two) == list(range(8))
  assert all(state == optuna.trial.TrialState.COMPLETE for state, *_ in two.values())
  assert two == one  # curves and metrics as JSON floats: equal means bit for bit
  assert (workdirs[0] / 'out' / 'results.csv').read_text() == (one_dir / 'results.csv').read_text()


def test_only_process_0_writes(one_process, two_processes):
  one_dir, one_out = one_process
  workdirs, [(_, out0, err0), (_, out1, err1)] = two_processes
  assert sorted(os.listdir(workdirs[0] / 'out')) == sorted(os.listdir(one_dir))
  assert os.listdir(workdirs[1]) == []  # process 1 wrote nowhere, not even its output directory
  assert out1 == ''  # and printed nothing: its results are process 0's
  assert out0.count('wrote out/results.csv') == 1
  assert out0.splitlines()[-1] == one_out.splitlines()[-1]  # the same winner, tested once
  assert 'process 0 of 2: 2 of 4 devices' in err0
  assert 'process 1 of 2: 2 of 4 devices' in err1


@pytest.mark.slow
def test_a_dead_process_stops_the_other_and_a_restart_finishes_the_search(
  blob_npz, two_processes, tmp_path
):
  workdirs = [tmp_path / 'host0', tmp_path / 'host1']
  # Process 1 dies (SIGKILL) once the first chunk is told; process 0 is then in the second.
  processes = start(blob_npz, workdirs, devices=2, crash_at='chunk0:told')
  processes[1].wait(timeout=300)
  killed = time.monotonic()
  [(code0, _, err0), (code1, _, _)] = finish(processes)
  stopped_after = time.monotonic() - killed
  assert code1 == -9
  assert code0 != 0, err0[-3000:]
  assert stopped_after < HEARTBEAT + 10, stopped_after
  assert 'to resume, start all 2 processes again with the same flags' in err0
  assert 'a step across processes failed' in err0 or 'another task died' in err0, err0[-3000:]
  told = [t.number for t in journal(workdirs[0] / 'out').trials if t.state.is_finished()]
  assert len(told) == 4  # the first chunk is kept: only the chunk in flight is lost
  assert not (workdirs[0] / 'out' / 'results.csv').exists()

  runs = finish(start(blob_npz, workdirs, devices=2))
  for code, _, err in runs:
    assert code == 0, err[-3000:]
  assert 'resuming study' in runs[0][1] and '4 trials done, 4 to run' in runs[0][1]
  done = workdirs[0] / 'out'
  uninterrupted = two_processes[0][0] / 'out'
  assert per_trial(journal(done)) == per_trial(journal(uninterrupted))
  assert (done / 'results.csv').read_text() == (uninterrupted / 'results.csv').read_text()
  assert os.listdir(workdirs[1]) == []


@pytest.mark.slow
def test_bayes_over_two_processes_asks_and_trains_what_one_process_does(blob_npz, tmp_path):
  # Every process's replica of the ledger feeds the same seeded sampler the same trials.
  bayes = ('--strategy=bayes', '--trials_per_round=4', *SEARCH)
  one = [tmp_path / 'one']
  two = [tmp_path / 'host0', tmp_path / 'host1']
  for workdirs, devices in ((one, 4), (two, 2)):
    for code, _, err in finish(start(blob_npz, workdirs, devices=devices, search=bayes)):
      assert code == 0, err[-3000:]
  assert per_trial(journal(two[0] / 'out')) == per_trial(journal(one[0] / 'out'))
  assert os.listdir(two[1]) == []


# The population strategies: hyperband's rungs and pbt's generations rank the
# gathered dev accuracies on every process alike and checkpoint from process 0.
POPULATIONS = {
  'hyperband': ('--strategy=hyperband', '--max_epochs=3'),
  'pbt': ('--strategy=pbt', '--population_size=8', '--epochs=4', '--ready=2'),
}
POPULATION_SEARCH = (
  '--top_k=2',
  '--seed=3',
  '--space=learning_rate=log:1e-3:1e-1,beta1=uniform:0.5:0.95,hidden_units=fixed:8',
)


@pytest.mark.slow
@pytest.mark.parametrize('strategy', list(POPULATIONS))
def test_population_strategies_over_two_processes_give_one_process_bitwise(
  blob_npz, tmp_path, strategy
):
  flags = (*POPULATIONS[strategy], *POPULATION_SEARCH)
  one = [tmp_path / 'one']
  two = [tmp_path / 'host0', tmp_path / 'host1']
  outputs = {}
  for workdirs, devices in ((one, 4), (two, 2)):
    runs = finish(start(blob_npz, workdirs, devices=devices, search=flags))
    for code, _, err in runs:
      assert code == 0, err[-3000:]
    outputs[len(workdirs)] = runs[0][1]
  done = per_trial(journal(two[0] / 'out'))
  assert done and all(state.is_finished() for state, *_ in done.values())
  assert done == per_trial(journal(one[0] / 'out'))
  assert (two[0] / 'out' / 'results.csv').read_text() == (
    one[0] / 'out' / 'results.csv'
  ).read_text()
  assert sorted(os.listdir(two[0] / 'out')) == sorted(os.listdir(one[0] / 'out'))
  assert os.listdir(two[1]) == []  # process 1 wrote nowhere
  assert outputs[2].splitlines()[-1] == outputs[1].splitlines()[-1]  # the same winner


@pytest.mark.slow
def test_pbt_over_two_processes_resumes_from_process_0s_checkpoint(blob_npz, tmp_path):
  flags = (*POPULATIONS['pbt'], *POPULATION_SEARCH)
  workdirs = [tmp_path / 'host0', tmp_path / 'host1']
  # Process 1 dies (SIGKILL) right after the first generation's checkpoint; process 0 then stops.
  runs = finish(start(blob_npz, workdirs, devices=2, crash_at='saved0', search=flags))
  assert runs[1][0] == -9 and runs[0][0] != 0
  assert (workdirs[0] / 'out' / 'population.msgpack').exists()
  runs = finish(start(blob_npz, workdirs, devices=2, search=flags))
  for code, _, err in runs:
    assert code == 0, err[-3000:]
  assert 'from the last checkpoint: generation 1' in runs[0][1], runs[0][1]
  uninterrupted = [tmp_path / 'one']
  [(code, _, err)] = finish(start(blob_npz, uninterrupted, devices=4, search=flags))
  assert code == 0, err[-3000:]
  assert per_trial(journal(workdirs[0] / 'out')) == per_trial(journal(uninterrupted[0] / 'out'))
  assert os.listdir(workdirs[1]) == []


@pytest.mark.slow
def test_processes_that_disagree_stop_before_training(blob_npz, tmp_path):
  workdirs = [tmp_path / 'host0', tmp_path / 'host1']
  runs = finish(start(blob_npz, workdirs, devices=2, last_flags=['--seed=4']))
  for code, _, err in runs:
    assert code == 1
    assert 'error: process(es) 1 have other search settings' in err, err[-3000:]
  path = str(workdirs[0] / 'out' / 'study.journal')
  assert optuna.storages.JournalStorage(JournalFileBackend(path)).get_all_studies() == []


# ---------------------------------------------------------------- one process: the same calls


def test_one_process_needs_no_runtime_and_is_the_writer():
  assert distributed.initialize() is False
  assert not distributed.is_multiprocess() and distributed.is_writer()
  assert distributed.devices() == jax.local_devices()
  assert distributed.broadcast_bytes(b'ledger') == b'ledger'


@pytest.mark.parametrize(
  'settings, error',
  [
    (dict(num_processes=2), '--coordinator_address, --process_id missing'),
    (dict(coordinator_address='h:1', num_processes=2, process_id=2), 'must be in [0,'),
    (dict(coordinator_address='h:1', num_processes=0, process_id=0), 'at least 1'),
    (dict(detect=True, heartbeat_timeout=0), '--heartbeat_timeout must be at least 1'),
  ],
)
def test_bad_process_settings_are_one_line_errors_before_any_connection(settings, error):
  with pytest.raises(distributed.DistributedError) as raised:
    distributed.initialize(**settings)
  assert error in str(raised.value) and '\n' not in str(raised.value)


def test_put_fetch_and_take_are_the_plain_calls_on_local_devices():
  mesh = Mesh(np.asarray(jax.local_devices()), ('trials',))
  trials = NamedSharding(mesh, PartitionSpec('trials'))
  values = {'a': np.arange(8.0, dtype=np.float32), 'b': np.arange(16).reshape(8, 2)}
  placed = distributed.put(values, trials)
  assert placed['a'].sharding == trials
  fetched = distributed.fetch(placed)
  np.testing.assert_array_equal(fetched['b'], values['b'])
  rows = np.asarray([5, 0, 5])
  taken = distributed.take(placed, rows)
  np.testing.assert_array_equal(taken['a'], values['a'][rows])
  np.testing.assert_array_equal(taken['b'], values['b'][rows])


def test_a_shared_storage_with_several_processes_is_refused(monkeypatch, tmp_path):
  monkeypatch.setattr(distributed, 'is_multiprocess', lambda: True)
  with pytest.raises(ledger.LedgerError, match='--storage with several processes'):
    hosts.open_storage('sqlite:///x.db', tmp_path)

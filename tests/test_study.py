"""Searches through the ledger (an Optuna study): same numbers as in memory, resume, bayes.

Every search here fixes 12 units x 2 layers and batch size 32 (as in the
strategy tests), so the in-process runs share one compiled program and the
comparisons are at equal shapes: bit for bit. The kill tests run a search in
a subprocess that SIGKILLs itself at a chosen point (`BNJAX_CRASH_AT`, see
`bnjax.search.study`), resume it, and compare with an uninterrupted run on
the same machine, with the same chunk size; they are slow (several
interpreter starts and compiles), so `pytest -m slow` runs them.
"""

import csv
import functools
import json
import math
import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest

from bnjax import search
from bnjax.search import candidates, ledger, storages, workers
from bnjax.search.results import Results
from bnjax.space import (
  Choice,
  Fixed,
  IntLogUniform,
  IntUniform,
  LogUniform,
  OneMinusLogUniform,
  Space,
  Uniform,
)

pytestmark = pytest.mark.usefixtures('search_compile_cache')
ROOT = pathlib.Path(__file__).resolve().parents[1]

EPOCHS = 2
N = 4
SPEC = (
  'learning_rate=log:1e-3:1e-1,beta1=1mlog:0.8:0.99,keep_prob=uniform:0.8:1.0,'
  'hidden_units=fixed:12,num_layers=fixed:2,batch_size=fixed:32'
)
OPTIONS = dict(seed=3, epochs=EPOCHS, top_k=2)


@pytest.fixture(scope='module')
def splits(blob_splits):
  return blob_splits


def same_rows(a: list[dict], b: list[dict]) -> None:
  """Equal rows, bit for bit (NaN equals NaN)."""
  assert len(a) == len(b)
  for left, right in zip(a, b, strict=True):
    assert left.keys() == right.keys()
    for key in left:
      x, y = left[key], right[key]
      assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), (key, x, y)


def same_results(a: Results, b: Results) -> None:
  same_rows(a.rows, b.rows)
  assert a.columns == b.columns
  for name in a.curves:
    np.testing.assert_array_equal(a.curves[name], b.curves[name])
    assert a.curves[name].dtype == b.curves[name].dtype


def journal(output_dir) -> optuna.Study:
  storage = storages.open_storage(None, output_dir)
  return optuna.load_study(study_name=ledger.STUDY_NAME, storage=storage)


# ------------------------------------------------------------------------------ the space


def test_space_becomes_optuna_distributions_and_back():
  space = Space(
    {
      'learning_rate': LogUniform(1e-4, 1.0),
      'beta1': OneMinusLogUniform(0.9, 0.999),
      'keep_prob': Uniform(0.5, 1.0),
      'hidden_units': IntUniform(50, 100),
      'batch_size': IntLogUniform(16, 512),
      'optimizer': Choice(('adam', 'sgd')),
      'num_layers': Fixed(2),
    }
  )
  dists = ledger.distributions(space)
  assert dists == {
    'learning_rate': optuna.distributions.FloatDistribution(1e-4, 1.0, log=True),
    'one_minus_beta1': optuna.distributions.FloatDistribution(1 - 0.999, 1 - 0.9, log=True),
    'keep_prob': optuna.distributions.FloatDistribution(0.5, 1.0),
    'hidden_units': optuna.distributions.IntDistribution(50, 100),
    'batch_size': optuna.distributions.IntDistribution(16, 512, log=True),
    'optimizer': optuna.distributions.CategoricalDistribution(('adam', 'sgd')),
  }
  rows = space.sample(search.cohorts.sampling_key(0, 0), 50)
  storage = optuna.storages.InMemoryStorage()
  made = optuna.create_study(storage=storage)
  ledger.enqueue(made, space, [{k: v[i] for k, v in rows.items()} for i in range(50)], 0, 0)
  for i, trial in enumerate(made.trials):
    values = ledger.values(space, trial)
    assert list(values) == list(space)
    for name in space:
      assert values[name] == rows[name][i], name  # exact: beta1 is kept as the user gave it
    assert 0 < trial.params['one_minus_beta1'] <= 0.1
    assert 'beta1' not in trial.params and 'num_layers' not in trial.params


# ------------------------------------------------------------------------------ equal to memory


@pytest.fixture(scope='module')
def in_memory(splits):
  return {
    'random': search.run('random', SPEC, splits, num_trials=N, **OPTIONS),
    'coarse_to_fine': search.run(
      'coarse_to_fine', SPEC, splits, num_trials=N, rounds=2, keep=0.25, **OPTIONS
    ),
  }


@pytest.fixture(scope='module')
def through_study(splits, tmp_path_factory):
  out = {}
  for name, extra in (('random', {}), ('coarse_to_fine', dict(rounds=2, keep=0.25))):
    output_dir = tmp_path_factory.mktemp(name)
    results = search.run(
      name, SPEC, splits, num_trials=N, output_dir=output_dir, **OPTIONS, **extra
    )
    out[name] = (results, output_dir)
  return out


@pytest.mark.parametrize('strategy', ['random', 'coarse_to_fine'])
def test_a_study_gives_the_in_memory_results(in_memory, through_study, strategy):
  results, output_dir = through_study[strategy]
  same_results(in_memory[strategy], results)
  assert sum(math.isfinite(row['test_accuracy']) for row in results.rows) == 2
  # A view rebuilt by another reader of the journal is the same again.
  same_results(results, Results.from_study(journal(output_dir)))


def test_results_csv_is_a_view_of_the_ledger(in_memory, through_study, tmp_path):
  results, output_dir = through_study['random']
  in_memory['random'].to_csv(tmp_path / 'memory.csv')
  Results.from_study(journal(output_dir)).to_csv(tmp_path / 'study.csv')
  assert (tmp_path / 'memory.csv').read_text() == (tmp_path / 'study.csv').read_text()


def test_the_ledger_holds_what_a_trial_is(through_study):
  results, output_dir = through_study['random']
  made = journal(output_dir)
  config = made.user_attrs[ledger.CONFIG]
  assert config['strategy'] == 'random' and config['epochs'] == EPOCHS
  assert config['dataset'] == 'blobs' and 'sha256' in config['data']
  assert config['space'] == search.as_space(SPEC).to_spec()
  trials = made.trials
  assert [t.number for t in trials] == list(range(N))
  assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
  trial = trials[0]
  assert set(trial.params) == {'learning_rate', 'one_minus_beta1', 'keep_prob'}
  assert trial.value == results.rows[0]['dev_accuracy']
  assert trial.user_attrs['beta1'] == results.rows[0]['beta1']
  assert len(trial.user_attrs['curve_dev_accuracy']) == EPOCHS
  assert {'bucket', 'metrics', 'beta1', 'round'} <= set(trial.user_attrs)


# ------------------------------------------------------------------------------ resume


def test_resume_keeps_trials_extends_the_budget_and_checks_the_configuration(splits, tmp_path):
  messages = []
  options = dict(OPTIONS, output_dir=tmp_path, report=messages.append, chunk_size=4)
  first = search.run('random', SPEC, splits, num_trials=N, **options)
  again = search.run('random', SPEC, splits, num_trials=N, **options)
  same_results(first, again)
  assert again.info['chunks'] == 0 and 'resuming' in messages[-1]
  fewer = search.run('random', SPEC, splits, num_trials=2, **options)
  assert len(fewer) == N and 'nothing new to run' in messages[-1]
  more = search.run('random', SPEC, splits, num_trials=N + 4, **options)
  assert [row['trial_id'] for row in more.rows] == list(range(N + 4))
  untested = lambda rows: [{**row, 'test_accuracy': None} for row in rows]
  same_rows(untested(more.rows[:N]), untested(first.rows))
  # The sample only grows: trial i has row i of a sample of N + 4.
  alone = search.run('random', SPEC, splits, num_trials=N + 4, **dict(OPTIONS, test=False))
  np.testing.assert_array_equal(more.column('learning_rate'), alone.column('learning_rate'))
  for change, error in (
    (dict(epochs=3), 'epochs=2, not 3'),
    (dict(seed=4), 'seed=3, not 4'),
    (dict(chunk_size=8), 'chunk_size=4, not 8'),
  ):
    with pytest.raises(search.LedgerError, match=error) as info:
      search.run('random', SPEC, splits, num_trials=N, **{**options, **change})
    assert '\n' not in str(info.value) and '--output_dir' in str(info.value)
  with pytest.raises(search.LedgerError, match='space='):
    search.run('random', SPEC.replace('0.99', '0.999'), splits, num_trials=N, **options)
  # Other data under the same name: no flag sets the fingerprint, so the
  # message names the data, not a `data=...` to rerun with.
  other = splits._replace(x_train=splits.x_train[::-1].copy())
  with pytest.raises(search.LedgerError, match='was made on other data') as info:
    search.run('random', SPEC, other, num_trials=N, **options)
  assert 'rerun with' not in str(info.value) and '\n' not in str(info.value)
  # Another data set changes the fingerprint too; the flag's key is named first.
  with pytest.raises(search.LedgerError, match="dataset='blobs', not 'other'"):
    search.run('random', SPEC, other._replace(name='other'), num_trials=N, **options)


def test_an_extended_study_gives_each_trial_id_the_numbers_of_one_search(splits, tmp_path):
  # Default chunks (`sizing.chunk_runs`: 8 runs on this CPU, from the bucket
  # and the devices): 3 trials, then 8 more in a second round, train each
  # trial id exactly as one search of 11 does, and the study records it all.
  options = dict(OPTIONS, output_dir=tmp_path, test=False)
  search.run('random', SPEC, splits, num_trials=3, **options)
  extended = search.run('random', SPEC, splits, num_trials=11, **options)
  alone = search.run('random', SPEC, splits, num_trials=11, **dict(OPTIONS, test=False))
  same_results(extended, alone)
  study = journal(tmp_path)
  assert study.user_attrs[ledger.CONFIG]['chunk_size'] is None
  assert [t.user_attrs['chunk_size'] for t in study.trials] == [8] * 11
  assert [t.user_attrs['round'] for t in study.trials] == [0] * 3 + [1] * 8


def test_ctrl_c_drops_the_chunk_in_flight_and_a_rerun_finishes_the_same(
  splits, in_memory, tmp_path
):
  calls = []

  def interrupt(done, total):
    calls.append(done)
    if len(calls) == 1:
      raise KeyboardInterrupt

  options = dict(OPTIONS, output_dir=tmp_path, chunk_size=4)
  with pytest.raises(KeyboardInterrupt):
    search.run('random', SPEC, splits, num_trials=2 * N, progress=interrupt, **options)
  states = [t.state for t in journal(tmp_path).trials]
  assert states.count(optuna.trial.TrialState.COMPLETE) == 4
  assert states.count(optuna.trial.TrialState.WAITING) == 4  # none left RUNNING
  resumed = search.run('random', SPEC, splits, num_trials=2 * N, **options)
  whole = search.run('random', SPEC, splits, num_trials=2 * N, chunk_size=4, **OPTIONS)
  same_results(whole, resumed)


def test_a_dead_workers_trials_go_back_to_waiting_with_their_numbers(tmp_path):
  space = search.as_space(SPEC)
  storage = storages.open_storage(str(tmp_path / 'shared.journal'), None)
  made, _ = ledger.open_study(storage, None, {'strategy': 'test'})
  row = {'learning_rate': 0.01, 'beta1': 0.9, 'keep_prob': 0.9}
  ledger.enqueue(made, space, [row] * 3, 0, 0)
  running = optuna.trial.TrialState.RUNNING
  for trial in made.trials:
    made._storage.set_trial_state_values(trial._trial_id, running)
  host = os.uname().nodename
  records = {
    'gone': {'host': host, 'pid': 2**22 + 7, 'beat': time.time(), 'holds': [0]},
    'alive': {'host': host, 'pid': os.getpid(), 'beat': time.time(), 'holds': [1]},
  }
  for name, record in records.items():
    made._storage.set_study_system_attr(made._study_id, workers.WORKER + name, record)
  # Trial 0: its worker's process is gone. Trial 1: held by a live worker.
  # Trial 2: no record names it, and it started just now: not stale yet.
  with workers.Worker(made, stale_after=3600) as worker:
    assert worker.recover() == [0]
  time.sleep(1.0)
  alive = {**records['alive'], 'beat': time.time()}
  made._storage.set_study_system_attr(made._study_id, workers.WORKER + 'alive', alive)
  with workers.Worker(made, stale_after=0.5) as worker:
    assert worker.recover() == [2]
  assert [t.state for t in made.trials] == [optuna.trial.TrialState.WAITING, running] * 1 + [
    optuna.trial.TrialState.WAITING
  ]


def test_an_output_directory_serves_one_search_at_a_time(splits, tmp_path):
  (tmp_path / 'study.journal.lock').symlink_to(tmp_path / 'study.journal')  # left by a kill -9
  with workers.directory_lock(str(tmp_path)):
    assert not (tmp_path / 'study.journal.lock').exists()
    with pytest.raises(search.LedgerError, match='in use by a search still running') as info:
      search.run('random', SPEC, splits, num_trials=N, output_dir=tmp_path, **OPTIONS)
  assert f'pid {os.getpid()}' in str(info.value) and '--storage' in str(info.value)
  assert not (tmp_path / 'study.journal').exists()


# ------------------------------------------------------------------------------ candidates


def test_candidates_round_trip_bit_for_bit(through_study, splits):
  results, output_dir = through_study['random']
  store = candidates.CandidateStore(str(output_dir / 'candidates'), 2)
  kept = sorted(store.kept())
  best = [row['trial_id'] for row in results.best(2)]
  assert kept == sorted(best)
  candidate = store.get(best[0])
  again = candidates.decode(candidates.encode(candidate))
  import jax

  assert jax.tree.structure(candidate.params) == jax.tree.structure(again.params)
  for a, b in zip(jax.tree.leaves(candidate), jax.tree.leaves(again), strict=True):
    np.testing.assert_array_equal(a, b)
    assert np.asarray(a).dtype == np.asarray(b).dtype
  assert candidate.config == again.config and candidate.row['trial_id'] == best[0]


# ------------------------------------------------------------------------------ bayes


def test_bayes_runs_rounds_and_tells_every_trial(splits, tmp_path):
  messages = []
  results = search.run(
    'bayes',
    SPEC,
    splits,
    num_trials=6,
    trials_per_round=4,
    output_dir=tmp_path,
    report=messages.append,
    chunk_size=4,
    **OPTIONS,
  )
  assert [row['trial_id'] for row in results.rows] == list(range(6))
  made = journal(tmp_path)
  assert [t.user_attrs['round'] for t in made.trials] == [0, 0, 0, 0, 1, 1]
  beta1 = results.column('beta1')
  assert np.all((beta1 >= 0.8) & (beta1 <= 0.99))
  assert sum(math.isfinite(row['test_accuracy']) for row in results.rows) == 2
  again = search.run(
    'bayes',
    SPEC,
    splits,
    num_trials=6,
    trials_per_round=4,
    output_dir=tmp_path,
    chunk_size=4,
    **OPTIONS,
  )
  same_results(results, again)


@pytest.mark.parametrize(
  'sampler, error',
  [('nope', 'unknown sampler'), ('BaseSampler', 'unknown sampler'), ('GridSampler', 'needs')],
)
def test_bad_samplers_are_one_line_errors(sampler, error):
  with pytest.raises(ValueError, match=error) as info:
    search.check('bayes', num_trials=4, sampler=sampler)
  assert '\n' not in str(info.value)


def test_gp_without_torch_says_which_extra(monkeypatch):
  import importlib.util

  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, 'find_spec', lambda name, *a: None if name == 'torch' else real(name, *a)
  )
  with pytest.raises(ValueError, match=r'bnjax\[gp\]'):
    search.check('bayes', num_trials=4, sampler='gp')


@pytest.mark.parametrize(
  'storage, error',
  [
    ('nonsense', 'neither a URL nor a .journal'),
    ('postgresql+psycopg://u:secret@127.0.0.1:1/db', 'cannot open --storage|needs a driver'),
  ],
)
def test_bad_storage_is_a_one_line_error(storage, error):
  with pytest.raises(search.LedgerError, match=error) as info:
    search.check_storage(storage)
  assert '\n' not in str(info.value) and 'secret' not in str(info.value)


# ------------------------------------------------------------------------------ kill -9

RUNNER = """
import sys
from bnjax import data, files, search
splits = data.load(sys.argv[1])
rounds = dict(num_trials=6) if sys.argv[5] == 'random' else dict(num_trials=3, rounds=2, keep=0.34)
results = search.run(sys.argv[5], sys.argv[2], splits, seed=1, epochs=2, top_k=2,
                     chunk_size=2, segment_epochs=1, output_dir=sys.argv[3], report=print,
                     concurrent_chunks=int(sys.argv[4]), **rounds)
results.to_csv(sys.argv[3] + '/results.csv')
files.write_json(sys.argv[3] + '/best.json', results.winner())
print('buckets', results.info['buckets'], 'compiles', results.info['compiles'])
"""


def run_search(
  data_file, output_dir, crash_at=None, concurrent_chunks=1, strategy='random', units='int:8:12'
):
  env = dict(os.environ)
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
    '--xla_force_host_platform_device_count=4', ''
  )
  env.pop('BNJAX_CRASH_AT', None)
  if crash_at:
    env['BNJAX_CRASH_AT'] = crash_at
  return subprocess.run(
    [
      sys.executable,
      '-c',
      RUNNER,
      str(data_file),
      SPEC.replace('fixed:12', units),
      output_dir,
      str(concurrent_chunks),
      strategy,
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def complete_outputs(output_dir: pathlib.Path) -> None:
  """Every output file there is whole: CSV rows, strict JSON, candidates that decode."""
  if (output_dir / 'results.csv').exists():
    with open(output_dir / 'results.csv', newline='') as f:
      assert len(list(csv.DictReader(f))) == 6
  if (output_dir / 'best.json').exists():
    json.loads((output_dir / 'best.json').read_text())
  for path in (output_dir / 'candidates').glob('trial_*.msgpack'):
    candidates.decode(path.read_bytes())
  journal(output_dir).trials  # noqa: B018 (the journal replays)


@pytest.fixture(scope='module')
def data_file(blob_npz):
  return blob_npz


@pytest.fixture(scope='module')
def uninterrupted(data_file, tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('whole')
  run = run_search(data_file, output_dir)
  assert run.returncode == 0, run.stderr[-3000:]
  return output_dir


@pytest.mark.slow
def test_a_round_that_reused_an_earlier_rounds_program_resumes_to_the_same_numbers(
  data_file, tmp_path
):
  # Coarse to fine, 2 rounds of 3 trials in chunks of 2: round 1 is chunks 2
  # and 3. Round 0's widest trial has 41 units, round 1's 38: round 1 takes
  # the program of 41 (one compile for two rounds). Killed in round 1, the
  # new process replans round 0 from the ledger to know that program (it
  # compiled nothing yet): chunk 2 goes on from its checkpoint, and every
  # number equals the uninterrupted run's.
  c2f = functools.partial(run_search, strategy='coarse_to_fine', units='int:8:64')
  whole = tmp_path / 'whole'
  run = c2f(data_file, whole)
  assert run.returncode == 0, run.stderr[-3000:]
  assert 'buckets 2 compiles 1' in run.stdout, run.stdout
  with open(whole / 'results.csv', newline='') as f:
    widest = {}
    for row in csv.DictReader(f):
      widest[row['round']] = max(widest.get(row['round'], 0), int(row['hidden_units']))
  assert widest == {'0': 41, '1': 38}
  cut = tmp_path / 'cut'
  killed = c2f(data_file, cut, 'chunk2:segment0')
  assert killed.returncode == -9, killed.stderr[-3000:]
  resumed = c2f(data_file, cut)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'goes on from its checkpoint at epoch 1 of 2' in resumed.stdout, resumed.stdout
  complete_outputs(cut)
  assert (cut / 'results.csv').read_text() == (whole / 'results.csv').read_text()
  assert (cut / 'best.json').read_text() == (whole / 'best.json').read_text()


@pytest.mark.slow
@pytest.mark.parametrize('concurrent_chunks', [1, 2])
@pytest.mark.parametrize('crash_at', ['chunk0:claimed', 'chunk1:segment0', 'chunk1:told', 'test'])
def test_killed_anywhere_then_resumed_equals_uninterrupted(
  data_file, uninterrupted, tmp_path, crash_at, concurrent_chunks
):
  killed = run_search(data_file, tmp_path, crash_at, concurrent_chunks)
  assert killed.returncode == -9, killed.stderr[-3000:]
  complete_outputs(tmp_path)
  assert not (tmp_path / 'results.csv').exists()
  saved = os.listdir(tmp_path / 'in_flight') if (tmp_path / 'in_flight').exists() else []
  cut_in_a_chunk = crash_at in ('chunk1:segment0', 'chunk1:told')
  if concurrent_chunks == 1 or not cut_in_a_chunk:
    assert len(saved) == cut_in_a_chunk, saved
  else:  # chunk 1's, and the chunk beside it (0 or 2) if it had saved a segment by then
    assert 1 <= len(saved) <= 2, saved
  resumed = run_search(data_file, tmp_path, concurrent_chunks=concurrent_chunks)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming' in resumed.stdout
  # Cut off after its first epoch, chunk 1 goes on from its checkpoint.
  went_on = 'goes on from its checkpoint at epoch 1 of 2' in resumed.stdout
  if concurrent_chunks == 1 or crash_at == 'chunk1:segment0':  # else: as the chunk beside it was
    assert went_on == (crash_at == 'chunk1:segment0'), resumed.stdout
  assert not (tmp_path / 'in_flight').exists()  # cleared once every trial is told
  complete_outputs(tmp_path)
  assert (tmp_path / 'results.csv').read_text() == (uninterrupted / 'results.csv').read_text()
  assert (tmp_path / 'best.json').read_text() == (uninterrupted / 'best.json').read_text()
  trials = journal(tmp_path).trials
  assert [t.number for t in trials] == list(range(6))
  assert all(t.state.is_finished() for t in trials)

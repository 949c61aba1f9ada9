"""Hyperband and PBT through the ledger: what it records, the test once, resume from a checkpoint.

The in-process tests crash a search by raising at a chosen point (the hook
`BNJAX_CRASH_AT` calls) and run it again; the slow ones SIGKILL a subprocess
there, as tests/test_study.py does for the table strategies. Every
comparison is between runs of equal shapes on this machine: bit for bit.
"""

import csv
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from bnjax.search import ledger, pbt, population_study, storages, successive_halving, top_k
from bnjax.search.results import Results
from bnjax.space import IntUniform, LogUniform, OneMinusLogUniform, Space

pytestmark = pytest.mark.usefixtures('search_compile_cache')
ROOT = pathlib.Path(__file__).resolve().parents[1]

HB_SPACE = Space({'learning_rate': LogUniform(1e-2, 3e-1), 'hidden_units': 6, 'num_layers': 1})
# Hyperband (1, 3, 3): bracket 1 is 3 trials x 1 epoch then 1 x 3; bracket 0 is 2 x 3.
HB = dict(min_epochs=1, max_epochs=3, eta=3, chunk_size=2, top_k=2)
PBT_SPACE = Space(
  {
    'learning_rate': LogUniform(1e-3, 1e-1),
    'beta1': OneMinusLogUniform(0.8, 0.99),
    'hidden_units': IntUniform(4, 6),
    'num_layers': 1,
  }
)
PBT = dict(ready=1, generations=3, top_k=2)


@pytest.fixture(scope='module')
def one():
  return jax.local_devices()[:1]


def same(a: Results, b: Results) -> None:
  """Equal rows and curves, bit for bit (NaN equals NaN)."""
  assert a.columns == b.columns and len(a.rows) == len(b.rows)
  for left, right in zip(a.rows, b.rows, strict=True):
    for key in left:
      x, y = left[key], right[key]
      assert x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y)), (key, x, y)
  for name in a.curves:
    np.testing.assert_array_equal(a.curves[name], b.curves[name])


def journal(output_dir) -> optuna.Study:
  storage = storages.open_storage(None, output_dir)
  return optuna.load_study(study_name=ledger.STUDY_NAME, storage=storage)


@pytest.fixture(scope='module')
def hyperband_in_memory(blob_splits, one):
  return successive_halving.hyperband(HB_SPACE, blob_splits, devices=one, **HB)


@pytest.fixture(scope='module')
def pbt_in_memory(blob_splits, one):
  return pbt.pbt(PBT_SPACE, blob_splits, 4, devices=one, **PBT)


def test_hyperband_ledger_holds_pruned_trials_with_epochs_and_curves(
  blob_splits, one, hyperband_in_memory, tmp_path
):
  results = successive_halving.hyperband(
    HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **HB
  )
  same(results, hyperband_in_memory)
  trials = journal(tmp_path).trials
  assert [t.number for t in trials] == [row['trial_id'] for row in results.rows] == [0, 1, 2, 3, 4]
  for trial, row, curve in zip(trials, results.rows, results.curves['dev_accuracy'], strict=True):
    want = {'ok': TrialState.COMPLETE, 'pruned': TrialState.PRUNED}[row['status']]
    assert trial.state == want
    assert (
      trial.user_attrs['epochs'] == row['epochs'] and trial.user_attrs['bracket'] == row['bracket']
    )
    # Its curve, epoch by epoch, as intermediate values; the value is the last epoch's.
    steps = sorted(trial.intermediate_values)
    assert steps == list(range(1, row['epochs'] + 1))
    np.testing.assert_array_equal(
      [trial.intermediate_values[s] for s in steps], curve[: row['epochs']].astype(np.float64)
    )
    assert trial.value == curve[row['epochs'] - 1]
  assert [row['status'] for row in results.rows].count('pruned') == 2
  # The checkpoint goes once the search is done; the candidates kept are the top k at most.
  assert not (tmp_path / population_study.CHECKPOINT_FILE).exists()
  assert len(list((tmp_path / 'candidates').glob('trial_*.msgpack'))) <= HB['top_k']
  # A rerun of a finished search trains nothing and gives the same.
  again = successive_halving.hyperband(
    HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **HB
  )
  same(again, results)
  assert again.info['checkpoints'] == 0


def test_pbt_ledger_holds_lineage_and_the_values_members_end_with(
  blob_splits, one, pbt_in_memory, tmp_path
):
  results = pbt.pbt(PBT_SPACE, blob_splits, 4, devices=one, output_dir=tmp_path, **PBT)
  same(results, pbt_in_memory)
  assert results.info['lineage'] == pbt_in_memory.info['lineage']
  assert results.info['schedule'] == pbt_in_memory.info['schedule']
  trials = journal(tmp_path).trials
  lineage = results.info['lineage']
  for trial, row in zip(trials, results.rows, strict=True):
    assert trial.state == TrialState.COMPLETE
    # [generation, parent, score] at each exploit, parent itself where the member was kept.
    assert [entry[:2] for entry in trial.user_attrs['lineage']] == [
      [g + 1, p[trial.number]] for g, p in enumerate(lineage)
    ]
    # The score: its dev accuracy at the exploit (the curve of the weights it held then).
    for g, (_, _, score) in enumerate(trial.user_attrs['lineage']):
      assert score == pytest.approx(results.info['scores'][g][trial.number])
    assert trial.user_attrs[ledger.VALUES]['learning_rate'] == row['learning_rate']
    assert trial.user_attrs['origin'] == row['origin']
  assert any(p != i for parents in lineage for i, p in enumerate(parents))
  # Results.save writes the lineage table and the winner's schedule beside the usual files.
  results.save(tmp_path / 'out')
  with open(tmp_path / 'out' / 'lineage.csv', newline='') as f:
    table = list(csv.DictReader(f))
  assert len(table) == 4 * PBT['generations']
  assert {int(r['parent']) for r in table if r['generation'] == '1'} == set(lineage[0])
  with open(tmp_path / 'out' / 'schedule.csv', newline='') as f:
    steps = list(csv.DictReader(f))
  assert [(int(s['epoch_start']), int(s['epoch_end'])) for s in steps] == [(0, 1), (1, 2), (2, 3)]
  assert (tmp_path / 'out' / 'schedule.png').stat().st_size > 0
  best = json.loads((tmp_path / 'out' / 'best.json').read_text())
  assert best['schedule'] == results.info['schedule']
  assert best['pbt'] == {'seed': 0, 'population_size': 4, 'ready': 1}


@pytest.mark.parametrize('strategy', ['hyperband', 'pbt'])
def test_the_test_split_is_read_once_for_the_top_k_at_the_end(
  blob_splits, one, monkeypatch, tmp_path, strategy
):
  calls = []
  program = top_k.test_program

  def counting(config):
    run = program(config)

    def counted(hp, params, model_state, x, y):
      calls.append(np.asarray(x).shape)
      return run(hp, params, model_state, x, y)

    return counted

  monkeypatch.setattr(top_k, 'test_program', counting)
  if strategy == 'hyperband':
    search = lambda: successive_halving.hyperband(
      HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **HB
    )
  else:
    search = lambda: pbt.pbt(PBT_SPACE, blob_splits, 4, devices=one, output_dir=tmp_path, **PBT)
  results = search()
  tested = [row for row in results.rows if math.isfinite(row['test_accuracy'])]
  ranked_ok = [row['trial_id'] for row in results.ranked() if row['status'] == 'ok']
  assert sorted(row['trial_id'] for row in tested) == sorted(ranked_ok[:2])
  assert calls == [blob_splits.x_test.shape] * 2  # one evaluation each, on the test split
  search()  # a rerun of the finished search reads nothing again
  assert len(calls) == 2


class Crash(Exception):
  pass


@pytest.mark.parametrize(
  'strategy, at', [('hyperband', 'saved1'), ('hyperband', 'told2'), ('pbt', 'saved0')]
)
def test_a_crash_then_a_rerun_equals_the_uninterrupted_search(
  blob_splits, one, monkeypatch, tmp_path, hyperband_in_memory, pbt_in_memory, strategy, at
):
  def crash(name):
    if name == at:
      raise Crash(name)

  monkeypatch.setattr(population_study, 'crash_point', crash)
  if strategy == 'hyperband':
    search = lambda: successive_halving.hyperband(
      HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **HB
    )
    want = hyperband_in_memory
  else:
    search = lambda: pbt.pbt(PBT_SPACE, blob_splits, 4, devices=one, output_dir=tmp_path, **PBT)
    want = pbt_in_memory
  with pytest.raises(Crash):
    search()
  assert (tmp_path / population_study.CHECKPOINT_FILE).exists() or at.startswith('told')
  monkeypatch.setattr(population_study, 'crash_point', lambda name: None)
  messages = []
  if strategy == 'hyperband':
    resumed = successive_halving.hyperband(
      HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, report=messages.append, **HB
    )
  else:
    resumed = pbt.pbt(
      PBT_SPACE, blob_splits, 4, devices=one, output_dir=tmp_path, report=messages.append, **PBT
    )
  assert messages and messages[0].startswith("resuming study 'bnjax'")
  same(resumed, want)
  if strategy == 'pbt':  # in the same order too (best.json writes it)
    assert json.dumps(resumed.info['schedule']) == json.dumps(want.info['schedule'])


def test_a_resume_with_other_settings_is_refused(blob_splits, one, tmp_path, monkeypatch):
  def crash(name):
    if name == 'saved0':
      raise Crash(name)

  monkeypatch.setattr(population_study, 'crash_point', crash)
  with pytest.raises(Crash):
    successive_halving.hyperband(HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **HB)
  with pytest.raises(ledger.LedgerError, match='was made with eta=3, not 2'):
    successive_halving.hyperband(
      HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **{**HB, 'eta': 2}
    )


# ------------------------------------------------------------------------------ kill -9

RUNNER = """
import sys
from bnjax import data, files, search
splits = data.load(sys.argv[1])
strategy, output_dir = sys.argv[2], sys.argv[3]
options = dict(min_epochs=1, max_epochs=3, chunk_size=2) if strategy == 'hyperband' else dict(
    population_size=4, ready=1, epochs=3)
results = search.run(strategy, sys.argv[4], splits, seed=1, top_k=2, output_dir=output_dir,
                     report=print, **options)
results.to_csv(output_dir + '/results.csv')
files.write_json(output_dir + '/best.json', results.winner())
"""
SPECS = {
  'hyperband': 'learning_rate=log:1e-2:3e-1,hidden_units=int:5:6,num_layers=fixed:1',
  'pbt': 'learning_rate=log:1e-3:1e-1,beta1=1mlog:0.8:0.99,hidden_units=int:4:6,num_layers=fixed:1',
}


def run_search(data_file, strategy, output_dir, crash_at=None):
  env = dict(os.environ)
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '').replace(
    '--xla_force_host_platform_device_count=4', ''
  )
  env.pop('BNJAX_CRASH_AT', None)
  if crash_at:
    env['BNJAX_CRASH_AT'] = crash_at
  return subprocess.run(
    [sys.executable, '-c', RUNNER, str(data_file), strategy, str(output_dir), SPECS[strategy]],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


@pytest.fixture(scope='module')
def uninterrupted(blob_npz, tmp_path_factory):
  out = {}
  for strategy in SPECS:
    output_dir = tmp_path_factory.mktemp(f'whole_{strategy}')
    run = run_search(blob_npz, strategy, output_dir)
    assert run.returncode == 0, run.stderr[-3000:]
    out[strategy] = output_dir
  return out


@pytest.mark.slow
@pytest.mark.parametrize(
  'strategy, crash_at',
  [
    ('hyperband', 'saved0'),
    ('hyperband', 'told1'),
    ('hyperband', 'test'),
    ('pbt', 'saved1'),
    ('pbt', 'told0'),
  ],
)
def test_killed_then_resumed_equals_uninterrupted(
  blob_npz, uninterrupted, tmp_path, strategy, crash_at
):
  killed = run_search(blob_npz, strategy, tmp_path, crash_at)
  assert killed.returncode == -9, killed.stderr[-3000:]
  assert not (tmp_path / 'results.csv').exists()
  resumed = run_search(blob_npz, strategy, tmp_path)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'resuming' in resumed.stdout
  whole = uninterrupted[strategy]
  assert (tmp_path / 'results.csv').read_text() == (whole / 'results.csv').read_text()
  assert (tmp_path / 'best.json').read_text() == (whole / 'best.json').read_text()
  assert all(t.state.is_finished() for t in journal(tmp_path).trials)
  assert not (tmp_path / population_study.CHECKPOINT_FILE).exists()


def test_a_hyperband_study_planned_bracket_by_bracket_is_refused_in_one_line(
  blob_splits, one, tmp_path
):
  successive_halving.hyperband(HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **HB)
  study = journal(tmp_path)
  stored = dict(study.user_attrs[ledger.CONFIG])
  assert stored.pop('bucket_plan') == 'all_brackets'
  study.set_user_attr(ledger.CONFIG, stored)  # as a study of the version before was made
  with pytest.raises(ledger.LedgerError, match='planned by another bnjax version') as error:
    successive_halving.hyperband(HB_SPACE, blob_splits, devices=one, output_dir=tmp_path, **HB)
  assert '\n' not in str(error.value) and 'new --output_dir' in str(error.value)

r"""The benchmark suite: bnjax against its peers, side by side, in one command.

  python benchmarks/run.py             # everything (about 40 minutes on a quiet 2-core CPU)
  python benchmarks/run.py --quick     # every section, small (a few minutes)
  python benchmarks/run.py --sections=fixed_shape --repeats=5

Sections:
  fixed_shape  ms per trial-epoch, GFLOP/s and the share of the matmul peak
               (measured in the same run) of the BN-MLP 3 x 256, batch 128,
               Adam: bnjax `jit(vmap(train))` for several N, the jitted single
               trial in a loop, the search engine's own chunks (its chunk
               size, segments checked at their end, two chunks at once on a
               CPU), PyTorch eager and `torch.compile`; compile times apart.
  end_to_end   the default search (`experiments/random_search.py`) against
               Optuna TPE + PyTorch eager (`benchmarks/optuna_peer.py`): wall
               time and the winner's test accuracy over several seeds.
  scaling      N trials of the default space for a few epochs: trials/s,
               compiles, compile time, peak memory.

Writes <output_dir>/results.json (every figure), results.md (the tables) and
results.png. The peers come with `pip install -e '.[bench]'`; without torch
its rows are skipped. Runs unchanged on a GPU or TPU (the device's name is
printed; chunk sizes there follow device memory).
"""

import json
import os
import platform
import shlex
import statistics
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logging

import jax
from absl import app, flags

import bnjax.data
from benchmarks import end_to_end, fixed_shape, report, scaling, timing
from bnjax import distributed
from bnjax.search import sizing

SECTIONS = ('fixed_shape', 'end_to_end', 'scaling')
QUICK = flags.DEFINE_boolean('quick', False, 'Every section, small: a smoke run of the suite.')
SECTIONS_FLAG = flags.DEFINE_list('sections', list(SECTIONS), f'Which of {SECTIONS} to run.')
OUTPUT_DIR = flags.DEFINE_string('output_dir', 'benchmarks/results', 'Where the files go.')
REPEATS = flags.DEFINE_integer('repeats', 0, 'Timings per figure; 0: 5, or 2 with --quick.')
VECTORIZED = flags.DEFINE_list(
  'num_trials', ['1', '8', '64', '256'], 'fixed_shape: N of the vectorized runs.'
)
TRIAL_EPOCHS = flags.DEFINE_integer(
  'trial_epochs', 0, 'fixed_shape: trial-epochs per timing (N x epochs); 0: 64, or 8 with --quick.'
)
E2E_TRIALS = flags.DEFINE_integer('e2e_trials', 0, 'end_to_end: trials; 0: 24, or 4 with --quick.')
E2E_EPOCHS = flags.DEFINE_integer('e2e_epochs', 0, 'end_to_end: epochs; 0: 40, or 2 with --quick.')
SEEDS = flags.DEFINE_list('seeds', ['0', '1', '2'], 'end_to_end: seeds of both searches.')
SCALING = flags.DEFINE_list(
  'scaling_trials', ['24', '96', '384', '1536'], 'scaling: numbers of trials.'
)
TORCH_THREADS = flags.DEFINE_integer(
  'torch_threads',
  0,
  "end_to_end: the peer's PyTorch threads; 0: its default (one per core). The fixed-shape "
  'section times PyTorch eager with 1 thread and with its default.',
)
LEVER_TRIALS = flags.DEFINE_integer(
  'lever_trials', 8, 'fixed_shape: N at which the options (levers) are timed beside the default.'
)
SCALING_EPOCHS = flags.DEFINE_integer('scaling_epochs', 2, 'scaling: epochs per trial.')

logging.getLogger('jax._src.xla_bridge').setLevel(logging.WARNING)


def _torch_version():
  try:
    import torch

    return torch.__version__
  except ImportError:
    return None


def machine() -> dict:
  device = jax.devices()[0]
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  return {
    'device': f'{len(jax.devices())} x {device.device_kind} ({device.platform})',
    'cpu': cpu,
    'cores': os.cpu_count(),
    'jax': jax.__version__,
    'torch': _torch_version(),
    'command': shlex.join(['python', 'benchmarks/run.py', *sys.argv[1:]]),
    'load_start': timing.load_average(),
  }


def fixed_shape_section(quick: bool, repeats: int) -> dict:
  splits = bnjax.data.load('mnist1d')
  flops = fixed_shape.flops_per_trial_epoch(splits)
  trial_epochs = TRIAL_EPOCHS.value or (8 if quick else 64)
  peak = fixed_shape.matmul_peak(repeats)
  print(f'matmul peak: {peak["gflops"]:.0f} GFLOP/s (load {peak["load"]:.1f})')
  measured = {}

  def keep(name, row):  # printed as it comes, so a cut-off run still shows what it measured
    measured[name] = row
    print(
      f'  {name}: {1e3 * row["median"] / row["trial_epochs"]:.1f} ms/trial-epoch, '
      f'load {row["load"]:.1f}',
      flush=True,
    )

  for n in [int(n) for n in (VECTORIZED.value[:2] if quick else VECTORIZED.value)]:
    epochs = max(1, trial_epochs // n)
    keep(f'bnjax vmap N={n}', fixed_shape.vectorized(splits, n, epochs, repeats))
  loop_trials = 2 if quick else 4
  keep(
    f'bnjax jitted single trial, loop of {loop_trials}',
    fixed_shape.loop(splits, loop_trials, max(1, trial_epochs // loop_trials), repeats),
  )
  # The options, each beside the default at one N (dropout: what keep_prob 0.8 costs).
  n = LEVER_TRIALS.value
  epochs = max(1, trial_epochs // n)
  levers = {
    'bfloat16 matmuls': dict(matmul_dtype='bfloat16'),
    f'eval_every={epochs} (dev once)': dict(eval_every=epochs),
    'dropout keep_prob 0.8': dict(dropout=True, hp_values={'keep_prob': 0.8}),
  }
  if jax.default_backend() == 'cpu':
    # XLA's CPU backend sends matmuls to YNNPACK by default; this asks for its own kernels.
    levers['no YNNPACK'] = dict(compiler_options={'xla_cpu_experimental_ynn_fusion_type': ''})
  for name, options in levers.items():
    keep(f'bnjax vmap N={n}, {name}', fixed_shape.vectorized(splits, n, epochs, repeats, **options))
  # The way a search trains: the engine's own chunk size, segments checked
  # once at their end, two chunks at once on a CPU (the target is read here).
  for dtype in ('float32', 'bfloat16'):
    config = fixed_shape.config(1, splits.num_classes, matmul_dtype=dtype)
    chunk = sizing.chunk_runs(config, splits, distributed.devices())
    epochs = max(1, trial_epochs // chunk)
    row = fixed_shape.engine(splits, chunk, epochs, repeats, matmul_dtype=dtype)
    at_once = (
      f'{row["workers"]} chunks of N={chunk} at once' if row['workers'] > 1 else f'N={chunk}'
    )
    keep(f'bnjax search engine, {at_once}, {dtype} matmuls', row)
  if _torch_version():
    import torch

    from benchmarks import peer_torch

    hp = {**bnjax.space.DEFAULTS}
    epochs = max(2, trial_epochs // 8)
    default_threads = torch.get_num_threads()
    cases = [('PyTorch eager', False, default_threads), ('torch.compile', True, default_threads)]
    if default_threads > 1:
      cases.insert(1, ('PyTorch eager', False, 1))
    for name, compiled, threads in cases:
      name = f'{name}, {threads} thread{"s" if threads > 1 else ""}'
      torch.set_num_threads(threads)
      out = peer_torch.epoch_seconds(hp, splits, epochs=epochs, repeats=repeats, compiled=compiled)
      groups = [sum(out['epochs'][i : i + epochs]) for i in range(0, len(out['epochs']), epochs)]
      row = timing.summary(groups, [timing.load_average()])
      row |= {'trial_epochs': epochs}
      if compiled:
        row['compile_seconds'] = out['first_epoch'] - statistics.median(out['epochs'])
      keep(name, row)
    torch.set_num_threads(default_threads)
  # The peak again after the runners: the larger of the two is the machine's.
  after = fixed_shape.matmul_peak(repeats)
  peak = max(peak, after, key=lambda p: p['gflops'])
  runners = {}
  for name, row in measured.items():
    runners[name] = fixed_shape.rates(row, flops, peak['gflops'])
  return {
    'shape': '40 -> 3 x 256 -> 10',
    'gflop_per_trial_epoch': flops / 1e9,
    'matmul_peak': peak,
    'runners': runners,
  }


def end_to_end_section(quick: bool) -> dict:
  seeds = [int(s) for s in SEEDS.value][: 1 if quick else None]
  num_trials = E2E_TRIALS.value or (4 if quick else 24)
  epochs = E2E_EPOCHS.value or (2 if quick else 40)
  runs = end_to_end.compare(seeds, num_trials, epochs, torch_threads=TORCH_THREADS.value)
  peer = runs['optuna_torch']['median']
  return {
    'num_trials': num_trials,
    'epochs': epochs,
    'seeds': seeds,
    'runs': runs,
    'speedup': {
      'first run (compiles)': peer / runs['bnjax_cold']['median'],
      'rerun (compile cache warm)': peer / runs['bnjax_warm']['median'],
      'first run, bfloat16 matmuls': peer / runs['bnjax_bfloat16_cold']['median'],
    },
  }


def main(argv):
  del argv
  quick = QUICK.value
  repeats = REPEATS.value or (2 if quick else 5)
  unknown = set(SECTIONS_FLAG.value) - set(SECTIONS)
  if unknown:
    raise SystemExit(f'error: unknown --sections {sorted(unknown)}; choose from {SECTIONS}')
  figures = {'machine': machine()}
  print(f'bnjax benchmark suite on {figures["machine"]["device"]}, {figures["machine"]["cpu"]}')
  if 'fixed_shape' in SECTIONS_FLAG.value:
    print('fixed shape:')
    figures['fixed_shape'] = fixed_shape_section(quick, repeats)
  if 'end_to_end' in SECTIONS_FLAG.value:
    print('end to end:')
    figures['end_to_end'] = end_to_end_section(quick)
  if 'scaling' in SECTIONS_FLAG.value:
    print('scaling:')
    trials = [int(n) for n in SCALING.value][: 2 if quick else None]
    figures['scaling'] = scaling.measure(trials, 1 if quick else SCALING_EPOCHS.value)
  figures['machine']['load_end'] = timing.load_average()
  os.makedirs(OUTPUT_DIR.value, exist_ok=True)
  with open(os.path.join(OUTPUT_DIR.value, 'results.json'), 'w') as f:
    json.dump(figures, f, indent=1)
  table = report.markdown(figures)
  with open(os.path.join(OUTPUT_DIR.value, 'results.md'), 'w') as f:
    f.write(table)
  report.figure(figures, os.path.join(OUTPUT_DIR.value, 'results.png'))
  print(table)
  print(f'wrote {OUTPUT_DIR.value}/results.json, results.md, results.png')


if __name__ == '__main__':
  app.run(main)

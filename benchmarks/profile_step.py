r"""Where a chunk's training time goes, op by op, grouped by what the ops do.

  python benchmarks/profile_step.py                             # 3 x 256, N = 8, one core
  python benchmarks/profile_step.py --width=448 --num_trials=4 --matmul_dtype=bfloat16

Traces (`jax.profiler`) one call of the search engine's segment program
(`bnjax.search.population.segment_program`, its steps unchecked, as
`run_trials` runs them) on the BN-MLP 40 -> 3 x width -> 10, MNIST-1D, batch
128, Adam, dropout with keep_prob 0.8, the widths and depth traced as in a
bucket. Every XLA op's time is summed into a group:

* **matmuls**, by role: the forward `x @ w`, the backward's data gradient
  `g @ w.T` and weight gradient `x.T @ g` of the three hidden layers, and
  the small ones (the first layer's and the output layer's);
* the ops whose root lies in one of bnjax's named scopes (`jax.named_scope`):
  `batch_norm`, `dropout` (its random bits included), `optimizer` (the
  update of parameters and moments, the gradient's last add included),
  `loss`, `shuffle` (the epoch's permutation), `batch` (the mini-batch
  gathers), `dev_evaluation`, `divergence_check`;
* everything else (activations, width masks, the depth `cond`).

A fusion is counted in the group of its root, so the groups are close, not
exact. The run is pinned to `--cores` cores (1 by default, before JAX starts
its threads): on one core an op's time is the core time it takes, the cost
that counts where the engine runs a chunk per core (two at once on a 2-core
CPU). On one core the ops' times add up to the call's wall time, which the
table prints beside them. Matmul rates are GFLOP/s of that op's own time;
the machine's float32 peak per core is what `benchmarks/run.py` measures,
divided by its cores.
"""

import os
import sys

if __package__ in (None, ''):
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import collections
import glob
import gzip
import json
import math
import re
import statistics
import tempfile
import time

from absl import app, flags

WIDTH = flags.DEFINE_integer('width', 256, 'Hidden width (3 layers).')
NUM_TRIALS = flags.DEFINE_integer('num_trials', 8, 'Runs in the chunk (N).')
EPOCHS = flags.DEFINE_integer('epochs', 4, 'Epochs in the profiled segment.')
MATMUL_DTYPE = flags.DEFINE_enum('matmul_dtype', 'float32', ['float32', 'bfloat16'], 'Matmuls.')
CORES = flags.DEFINE_integer('cores', 1, 'Cores to run on (0: all).')
TOP = flags.DEFINE_integer('top', 0, 'Also list the N costliest ops.')

SCOPES = (
  'dev_evaluation',  # first: the evaluation's BN ops are evaluation's
  'divergence_check',
  'optimizer',
  'batch_norm',
  'dropout',
  'loss',
  'shuffle',
  'batch',
)

# Ops whose profiled time holds other ops' (the loops, the depth `cond`).
CONTROL_FLOW = ('while', 'conditional', 'call')


def _computations(hlo: str) -> dict[str, list[str]]:
  """The optimized HLO text's computations: name -> instruction lines."""
  computations, name = {}, None
  for line in hlo.splitlines():
    header = re.match(r'^(?:ENTRY )?%?([\w.\-]+) .*\{$', line)
    if header and not line.startswith(' '):
      name = header.group(1)
      computations[name] = []
    elif name is not None and line.startswith('  '):
      computations[name].append(line)
  return computations


def _instruction(line: str):
  """`(name, shape, opcode, operands, attributes)` of one instruction line, or None."""
  m = re.match(r'^\s+(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w\-]+)\((.*?)\)(.*)$', line)
  if m is None:
    return None
  operands = re.findall(r'%?([\w.\-]+)', m.group(4))
  return m.group(1), m.group(2), m.group(3), operands, m.group(5)


def _dims(shape: str) -> list[int]:
  found = re.match(r'\w+\[([\d,]*)\]', shape)
  return [int(d) for d in found.group(1).split(',') if d] if found else []


def _dot(line: str, shapes: dict[str, str]):
  """`(output dims, contracted size)` of a dot instruction line."""
  _, shape, _, operands, attributes = _instruction(line)
  contracting = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', attributes)
  lhs = _dims(shapes[operands[0]])
  k = 1
  for axis in contracting.group(1).split(','):
    k *= lhs[int(axis)]
  return _dims(shape), k


def _ops(hlo: str) -> dict[str, tuple[str, tuple[list[int], int] | None]]:
  """Each top-level op's `op_name` and, for a matmul, its `(output dims, contracted size)`.

  A fusion is a matmul when its fused computation holds a `dot` (YNNPACK's
  fusions of a dot with its operands' conversions).
  """
  computations = _computations(hlo)
  dot_of = {}
  for name, lines in computations.items():
    shapes = {}
    for line in lines:
      parsed = _instruction(line)
      if parsed is None:
        continue
      shapes[parsed[0]] = parsed[1]
      if parsed[2] == 'dot':
        dot_of.setdefault(name, _dot(line, shapes))
  ops = {}
  for lines in computations.values():
    shapes = {}
    for line in lines:
      parsed = _instruction(line)
      if parsed is None:
        continue
      name, shape, opcode, _, attributes = parsed
      shapes[name] = shape
      if opcode in CONTROL_FLOW:  # its time is its ops', counted where they are
        continue
      op_name = re.search(r'op_name="([^"]*)"', attributes)
      calls = re.search(r'calls=%?([\w.\-]+)', attributes)
      dot = _dot(line, shapes) if opcode == 'dot' else dot_of.get(calls and calls.group(1))
      ops[name] = (op_name.group(1) if op_name else '', dot)
  return ops


def _group(op_name: str, dot, width: int, batch: int) -> str:
  """The group of an op (see the module docstring)."""
  if dot is not None:
    out, k = dot
    if 'dev_evaluation' in op_name:
      return 'matmuls: dev evaluation'
    if out[-2:] == [width, width] and k == batch:
      return 'matmuls: hidden weight gradients x.T @ g'
    if out[-2:] == [batch, width] and k == width:
      if 'transpose' in op_name:
        return 'matmuls: hidden data gradients g @ w.T'
      return 'matmuls: hidden forward x @ w'
    return 'matmuls: first and output layers'
  for scope in SCOPES:
    if re.search(rf'\b{scope}\b', op_name):
      return scope
  return 'other'


def main(argv):
  del argv
  if CORES.value:
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: CORES.value])
  import jax  # after the affinity: XLA sizes its thread pool from it
  import jax.numpy as jnp

  import bnjax.data
  from benchmarks import fixed_shape
  from bnjax.search import population

  splits = bnjax.data.load('mnist1d')
  width, n, epochs = WIDTH.value, NUM_TRIALS.value, EPOCHS.value
  hidden = (width,) * 3
  config = fixed_shape.config(
    epochs, splits.num_classes, dropout=True, hidden_sizes=hidden, matmul_dtype=MATMUL_DTYPE.value
  )
  hp = bnjax.hparams(keep_prob=0.8, widths=list(hidden), depth=3)
  hp = jax.tree.map(lambda v: jnp.broadcast_to(v, (n, *jnp.shape(v))), hp)
  data = fixed_shape.train_data(splits)
  start = population.init_population(config, hp, jax.random.split(jax.random.key(0), n), data)
  program = population.segment_program.lower(config, hp, start, data, epochs, False).compile()
  run = lambda: jax.block_until_ready(program(hp, start, data))
  run()
  walls = []
  for _ in range(3):
    begin = time.perf_counter()
    run()
    walls.append(time.perf_counter() - begin)
  with tempfile.TemporaryDirectory(prefix='bnjax-profile-') as trace_dir:
    with jax.profiler.trace(trace_dir):
      run()
    (path,) = glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True)
    with gzip.open(path) as f:
      events = json.load(f)
  events = events['traceEvents'] if isinstance(events, dict) else events
  ops = _ops(program.as_text())
  micros, calls = collections.Counter(), collections.Counter()
  for event in events:
    if event.get('ph') == 'X' and event.get('name') in ops:
      micros[event['name']] += event['dur']
      calls[event['name']] += 1

  group_of = {name: _group(*ops[name], width, config.batch_size) for name in micros}
  groups, flops = collections.Counter(), collections.Counter()
  for name, us in micros.items():
    groups[group_of[name]] += us
    dot = ops[name][1]
    if dot is not None:
      flops[group_of[name]] += 2 * math.prod(dot[0]) * dot[1] * calls[name]
  total = sum(groups.values())
  wall = statistics.median(walls)
  print(
    f'BN-MLP 40 -> 3 x {width} -> 10, N = {n}, {epochs} epochs, {MATMUL_DTYPE.value} matmuls, '
    f'{len(os.sched_getaffinity(0))} core(s), {jax.devices()[0].device_kind}'
  )
  print(
    f'one call: {1e3 * wall:.0f} ms, median of 3 ({1e3 * wall / (n * epochs):.1f} ms per '
    f'trial-epoch); ops of the profiled call: {total / 1e3:.0f} ms; load {os.getloadavg()[0]:.1f}'
  )
  print('| group | ms | share | GFLOP/s |')
  print('| --- | --- | --- | --- |')
  for group, us in groups.most_common():
    rate = f'{flops[group] / us / 1e3:.0f}' if flops[group] else ''
    print(f'| {group} | {us / 1e3:.1f} | {100 * us / total:.1f}% | {rate} |')
  if TOP.value:
    print(f'\nthe {TOP.value} costliest ops:')
    for name, us in micros.most_common(TOP.value):
      where = ops[name][0][-60:]
      print(f'{us / 1e3:8.1f} ms {calls[name]:5d} calls  {name:32s} {group_of[name]:40s} {where}')


if __name__ == '__main__':
  app.run(main)

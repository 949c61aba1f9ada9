"""Many trials in one program: buckets, chunks, devices, and the top-k test.

`run_trials` takes a table of hyperparameters (one row per trial), groups
it into buckets (one compile each), and runs every bucket as
`jit(vmap(train))` over chunks of trials that fit memory, with the trial axis
sharded over the devices. A trial's key is `fold_in(fold_in(seed, trial_id),
execution)`, so its result depends on neither the chunk size nor the other
trials in its chunk. Only the `top_k` trials by dev metric see the test split,
once, at the end.
"""

import math
import time
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from bnjax.data import Splits
from bnjax.registry import to_python
from bnjax.search import buckets
from bnjax.search.results import Results, rank_key
from bnjax.space import with_defaults
from bnjax.training import TrainConfig, TrainData, evaluate, make_train

# Bytes a chunk may use where the device does not report its memory (CPU).
HOST_MEMORY_BUDGET = 2 << 30


def trial_bytes(config: TrainConfig, in_features: int, n_train: int, n_dev: int) -> int:
  """A rough upper bound of one trial's memory inside a chunk, in bytes.

  Params live up to five times (params, gradients, two optimizer moments, the
  best snapshot); activations of a training step are kept for the backward
  pass (about six arrays per layer); evaluation holds one chunk's activations.
  """
  width, depth = max(config.hidden_sizes), len(config.hidden_sizes)
  num_params = in_features * width + (depth - 1) * width * width + width * config.num_classes
  train_activations = 6 * config.batch_size * width * depth
  eval_activations = 3 * min(n_dev, config.eval_batch_size) * width * depth
  return 4 * (5 * num_params + train_activations + eval_activations + n_train)


def memory_budget(devices: Sequence[jax.Device]) -> int:
  """Half of what the devices report free, or `HOST_MEMORY_BUDGET` on the CPU."""
  stats = devices[0].memory_stats() if hasattr(devices[0], 'memory_stats') else None
  if not stats or 'bytes_limit' not in stats:
    return HOST_MEMORY_BUDGET
  free = stats['bytes_limit'] - stats.get('bytes_in_use', 0)
  return len(devices) * free // 2


def trial_keys(seed: int, trial_ids: np.ndarray, executions: np.ndarray) -> jax.Array:
  """Key of each (trial, execution): independent of chunking and neighbours."""
  base = jax.random.key(seed)
  return jax.vmap(lambda t, e: jax.random.fold_in(jax.random.fold_in(base, t), e))(
    jnp.asarray(trial_ids, jnp.uint32), jnp.asarray(executions, jnp.uint32)
  )


def run_trials(
  table: dict,
  splits: Splits,
  *,
  seed: int = 0,
  epochs: int = 20,
  executions_per_trial: int = 1,
  select: str = 'final',
  top_k: int = 5,
  test: bool = True,
  chunk_size: int | None = None,
  devices: Sequence[jax.Device] | None = None,
  eval_batch_size: int = 1024,
  width_ratio: float | None = 1.5,
  first_trial_id: int = 0,
  hyperparameters: Sequence[str] | None = None,
  scales: dict | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> Results:
  """Trains every row of `table` and returns the `Results`.

  Args:
    table: hyperparameter name -> `[trials]` array (e.g. `Space.sample`);
      missing canonical names take their defaults.
    splits: the data; only train and dev are used for training and selection.
    seed: the search's seed; trial `i` uses `fold_in(seed, first_trial_id + i)`.
    epochs: epochs per trial.
    executions_per_trial: seeds per configuration (an extra vmapped axis);
      the rows report their mean and spread.
    select: rank by the 'final' epoch's dev metrics or the 'best' epoch's.
    top_k: how many of the best configurations are evaluated on test.
    test: evaluate them now; False keeps their params in `candidates` for a
      later `test_top_k` (a search in rounds tests once, at the end).
    chunk_size: trials (x executions) per program; default from `trial_bytes`
      and the devices' memory.
    devices: where to shard the trial axis; default all local devices.
    eval_batch_size: examples per evaluation batch.
    width_ratio: split buckets so no trial is padded wider than this times
      its own width (None: one bucket per static setting).
    first_trial_id: id of the first row (so later rounds get fresh keys).
    hyperparameters: the searched names, shown first (default: the table's).
    scales: name -> sampling scale ('log', 'one_minus_log', ...), for plots.
    progress: called as `progress(trials_done, trials_total)` after each chunk.
  """
  start = time.perf_counter()
  num_trials = len(next(iter(table.values())))
  if executions_per_trial < 1:
    raise ValueError(f'executions_per_trial must be >= 1; got {executions_per_trial}.')
  table = with_defaults(table, num_trials)
  n_train = splits.x_train.shape[0]
  largest_batch = int(np.max(table['batch_size']))
  if largest_batch > n_train:
    raise ValueError(
      f'batch_size {largest_batch} exceeds the {n_train} training examples; '
      'lower the batch_size range of the space.'
    )
  devices = list(devices or jax.local_devices())
  mesh = Mesh(np.asarray(devices), ('trials',))
  sharded = NamedSharding(mesh, PartitionSpec('trials'))
  data = jax.device_put(
    TrainData(splits.x_train, splits.y_train, splits.x_dev, splits.y_dev),
    NamedSharding(mesh, PartitionSpec()),
  )
  planned = buckets.make_buckets(
    table,
    epochs=epochs,
    num_classes=splits.num_classes,
    select=select,
    eval_batch_size=eval_batch_size,
    width_ratio=width_ratio,
  )
  executions = executions_per_trial
  outcome = {}  # trial index -> per-execution metrics (host numpy)
  pool = []  # the best trials so far, with their params, for the test
  info = {'buckets': len(planned), 'compiles': 0, 'chunks': 0, 'devices': len(devices)}
  done = 0
  for bucket_index, bucket in enumerate(planned):
    program = _compile_counting(bucket.config, info)
    per_trial = trial_bytes(bucket.config, splits.num_features, n_train, splits.x_dev.shape[0])
    size = chunk_size or max(1, memory_budget(devices) // per_trial)
    size = min(size, len(bucket.trial_ids) * executions)
    # A multiple of the device count, and of the executions so that a trial's
    # runs always share a chunk.
    unit = math.lcm(len(devices), executions)
    size = -(-size // unit) * unit
    hp_all = buckets.traced_hparams(table, bucket.trial_ids, len(bucket.config.hidden_sizes))
    flat = np.repeat(np.arange(len(bucket.trial_ids)), executions)
    flat_exec = np.tile(np.arange(executions), len(bucket.trial_ids))
    for begin in range(0, len(flat), size):
      rows = flat[begin : begin + size]
      pad = size - len(rows)  # the last chunk repeats its first row; results dropped
      rows_padded = np.concatenate([rows, np.full(pad, rows[0])])
      exec_padded = np.concatenate([flat_exec[begin : begin + size], np.zeros(pad, np.int64)])
      ids = bucket.trial_ids[rows_padded]
      hp = jax.device_put({k: v[rows_padded] for k, v in hp_all.items()}, sharded)
      keys = jax.device_put(trial_keys(seed, first_trial_id + ids, exec_padded), sharded)
      result = program(hp, keys, data)
      metrics = jax.device_get((result.metrics, result.diverged_step))
      info['chunks'] += 1
      chunk_done = {}
      for j in range(len(rows)):
        trial = int(ids[j])
        entry = outcome.setdefault(trial, {'bucket': bucket_index, 'runs': []})
        entry['runs'].append((j, jax.tree.map(lambda a, j=j: a[j], metrics)))
        if len(entry['runs']) == executions:
          chunk_done[trial] = [j for j, _ in entry['runs']]
      pool = _keep_best(pool, chunk_done, outcome, result, bucket, select, top_k, hp_all)
      done = sum(len(e['runs']) == executions for e in outcome.values())
      if progress:
        progress(done, num_trials)
  rows, curves = _rows(table, outcome, select, first_trial_id)
  for entry in pool:
    entry['trial'] += first_trial_id
  info['seconds'] = time.perf_counter() - start
  searched = tuple(hyperparameters or table.keys())
  names = searched + tuple(name for name in table if name not in searched)
  results = Results(
    rows, curves, names, select, searched, dict(scales or {}), info, candidates=pool
  )
  return test_top_k(results, splits, top_k) if test else results


def test_top_k(results: Results, splits: Splits, k: int) -> Results:
  """Evaluates the `k` best configurations on the test split, once, in eval mode.

  Fills their `test_accuracy` (the rest stay NaN) and drops the kept params.
  Diverged trials are never tested: their numbers would mean nothing.
  """
  by_id = {row['trial_id']: row for row in results.rows}
  kept = sorted(results.candidates, key=lambda e: rank_key(by_id[e['trial']]))
  kept = [entry for entry in kept if by_id[entry['trial']]['status'] == 'ok']
  for entry in kept[:k]:
    by_id[entry['trial']]['test_accuracy'] = _test_accuracy(entry, splits)
  results.candidates = []
  return results


def _compile_counting(config: TrainConfig, info: dict):
  """`jit(vmap(train))` for one bucket; counts its traces in `info['compiles']`."""
  train = make_train(config)

  def counted(hp, keys, data):
    info['compiles'] += 1  # runs at trace time only
    return jax.vmap(train, in_axes=(0, 0, None))(hp, keys, data)

  return jax.jit(counted)


def _selected(metrics: dict, select: str) -> tuple[float, float, float, int]:
  """(dev accuracy, dev loss, train loss, epoch) of the selected epoch of one run."""
  accuracy = np.asarray(metrics['dev_accuracy'])
  epoch = len(accuracy) - 1
  if select == 'best' and not np.all(np.isnan(accuracy)):
    epoch = int(np.nanargmax(accuracy))
  return (
    float(accuracy[epoch]),
    float(metrics['dev_loss'][epoch]),
    float(metrics['train_loss'][epoch]),
    epoch,
  )


def _summarize(entry: dict, select: str) -> dict:
  runs = [run for _, run in entry['runs']]
  picked = np.asarray([_selected(metrics, select) for metrics, _ in runs])
  diverged = [int(step) for _, step in runs if step >= 0]
  mean_curve = (
    np.nanmean(np.asarray([m['dev_accuracy'] for m, _ in runs]), axis=0)
    if not diverged
    else np.asarray(runs[0][0]['dev_accuracy'])
  )
  return {
    'status': 'diverged' if diverged else 'ok',
    'dev_accuracy': float(np.mean(picked[:, 0])) if not diverged else float('nan'),
    'dev_accuracy_std': float(np.std(picked[:, 0])) if not diverged else float('nan'),
    'dev_loss': float(np.mean(picked[:, 1])) if not diverged else float('nan'),
    'best_epoch': int(np.nanargmax(mean_curve)) if not np.all(np.isnan(mean_curve)) else -1,
    'train_loss': float(np.mean(picked[:, 2])) if not diverged else float('nan'),
    'diverged_step': min(diverged) if diverged else -1,
    'test_accuracy': float('nan'),
  }


def _rows(table: dict, outcome: dict, select: str, first_trial_id: int):
  rows, curves = [], {'train_loss': [], 'dev_loss': [], 'dev_accuracy': []}
  for trial in range(len(table['learning_rate'])):
    entry = outcome[trial]
    row = {'trial_id': first_trial_id + trial}
    row.update({name: to_python(table[name][trial]) for name in table})
    row['bucket'] = entry['bucket']
    row.update(_summarize(entry, select))
    rows.append(row)
    for name in curves:
      curves[name].append(np.mean([metrics[name] for _, (metrics, _) in entry['runs']], axis=0))
  return rows, {name: np.asarray(curve) for name, curve in curves.items()}


def _keep_best(pool, chunk_done, outcome, result, bucket, select, top_k, hp_all):
  """Merges this chunk's finished trials into the top-k pool, with their params."""
  candidates = []
  for trial, positions in chunk_done.items():
    summary = _summarize(outcome[trial], select)
    candidates.append(({'trial_id': trial, **summary}, trial, positions))
  candidates.sort(key=lambda c: rank_key(c[0]))
  for summary, trial, positions in candidates[:top_k]:
    take = lambda tree, positions=positions: jax.device_get(
      jax.tree.map(lambda a: a[np.asarray(positions)], tree)
    )
    local = int(np.flatnonzero(bucket.trial_ids == trial)[0])
    pool.append(
      {
        'trial': trial,
        'summary': summary,
        'config': bucket.config,
        'hp': {k: v[local] for k, v in hp_all.items()},
        'params': take(result.params),
        'model_state': take(result.model_state),
      }
    )
  pool.sort(key=lambda e: rank_key(e['summary']))
  return pool[:top_k]


def _test_accuracy(entry: dict, splits: Splits) -> float:
  """Mean test accuracy over a configuration's executions, in eval mode."""

  def accuracy(params, model_state):
    return evaluate(
      entry['config'], entry['hp'], params, model_state, splits.x_test, splits.y_test
    )[1]

  accuracies = jax.jit(jax.vmap(accuracy))(entry['params'], entry['model_state'])
  return float(np.mean(np.asarray(accuracies)))

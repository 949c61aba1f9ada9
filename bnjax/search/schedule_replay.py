"""Replaying a population-based training winner: its schedule, trained again.

`pbt.pbt` records the winner's hyperparameter schedule (`pbt.schedule`):
for each generation, the values its line trained with and the member whose
loop key trained those epochs. `replay` trains that line again from what
best.json holds, in a population of the search's shape, and tests it once;
`experiments/train.py --schedule=<best.json>` calls it.
"""

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

from bnjax.data import Splits
from bnjax.search import buckets, chunks
from bnjax.search import population as pop
from bnjax.search.checks import SearchError
from bnjax.search.cohorts import CURVES, sampling_key
from bnjax.search.top_k import test_program
from bnjax.space import as_space, with_defaults
from bnjax.training import TrainConfig


class Replay(NamedTuple):
  """What `replay` gives: the line's curves, its final params and its test accuracy."""

  curves: dict  # 'train_loss', 'dev_loss', 'dev_accuracy' -> [epochs] float32
  config: TrainConfig
  hp: dict  # the last generation's traced hyperparameters, no trial axis
  params: Any
  model_state: Any
  test_accuracy: float | None  # None: diverged, not tested


def replay(winner: dict, splits: Splits, *, devices: Sequence[jax.Device] | None = None) -> Replay:
  """Trains a PBT winner again from what best.json holds (`Results.winner`), and tests it once.

  Generation `g` trains `ready` epochs with the values `winner['schedule'][g]`
  gives and the loop key of the member that trained those epochs in the
  search (`trial_id`); the weights start from the first member's init. It
  runs in a population of the search's shape (`population_size` copies, the
  bucket's padded `hidden_sizes`), so on the machine and devices that ran
  the search, the curves are the winner's bit for bit (a trial's numbers do
  not depend on its neighbours at equal shapes; a population of one would
  agree only to float32 rounding).

  Raises:
    SearchError: `winner` is not a PBT winner's record.
  """
  missing = [key for key in ('schedule', 'pbt', 'hyperparameters') if not winner.get(key)]
  if missing:
    raise SearchError(
      f'the record holds no {missing[0]!r}: only a --strategy=pbt best.json has a schedule.'
    )
  run, steps = winner['pbt'], winner['schedule']
  n, ready, seed = run['population_size'], run['ready'], run['seed']
  devices = list(devices or jax.local_devices())
  data, sharding = chunks.data_on(devices, splits)
  row = winner['hyperparameters']
  table = with_defaults({name: np.asarray([value] * n) for name, value in row.items()}, n)
  config = _search_config(as_space(winner['space']), splits, n, seed, ready * len(steps))
  put = lambda tree: tree if sharding is None else jax.device_put(tree, sharding)

  def hp_of(step: dict) -> dict:
    values = {
      **table,
      **{k: np.full(n, v) for k, v in step.items() if k not in ('epochs', 'trial_id')},
    }
    return put(buckets.traced_hparams(values, np.arange(n), len(config.hidden_sizes)))

  def keys_of(step: dict) -> jax.Array:
    return put(chunks.trial_keys(seed, np.full(n, step['trial_id']), np.zeros(n, np.int64)))

  state = pop.init_population(config, hp_of(steps[0]), keys_of(steps[0]), data)
  parts = []
  for step in steps:
    # The member that trained these epochs kept its own loop key (init's second half).
    loop = jax.vmap(lambda key: jax.random.split(key)[1])(keys_of(step))
    state = state._replace(key=put(loop))
    state, metrics = pop.run_segment_checked_at_end(config, hp_of(step), state, data, ready)
    parts.append(metrics)
  curves = {name: np.concatenate([p[name] for p in parts], axis=1)[0] for name in CURVES}
  hp = {name: np.asarray(jax.device_get(v))[0] for name, v in hp_of(steps[-1]).items()}
  params, model_state = jax.device_get(
    jax.tree.map(lambda leaf: leaf[:1], (state.params, state.model_state))
  )
  test_accuracy = None
  if int(np.asarray(jax.device_get(state.diverged_step))[0]) < 0:
    program = test_program(config)
    test_accuracy = float(np.mean(program(hp, params, model_state, splits.x_test, splits.y_test)))
  first = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)
  return Replay(curves, config, hp, first(params), first(model_state), test_accuracy)


def _search_config(space, splits: Splits, n: int, seed: int, epochs: int) -> TrainConfig:
  """The search's bucket program: its population drawn again, padded to its widest and deepest."""
  table = with_defaults(space.sample(sampling_key(seed, 0), n), n)
  (bucket,) = buckets.make_buckets(
    table,
    epochs=epochs,
    num_classes=splits.num_classes,
    width_ratio=None,
    input_shape=splits.input_shape,
  )
  return bucket.config

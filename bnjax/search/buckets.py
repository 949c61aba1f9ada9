"""From a table of sampled hyperparameters to buckets of traced arrays.

A *bucket* is one compiled program: trials that share every static setting
(batch size, activation, BN on/off and placement) and a similar width, so
that padding wastes little (see `make_buckets`). Everything else
is traced: numbers as float32, categories (optimizer, schedule, init) as
int32 indices, and the architecture as `widths [layers]` and `depth`, padded
to the bucket's widest and deepest trial.
"""

from typing import NamedTuple

import jax
import numpy as np

from bnjax.hyperparameters import TRACED, hparams
from bnjax.registry import STATIC
from bnjax.search.checks import SearchError
from bnjax.training import TrainConfig


class Bucket(NamedTuple):
  static: dict  # the static hyperparameter values its trials share
  trial_ids: np.ndarray  # [n] int, positions in the trial table
  config: TrainConfig


def layer_widths(table: dict[str, np.ndarray]) -> np.ndarray:
  """`[trials, max layers]` real widths: `hidden_units_k` overrides `hidden_units`.

  Layers past a trial's depth get width 1: they are skipped, and a positive
  width keeps their (zeroed) init finite.
  """
  depth = np.asarray(table['num_layers'], np.int64)
  max_depth = int(depth.max())
  widths = np.repeat(np.asarray(table['hidden_units'], np.int64)[:, None], max_depth, axis=1)
  for layer in range(max_depth):
    override = table.get(f'hidden_units_{layer + 1}')
    if override is not None:
      widths[:, layer] = override
  return np.where(np.arange(max_depth) < depth[:, None], widths, 1)


def traced_hparams(
  table: dict[str, np.ndarray], ids: np.ndarray, max_depth: int
) -> dict[str, jax.Array]:
  """The hyperparameter dict `train` takes for rows `ids`, with a leading trial axis."""
  return hparams(
    **{name: np.asarray(table[name])[ids] for name in TRACED},
    widths=layer_widths(table)[ids, :max_depth],
    depth=np.asarray(table['num_layers'])[ids],
  )


def make_buckets(
  table: dict[str, np.ndarray],
  *,
  epochs: int,
  num_classes: int,
  select: str = 'final',
  eval_batch_size: int = 1024,
  width_ratio: float | None = 1.5,
) -> list[Bucket]:
  """Groups trials by their static values, then by width.

  Padding a 100-unit trial to 300 units costs it 9 times the work, so a
  static group is split wherever the widest trial would exceed `width_ratio`
  times the narrowest (None: never split). Each bucket compiles once.
  """
  # `tolist` gives Python scalars, and one pass groups the trials: a table of
  # 10**5 trials buckets in well under a second.
  keys = list(zip(*(np.asarray(table[name]).tolist() for name in STATIC), strict=True))
  groups = {}
  for i, key in enumerate(keys):
    groups.setdefault(key, []).append(i)
  depth = np.asarray(table['num_layers'], np.int64)
  widths = layer_widths(table)
  real = np.where(np.arange(widths.shape[1]) < depth[:, None], widths, 0)
  trial_width = real.max(axis=1)
  buckets = []
  for static, ids in groups.items():
    ids = np.asarray(ids)
    for group in _width_groups(ids, trial_width, width_ratio):
      values = dict(zip(STATIC, static, strict=True))
      config = TrainConfig(
        epochs=epochs,
        batch_size=int(values['batch_size']),
        hidden_sizes=(int(trial_width[group].max()),) * int(depth[group].max()),
        num_classes=num_classes,
        activation=values['activation'],
        batch_norm=bool(values['batch_norm']),
        bn_placement=values['bn_placement'],
        eval_batch_size=eval_batch_size,
        select=select,
        dropout=bool(np.any(np.asarray(table['keep_prob'], np.float64)[group] < 1)),
      )
      buckets.append(Bucket(values, group, config))
  return buckets


def _width_groups(
  ids: np.ndarray, trial_width: np.ndarray, width_ratio: float | None
) -> list[np.ndarray]:
  if width_ratio is None:
    return [ids]
  if width_ratio < 1:
    raise SearchError(f'width_ratio must be >= 1 (or None); got {width_ratio}.')
  groups, current = [], []
  for i in sorted(ids, key=lambda i: (trial_width[i], i)):
    if current and trial_width[i] > width_ratio * trial_width[current[0]]:
      groups.append(np.sort(np.asarray(current)))
      current = []
    current.append(i)
  groups.append(np.sort(np.asarray(current)))
  return groups

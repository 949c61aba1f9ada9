"""From a table of sampled hyperparameters to buckets of traced arrays.

A *bucket* is one compiled program: trials that share every static setting
(model, batch size, activation, BN on/off and placement; for the CNN kernel
size, pooling and head) and a similar width, so that padding wastes little
(see `make_buckets`). Everything else is traced: numbers as float32,
categories (optimizer, schedule, init) as int32 indices, and the
architecture as `widths [layers]` and `depth`, padded to the bucket's widest
and deepest trial. For the MLP those are `hidden_units` (per layer) and
`num_layers`; for the CNN `channels` (every block) and `num_blocks`. A CNN
with a flattening head cannot mask depth (`bnjax.nn.cnn`), so its buckets
also split by `num_blocks`.
"""

from typing import NamedTuple

import jax
import numpy as np

from bnjax.hyperparameters import TRACED, hparams
from bnjax.registry import DEFAULTS, STATIC, choices, used_by
from bnjax.search.checks import SearchError
from bnjax.training import TrainConfig


class Bucket(NamedTuple):
  static: dict  # the static hyperparameter values its trials share
  trial_ids: np.ndarray  # [n] int, positions in the trial table
  config: TrainConfig


def _is_cnn(table: dict[str, np.ndarray]) -> np.ndarray:
  return np.asarray(table.get('model', np.full(len(table['num_layers']), 'mlp'))) == 'cnn'


def depths(table: dict[str, np.ndarray]) -> np.ndarray:
  """`[trials]` real depths: `num_blocks` for CNN rows, `num_layers` for MLP rows."""
  cnn = _is_cnn(table)
  layers = np.asarray(table['num_layers'], np.int64)
  return np.where(cnn, np.asarray(table.get('num_blocks', layers), np.int64), layers)


def layer_widths(table: dict[str, np.ndarray]) -> np.ndarray:
  """`[trials, max depth]` real widths (MLP units, CNN channels) of each layer or block.

  For the MLP `hidden_units_k` overrides `hidden_units`; the CNN has
  `channels` in every block. Layers past a trial's depth get width 1: they
  are skipped, and a positive width keeps their (zeroed) init finite.
  """
  depth = depths(table)
  max_depth = int(depth.max())
  widths = np.repeat(np.asarray(table['hidden_units'], np.int64)[:, None], max_depth, axis=1)
  for layer in range(max_depth):
    override = table.get(f'hidden_units_{layer + 1}')
    if override is not None:
      widths[:, layer] = override
  if 'channels' in table:
    widths = np.where(
      _is_cnn(table)[:, None], np.asarray(table['channels'], np.int64)[:, None], widths
    )
  return np.where(np.arange(max_depth) < depth[:, None], widths, 1)


def traced_hparams(
  table: dict[str, np.ndarray], ids: np.ndarray, max_depth: int
) -> dict[str, jax.Array]:
  """The hyperparameter dict `train` takes for rows `ids`, with a leading trial axis."""
  return hparams(
    **{name: np.asarray(table[name])[ids] for name in TRACED},
    widths=layer_widths(table)[ids, :max_depth],
    depth=depths(table)[ids],
  )


def make_buckets(
  table: dict[str, np.ndarray],
  *,
  epochs: int,
  num_classes: int,
  select: str = 'final',
  eval_batch_size: int = 1024,
  width_ratio: float | None = 1.5,
  input_shape: tuple[int, ...] = (),
) -> list[Bucket]:
  """Groups trials by their static values, then by width.

  Padding a 100-unit trial to 300 units costs it 9 times the work, so a
  static group is split wherever the widest trial would exceed `width_ratio`
  times the narrowest (None: never split). Each bucket compiles once.
  `input_shape` is the data's shape without the batch axis (`Splits.input_shape`),
  which the CNN convolves over; the MLP flattens it.
  """
  # `tolist` gives Python scalars, and one pass groups the trials: a table of
  # 10**5 trials buckets in well under a second.
  n = len(table['num_layers'])
  models = np.asarray(table.get('model', np.full(n, DEFAULTS['model'])))
  columns = []
  for name in STATIC:
    # Tables made before the CNN's names existed lack them: their defaults are meant.
    column = np.asarray(table[name]) if name in table else np.full(n, DEFAULTS[name])
    for model in choices('model'):  # a name the model does not read splits nothing
      if not used_by(name, model):
        column = np.where(models == model, DEFAULTS[name], column)
    columns.append(column.tolist())
  depth = depths(table)
  # A flattening head cannot mask depth: one bucket per depth there.
  flat_cnn = (models == 'cnn') & (np.asarray(table.get('head', np.full(n, ''))) == 'flatten')
  columns.append(np.where(flat_cnn, depth, 0).tolist())
  groups = {}
  for i, key in enumerate(zip(*columns, strict=True)):
    groups.setdefault(key, []).append(i)
  widths = layer_widths(table)
  real = np.where(np.arange(widths.shape[1]) < depth[:, None], widths, 0)
  trial_width = real.max(axis=1)
  buckets = []
  for key, ids in groups.items():
    ids = np.asarray(ids)
    for group in _width_groups(ids, trial_width, width_ratio):
      values = dict(zip(STATIC, key, strict=False))  # the depth of a flatten bucket aside
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
        model=values['model'],
        input_shape=tuple(int(d) for d in input_shape),
        kernel_size=int(values['kernel_size']),
        pool=values['pool'],
        head=values['head'],
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

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

How a static group splits by width is a trade: every bucket is one more
compile, and the last chunk of each is filled with copies, while a wide
bucket pads its narrow and shallow trials up to its widest and deepest. A
`width_ratio` splits wherever the widest trial would exceed that many times
the narrowest; `width_ratio='cost'` prices every way to split and keeps the
cheapest (`_cheapest_groups`, with a `price` of a bucket the caller knows:
its compile, chunks and padding, `bnjax.search.sizing.bucket_cost`).
"""

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import numpy as np

from bnjax.hyperparameters import TRACED, hparams
from bnjax.registry import DEFAULTS, STATIC, choices, used_by
from bnjax.search.checks import SearchError
from bnjax.training import TrainConfig

# The width rule where nothing better is known (and the CNN's under 'cost',
# whose price would need its convolutions' work, which `bucket_cost` lacks).
DEFAULT_WIDTH_RATIO = 1.5
# The cost plan tries cuts between distinct widths, at most this many
# (evenly spaced in width order beyond that): 64**2 bucket prices per plan.
MAX_CUTS = 64


class Bucket(NamedTuple):
  static: dict  # the static hyperparameter values its trials share
  trial_ids: np.ndarray  # [n] int, positions in the trial table, shallowest first
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
  """The hyperparameter dict `train` takes for rows `ids`, with a leading trial axis.

  `widths` has `max_depth` columns, the bucket's depth, even where the
  table's trials are all shallower (a bucket an earlier round compiled).
  """
  widths = layer_widths(table)[ids, :max_depth]
  widths = np.pad(widths, ((0, 0), (0, max_depth - widths.shape[1])), constant_values=1)
  return hparams(
    **{name: np.asarray(table[name])[ids] for name in TRACED},
    widths=widths,
    depth=depths(table)[ids],
  )


def make_buckets(
  table: dict[str, np.ndarray],
  *,
  epochs: int,
  num_classes: int,
  select: str = 'final',
  eval_batch_size: int = 1024,
  width_ratio: float | str | None = DEFAULT_WIDTH_RATIO,
  input_shape: tuple[int, ...] = (),
  price: Callable[..., float] | None = None,
  reuse: Sequence[TrainConfig] = (),
) -> list[Bucket]:
  """Groups trials by their static values, then by width (and depth).

  Padding a 100-unit trial to 300 units costs it 9 times the work, so a
  static group is split wherever the widest trial would exceed `width_ratio`
  times the narrowest (None: never split). `width_ratio='cost'` instead
  splits an MLP group the way `price(config, ids, compiled)` (what a bucket
  at `config` of the trials at rows `ids`, shallowest first, costs, its
  compile unless `compiled`) prices lowest, by width and, where
  that is cheaper, by depth first; CNN groups then split by
  `DEFAULT_WIDTH_RATIO`. There a bucket may also take one of the `reuse`
  configs (compiled for an earlier round) that holds its trials, at no
  compile, where that prices lower than a program of its own. Each bucket compiles once, and lists
  its trials shallowest first. `input_shape` is the data's shape without the
  batch axis (`Splits.input_shape`), which the CNN convolves over; the MLP
  flattens it.
  """
  if width_ratio == 'cost' and price is None:
    raise SearchError("width_ratio='cost' needs a price of a bucket (bucket_cost); pass price.")
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
  keep_prob = np.asarray(table['keep_prob'], np.float64)
  l2 = np.asarray(table['l2'], np.float64)

  def config_of(values: dict, group: np.ndarray) -> TrainConfig:
    return TrainConfig(
      epochs=epochs,
      batch_size=int(values['batch_size']),
      hidden_sizes=(int(trial_width[group].max()),) * int(depth[group].max()),
      num_classes=num_classes,
      activation=values['activation'],
      batch_norm=bool(values['batch_norm']),
      bn_placement=values['bn_placement'],
      eval_batch_size=eval_batch_size,
      select=select,
      dropout=bool(np.any(keep_prob[group] < 1)),
      l2_penalty=bool(np.any(l2[group] != 0)),
      matmul_dtype=values['matmul_dtype'],
      model=values['model'],
      input_shape=tuple(int(d) for d in input_shape),
      kernel_size=int(values['kernel_size']),
      pool=values['pool'],
      head=values['head'],
    )

  def shallowest_first(group: np.ndarray) -> np.ndarray:
    # A bucket's order, which its price assumes too: chunks hold one depth
    # where they can, and a chunk skips the layers none of its trials has
    # (`model.vmap_chunk`).
    return group[np.argsort(depth[group], kind='stable')]

  buckets = []
  for key, ids in groups.items():
    ids = np.asarray(ids)
    values = dict(zip(STATIC, key, strict=False))  # the depth of a flatten bucket aside
    if width_ratio != 'cost' or values['model'] == 'cnn':
      ratio = DEFAULT_WIDTH_RATIO if width_ratio == 'cost' else width_ratio
      planned = [
        (group, config_of(values, group)) for group in _width_groups(ids, trial_width, ratio)
      ]
    else:

      def priced(group, values=values):
        return _group_price(config_of(values, group), shallowest_first(group), price, reuse)

      groups = _cheapest_groups(ids, trial_width, depth, lambda group: priced(group)[0])
      planned = [(group, priced(group)[1]) for group in groups]
    for group, config in planned:
      buckets.append(Bucket(values, shallowest_first(group), config))
  return buckets


def _group_price(
  own: TrainConfig, ids: np.ndarray, price: Callable[..., float], reuse: Sequence[TrainConfig]
) -> tuple[float, TrainConfig]:
  """The cheaper of a program of its own (`own`) and a compiled one for the trials `ids`.

  `ids` in the bucket's order. A `reuse` config holds them where only its
  widths differ from `own`'s and are at least as wide and deep. Ties keep
  `own`.
  """
  width, deepest = max(own.hidden_sizes), len(own.hidden_sizes)
  options = [(price(own, ids, False), own)]
  for config in reuse:
    holds = (
      config._replace(hidden_sizes=own.hidden_sizes) == own
      and max(config.hidden_sizes) >= width
      and len(config.hidden_sizes) >= deepest
    )
    if holds:
      options.append((price(config, ids, True), config))
  return min(options, key=lambda option: option[0])


def _cheapest_groups(
  ids: np.ndarray,
  trial_width: np.ndarray,
  depth: np.ndarray,
  cost: Callable[[np.ndarray], float],
) -> list[np.ndarray]:
  """The split of `ids` into buckets whose summed `cost(group)` is lowest.

  Two kinds of plan are priced and the cheaper kept: buckets of trials
  adjacent in width, each as deep as its deepest trial; and the same within
  each depth, so that shallow trials never pay for a deeper one's layers.
  Ties keep the first (fewer, wider buckets), so a table always gets the
  same plan.
  """
  depths = depth[ids]
  distinct = np.unique(depths)
  mixed_cost, mixed = _segments(ids, trial_width, cost)
  if len(distinct) == 1:
    return mixed
  per_depth = [_segments(ids[depths == d], trial_width, cost) for d in distinct]
  if sum(total for total, _ in per_depth) < mixed_cost:
    return [group for _, groups in per_depth for group in groups]
  return mixed


def _segments(
  ids: np.ndarray, trial_width: np.ndarray, cost: Callable[[np.ndarray], float]
) -> tuple[float, list[np.ndarray]]:
  """The cheapest cut of `ids`, in width order, into runs of neighbours, and its cost.

  Dynamic programming over the cuts, which fall only between distinct
  widths (a cut between equal widths saves no padding), at most `MAX_CUTS`
  of them, evenly spaced in width order beyond that.
  """
  order = np.asarray(sorted(ids, key=lambda i: (trial_width[i], i)), np.int64)
  widths = trial_width[order]
  cuts = [0, *(k for k in range(1, len(order)) if widths[k] != widths[k - 1]), len(order)]
  if len(cuts) > MAX_CUTS + 1:
    kept = np.linspace(0, len(cuts) - 1, MAX_CUTS + 1).round().astype(int)
    cuts = sorted({cuts[k] for k in kept})
  # Per cut: (the cheapest cost of all before it, the cut where its last bucket starts).
  best = [(0.0, 0)]
  for k in range(1, len(cuts)):
    best.append(min((best[j][0] + cost(order[cuts[j] : cuts[k]]), j) for j in range(k)))
  groups, k = [], len(cuts) - 1
  while k:
    j = best[k][1]
    groups.append(np.sort(order[cuts[j] : cuts[k]]))
    k = j
  return best[-1][0], groups[::-1]


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

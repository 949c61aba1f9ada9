"""Population-based training: a population trained in generations, exploited and explored.

`pbt` trains one bucket's population (`bnjax.search.population`) `ready`
epochs at a time; between generations `exploit.exploit_and_explore` replaces
the bottom quantile with perturbed copies of the top (Jaderberg et al. 2017,
with Ray Tune's documented defaults; see `bnjax.search.exploit`). The search
runs through a `population_study`: the lineage of every member goes to the
ledger at each exploit, and the winner's hyperparameter `schedule` to its
results, for `schedule_replay`.
"""

import math
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from bnjax import distributed, files
from bnjax.data import Splits
from bnjax.registry import to_python
from bnjax.search import chunks, ledger
from bnjax.search import population as pop
from bnjax.search.checks import SearchError, check_count, check_options, is_real, show
from bnjax.search.cohorts import (
  candidates,
  cohorts_from_table,
  records,
  row_of,
  sampling_key,
  train_to,
)
from bnjax.search.exploit import exploit_and_explore, explorable
from bnjax.search.population_study import PopulationStudy
from bnjax.search.results import Results
from bnjax.space import as_space, with_defaults
from bnjax.training import TrainConfig

READY = 4  # epochs between exploits, by default


def check(
  population_size: int,
  *,
  ready: int = READY,
  generations: int = 5,
  quantile_fraction: float = 0.25,
  perturbation_factors: Sequence[float] = (0.8, 1.2),
  resample_probability: float = 0.25,
) -> None:
  """Raises a one-line `SearchError` unless `pbt` can run with these options."""
  for name, value in (
    ('population_size', population_size),
    ('ready', ready),
    ('generations', generations),
  ):
    check_count(name, value)
  if not is_real(quantile_fraction) or not 0 < quantile_fraction <= 0.5:
    raise SearchError(f'quantile_fraction must lie in (0, 0.5]; got {show(quantile_fraction)}.')
  if int(population_size * quantile_fraction) < 1:
    raise SearchError(
      f'quantile_fraction {quantile_fraction} of population_size {population_size} replaces '
      f'no member; raise population_size to at least {math.ceil(1 / quantile_fraction)}.'
    )
  factors = tuple(perturbation_factors) if isinstance(perturbation_factors, Sequence) else ()
  if not factors or not all(is_real(f) and f > 0 for f in factors):
    raise SearchError(
      'perturbation_factors must be positive numbers, e.g. 0.8,1.2; got '
      f'{show(perturbation_factors)}.'
    )
  if not is_real(resample_probability) or not 0 <= resample_probability <= 1:
    raise SearchError(f'resample_probability must lie in [0, 1]; got {show(resample_probability)}.')


def pbt(
  space,
  splits: Splits,
  population_size: int,
  *,
  ready: int = READY,
  generations: int = 5,
  seed: int = 0,
  quantile_fraction: float = 0.25,
  perturbation_factors: Sequence[float] = (0.8, 1.2),
  resample_probability: float = 0.25,
  top_k: int = 5,
  test: bool = True,
  devices: Sequence[jax.Device] | None = None,
  eval_batch_size: int = 1024,
  output_dir: str | None = None,
  storage: str | None = None,
  study_name: str | None = None,
  report: Callable[[str], None] | None = None,
  progress: Callable[[int, int], None] | None = None,
) -> Results:
  """Population-based training of `population_size` configurations from `space`, in one bucket.

  The population trains `ready` epochs at a time, `generations` times; after
  each but the last, `exploit_and_explore` (its key `sampling_key(seed,
  generation)`) replaces the bottom `quantile_fraction` (Ray Tune's
  defaults: 0.25, factors 0.8 and 1.2, resampling with probability 0.25).
  Static hyperparameters must be the same for all (one bucket: one compiled
  segment program); widths and depths may differ and ride along with the
  rows. The search runs through a study (`population_study`): in
  `output_dir` (or `storage`), checkpointed at every generation and resumed
  by calling again with the same arguments; in memory without one. Each
  exploit writes the members' lineage to the ledger. The top `top_k` are
  tested once, at the end.

  Returns:
    `Results`, one row per member (trial id = member): the hyperparameters
    it ends with (explored values as perturbed, the others from the
    configuration its line descends from, column `origin`), its metrics at
    the last epoch, and its curve: the history of the weights it holds,
    copied with them. `info` holds the `lineage` (parents at each exploit),
    the explored values of every generation (`history`), each member's dev
    accuracy at each exploit (`scores`, before it) and the winner's
    hyperparameter `schedule`.
  """
  start_time = time.perf_counter()
  space = as_space(space)
  options = dict(
    ready=ready,
    generations=generations,
    quantile_fraction=quantile_fraction,
    perturbation_factors=perturbation_factors,
    resample_probability=resample_probability,
  )
  check(population_size, **options)
  check_options(seed=seed, top_k=top_k, test=test, devices=devices, eval_batch_size=eval_batch_size)
  devices = list(devices or distributed.devices())
  if population_size % len(devices):
    raise SearchError(
      f'population_size {population_size} must be a multiple of the {len(devices)} devices.'
    )
  data, sharding = chunks.data_on(devices, splits)
  table = with_defaults(space.sample(sampling_key(seed, 0), population_size), population_size)
  ids = np.arange(population_size)
  found = cohorts_from_table(
    table,
    ids,
    data,
    num_classes=splits.num_classes,
    seed=seed,
    chunk_size=population_size,
    epochs=ready * generations,
    sharding=sharding,
    eval_batch_size=eval_batch_size,
    width_ratio=None,
    input_shape=splits.input_shape,
  )
  if len(found) != 1:
    raise SearchError(
      f'pbt trains one bucket, but the space makes {len(found)}: fix batch_size, '
      'activation, batch_norm and bn_placement to one value each.'
    )
  config = {
    'strategy': 'pbt',
    'population_size': population_size,
    **options,
    'perturbation_factors': [float(f) for f in perturbation_factors],
    'epochs': ready * generations,
    'select': 'final',
    'seed': seed,
    'eval_batch_size': eval_batch_size,
    'extra_columns': ['origin', 'epochs'],
  }
  keeper = PopulationStudy(
    space,
    splits,
    config=config,
    output_dir=output_dir,
    storage=storage,
    study_name=study_name,
    top_k=top_k,
    report=report,
  )
  with keeper, pop.count_lowerings() as lowered:
    if not keeper.done:
      keeper.create(table, ids, 0)
      _evolve(keeper, found[0], table, data, space, seed, options, sharding, progress)
    keeper.finish(test=test)
    results = keeper.results({})
    trials = {t.number: t for t in keeper.study.get_trials(deepcopy=False)}
  lineage = [[trials[i].user_attrs['lineage'][g] for i in ids] for g in range(generations - 1)]
  parents = [np.asarray([entry[1] for entry in exploit]) for exploit in lineage]
  scores = [np.asarray([entry[2] for entry in exploit], np.float64) for exploit in lineage]
  history = [
    {name: np.asarray([trials[i].user_attrs['history'][g][name] for i in ids]) for name in names}
    for g in range(generations)
    for names in [list(trials[0].user_attrs['history'][g])]
  ]
  results.info.update(
    generations=generations,
    buckets=1,
    chunks=1,
    compiles=lowered.value,
    trial_epochs=population_size * ready * generations,
    devices=len(devices),
    seconds=time.perf_counter() - start_time,
    pbt={'seed': seed, 'population_size': population_size, 'ready': ready},
    lineage=[p.tolist() for p in parents],
    scores=[s.tolist() for s in scores],
    history=[{k: v.tolist() for k, v in h.items()} for h in history],
  )
  if not results.all_diverged():
    winner = results.best(1)[0]['trial_id']
    results.info['schedule'] = schedule(parents, history, winner, ready=ready)
  return results


def with_explored_terms(config: TrainConfig, axes) -> TrainConfig:
  """`config` with dropout and the L2 term on wherever explore moves keep_prob or l2.

  A bucket's flags follow its trials' first values (`buckets.make_buckets`:
  off where every keep_prob is 1, or every l2 is 0), and explore may move
  them there later.
  """
  names = {axis.name for axis in axes}
  return config._replace(
    dropout=config.dropout or 'keep_prob' in names,
    l2_penalty=config.l2_penalty or 'l2' in names,
  )


def _evolve(keeper, cohort, table, data, space, seed, options, sharding, progress) -> None:
  """Trains the population generation by generation from its checkpoint, then tells every member."""
  ready, generations = options['ready'], options['generations']
  n = len(cohort.trial_ids)
  axes = explorable(space, cohort.hp)
  cohort = cohort._replace(config=with_explored_terms(cohort.config, axes))
  first, source, parents, scores, history = 0, np.arange(n), [], [], []
  if keeper.resumed:
    (cohort,) = keeper.restore([cohort], sharding)
    first, source = keeper.resumed['generation'], np.asarray(keeper.resumed['source'])
    parents = [np.asarray(p) for p in keeper.resumed['parents']]
    scores = [np.asarray(p, np.float64) for p in keeper.resumed['scores']]
    # In the space's order (the checkpoint's dicts come back sorted by name).
    history = [{a.name: np.asarray(h[a.name]) for a in axes} for h in keeper.resumed['history']]
  for generation in range(first, generations):
    history.append({a.name: np.asarray(distributed.fetch(cohort.hp[a.name])) for a in axes})
    (cohort,) = train_to([cohort], data, (generation + 1) * ready, segment_epochs=ready)
    if progress:
      progress(generation + 1, generations)
    if generation == generations - 1:
      break
    state, hp, lineage = exploit_and_explore(
      sampling_key(seed, generation + 1),
      cohort.state,
      cohort.hp,
      cohort.curves['dev_accuracy'][:, -1],
      space,
      fraction=options['quantile_fraction'],
      perturb=tuple(options['perturbation_factors']),
      resample_probability=options['resample_probability'],
      generation=generation + 1,
    )
    parent = np.asarray(distributed.fetch(lineage.parent))
    parents.append(parent)
    scores.append(np.asarray(cohort.curves['dev_accuracy'][:, -1], np.float64))
    source = source[parent]
    curves = {name: curve[parent] for name, curve in cohort.curves.items()}
    cohort = cohort._replace(state=state, hp=hp, curves=curves)
    keeper.set_attrs(
      {int(cohort.trial_ids[m]): {'lineage': _lineage(parents, scores, m)} for m in range(n)}
    )
    meta = {
      'generation': generation + 1,
      'source': source.tolist(),
      'parents': [p.tolist() for p in parents],
      'scores': [files.json_safe(p) for p in scores],
      'history': [{k: v.tolist() for k, v in h.items()} for h in history],
    }
    keeper.save([cohort], meta)
  final = {a.name: np.asarray(distributed.fetch(cohort.hp[a.name])) for a in axes}
  rows, attrs = [], []
  for record in records([cohort], cohort.trial_ids, status='ok', rung_index=generations - 1):
    m = int(np.flatnonzero(cohort.trial_ids == record.trial_id)[0])
    values = {name: to_python(column[source[m]]) for name, column in table.items()}
    values |= {name: float(v[m]) for name, v in final.items()}
    origin = int(cohort.trial_ids[source[m]])
    rows.append(row_of(record, values, {'origin': origin}))
    attrs.append(
      {
        ledger.VALUES: {name: values[name] for name in space},
        'origin': origin,
        'epochs': record.epochs,
        'lineage': _lineage(parents, scores, m),
        'history': [{k: float(v[m]) for k, v in h.items()} for h in history],
      }
    )
  finished = {row['trial_id']: row for row in rows if row['status'] == 'ok'}
  curves = [{name: cohort.curves[name][int(r['trial_id'])] for name in cohort.curves} for r in rows]
  keeper.tell(rows, curves, attrs, candidates([cohort], finished))


def _lineage(parents: Sequence[np.ndarray], scores: Sequence[np.ndarray], member: int) -> list:
  """`[generation, parent, score]` of `member` at each exploit so far.

  `parent`: the member whose state it took (itself where it was kept);
  `score`: its dev accuracy just before (None: diverged).
  """
  return [
    [g + 1, int(parent[member]), files.json_safe(float(score[member]))]
    for g, (parent, score) in enumerate(zip(parents, scores, strict=True))
  ]


def schedule(
  parents: Sequence[np.ndarray], history: Sequence[dict], member: int, *, ready: int
) -> list[dict]:
  """The explored values `member`'s line trained with, one dict per generation.

  `parents[g]` is the lineage's parent array of the exploit after generation
  `g`; `history[g]` the explored values in force during generation `g`.
  Each dict holds `epochs` ([first, last + 1)), `trial_id` (the member of
  the line that trained those epochs, with its own key; members are trial
  ids here) and a value per name.
  """
  line = [member]
  for parent in reversed(parents):
    line.append(int(parent[line[-1]]))
  line.reverse()
  return [
    {
      'epochs': [g * ready, (g + 1) * ready],
      'trial_id': line[g],
      **{k: float(v[line[g]]) for k, v in values.items()},
    }
    for g, values in enumerate(history)
  ]

"""One training run as a pure function of traced hyperparameters and a key.

`make_train(config)` closes over the static settings (shapes, batch size,
activation, epochs) and returns `train(hparams, key, data)`, whose whole loop
is a `lax.scan`; it jits once and vmaps over hyperparameter dicts and keys.
Its pieces (`init_trial`, `train_epoch`, `evaluate`) are public so that
adaptive searches can carry a trial's state from one round to the next.
"""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from bnjax import schedules, space_names
from bnjax.losses import l2_penalty, softmax_cross_entropy
from bnjax.mlp import INIT_GAINS, mlp_apply, mlp_init
from bnjax.optimizers import FAMILIES, optimizer

# The hyperparameters `train` traces, with the canonical defaults of
# `bnjax.space_names`. `optimizer`, `lr_schedule` and `init` are categorical
# but traced, as indices (see `hparams`).
TRACED = (
  'learning_rate',
  'optimizer',
  'beta1',
  'beta2',
  'eps',
  'lr_schedule',
  'lr_decay',
  'l2',
  'keep_prob',
  'bn_momentum',
  'init',
)
DEFAULTS = {name: space_names.DEFAULTS[name] for name in TRACED}
CATEGORIES = {'optimizer': FAMILIES, 'lr_schedule': schedules.SCHEDULES, 'init': tuple(INIT_GAINS)}


class TrainConfig(NamedTuple):
  """Static settings: changing one compiles a new program."""

  epochs: int
  batch_size: int
  hidden_sizes: tuple[int, ...]
  num_classes: int
  activation: str = 'relu'
  batch_norm: bool = True
  bn_placement: str = 'before'
  eval_batch_size: int = 1024
  select: str = 'final'  # 'final' epoch, or the 'best' dev-accuracy epoch's params
  # False skips dropout's random numbers (about a fifth of a CPU step) when
  # every trial has keep_prob = 1; `keep_prob` is then ignored.
  dropout: bool = True


class TrainData(NamedTuple):
  """The splits a run may see: train and dev, never test."""

  x_train: jax.Array  # [n_train, F]
  y_train: jax.Array  # [n_train] int
  x_dev: jax.Array
  y_dev: jax.Array


class TrialState(NamedTuple):
  params: Any
  model_state: Any
  opt_state: Any
  step: jax.Array  # int32 optimizer steps taken (or attempted)
  diverged_step: jax.Array  # int32 step whose loss was non-finite, -1 if none
  best: Any  # (params, model_state) kept for select='best', else ()
  best_accuracy: jax.Array


class TrainResult(NamedTuple):
  params: Any  # the selected epoch's params ('final' or 'best')
  model_state: Any
  metrics: dict  # 'train_loss', 'dev_loss', 'dev_accuracy': [epochs]; NaN once diverged
  diverged: jax.Array  # bool
  diverged_step: jax.Array  # int32, -1 if none
  best_epoch: jax.Array  # int32 epoch of the best dev accuracy


def hparams(**values) -> dict:
  """A complete hyperparameter dict: defaults, overridden by `values`.

  Categorical values may be given by name ('adam', 'inverse_time', 'he') and
  become int32 indices; `widths` (`[layers]` ints) and `depth` (int) turn on
  architecture masking. Everything becomes an array, so the dict traces.
  """
  unknown = set(values) - set(DEFAULTS) - {'widths', 'depth'}
  if unknown:
    raise ValueError(
      f'unknown hyperparameters {sorted(unknown)}; known: {sorted(DEFAULTS)} plus widths, depth.'
    )
  merged = {**DEFAULTS, **values}
  out = {}
  for name, value in merged.items():
    if name in CATEGORIES and isinstance(value, str):
      if value not in CATEGORIES[name]:
        raise ValueError(f'{name} must be one of {CATEGORIES[name]}; got {value!r}.')
      value = CATEGORIES[name].index(value)
    integer = name in CATEGORIES or name in ('widths', 'depth')
    out[name] = jnp.asarray(value, jnp.int32 if integer else jnp.float32)
  return out


def _model_options(config: TrainConfig, hp: dict) -> dict:
  return dict(
    activation=config.activation,
    bn_placement=config.bn_placement,
    bn_momentum=hp['bn_momentum'],
    widths=hp.get('widths'),
    depth=hp.get('depth'),
  )


def _optimizer(config: TrainConfig, hp: dict, steps_per_epoch: int):
  rate = schedules.decayed(hp['lr_schedule'], hp['learning_rate'], hp['lr_decay'], steps_per_epoch)
  return optimizer(rate, hp['optimizer'], beta1=hp['beta1'], beta2=hp['beta2'], eps=hp['eps'])


def init_trial(
  config: TrainConfig, hp: dict, key: jax.Array, in_features: int, steps_per_epoch: int
) -> TrialState:
  """Initial params (He/Xavier by `hp['init']`), BN state and optimizer state."""
  gain = jnp.asarray([INIT_GAINS[name] for name in CATEGORIES['init']])[hp['init']]
  params, model_state = mlp_init(
    key,
    in_features,
    config.hidden_sizes,
    config.num_classes,
    batch_norm=config.batch_norm,
    bn_placement=config.bn_placement,
    init=gain,
    widths=hp.get('widths'),
    depth=hp.get('depth'),
  )
  opt_state = _optimizer(config, hp, steps_per_epoch).init(params)
  best = (params, model_state) if config.select == 'best' else ()
  return TrialState(
    params,
    model_state,
    opt_state,
    jnp.zeros([], jnp.int32),
    jnp.full([], -1, jnp.int32),
    best,
    jnp.full([], -jnp.inf),
  )


def evaluate(
  config: TrainConfig, hp: dict, params, model_state, x: jax.Array, y: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Mean loss and accuracy in eval mode (running BN statistics), in batches."""
  n = x.shape[0]
  chunk = min(n, config.eval_batch_size)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(num_chunks, chunk, -1)
  ys = jnp.pad(y, (0, pad)).reshape(num_chunks, chunk)
  real = (jnp.arange(num_chunks * chunk) < n).reshape(num_chunks, chunk)

  def one_chunk(args):
    xb, yb, rb = args
    logits, _ = mlp_apply(params, model_state, xb, training=False, **_model_options(config, hp))
    losses = softmax_cross_entropy(logits, yb)
    correct = jnp.argmax(logits, axis=-1) == yb
    return jnp.sum(jnp.where(rb, losses, 0.0)), jnp.sum(rb & correct)

  loss_sums, correct = lax.map(one_chunk, (xs, ys, real))
  return jnp.sum(loss_sums) / n, jnp.sum(correct) / n


def train_step(
  config: TrainConfig,
  hp: dict,
  trial: TrialState,
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  steps_per_epoch: int,
) -> tuple[TrialState, jax.Array]:
  """One mini-batch update; returns the new trial state and the batch loss.

  A non-finite loss or gradient marks the trial diverged; from then on its
  parameters, BN statistics and optimizer state stop changing.
  """

  def cost(params):
    logits, new_model_state = mlp_apply(
      params,
      trial.model_state,
      x,
      training=True,
      key=key if config.dropout else None,
      keep_prob=hp['keep_prob'],
      **_model_options(config, hp),
    )
    data_loss = jnp.mean(softmax_cross_entropy(logits, y))
    return data_loss + l2_penalty(params, hp['l2'], x.shape[0]), (data_loss, new_model_state)

  (_, (loss, new_model_state)), grads = jax.value_and_grad(cost, has_aux=True)(trial.params)
  updates, new_opt_state = _optimizer(config, hp, steps_per_epoch).update(
    grads, trial.opt_state, trial.params
  )
  new_params = jax.tree.map(jnp.add, trial.params, updates)
  finite = jnp.isfinite(loss) & jnp.all(
    jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)])
  )
  ok = finite & (trial.diverged_step < 0)
  keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, old)
  diverged_step = jnp.where((trial.diverged_step < 0) & ~finite, trial.step, trial.diverged_step)
  return trial._replace(
    params=keep(new_params, trial.params),
    model_state=keep(new_model_state, trial.model_state),
    opt_state=keep(new_opt_state, trial.opt_state),
    step=trial.step + 1,
    diverged_step=diverged_step,
  ), loss


def train_epoch(
  config: TrainConfig,
  hp: dict,
  trial: TrialState,
  data: TrainData,
  key: jax.Array,
  epoch: jax.typing.ArrayLike,
) -> tuple[TrialState, dict]:
  """One pass over a fresh permutation of the training split, then dev metrics."""
  n_train = data.x_train.shape[0]
  steps = n_train // config.batch_size  # The last partial batch is dropped.
  epoch_key = jax.random.fold_in(key, epoch)
  order = jax.random.permutation(jax.random.fold_in(epoch_key, 0), n_train)
  batches = order[: steps * config.batch_size].reshape(steps, config.batch_size)
  dropout_key = jax.random.fold_in(epoch_key, 1)

  def step(trial, args):
    index, rows = args
    return train_step(
      config,
      hp,
      trial,
      data.x_train[rows],
      data.y_train[rows],
      jax.random.fold_in(dropout_key, index),
      steps,
    )

  trial, losses = lax.scan(step, trial, (jnp.arange(steps), batches))
  dev_loss, dev_accuracy = evaluate(
    config, hp, trial.params, trial.model_state, data.x_dev, data.y_dev
  )
  diverged = trial.diverged_step >= 0
  nan_if_diverged = lambda v: jnp.where(diverged, jnp.nan, v)
  metrics = {
    'train_loss': nan_if_diverged(jnp.mean(losses)),
    'dev_loss': nan_if_diverged(dev_loss),
    'dev_accuracy': nan_if_diverged(dev_accuracy),
  }
  if config.select == 'best':
    better = ~diverged & (dev_accuracy > trial.best_accuracy)
    best = jax.tree.map(
      lambda new, old: jnp.where(better, new, old), (trial.params, trial.model_state), trial.best
    )
    trial = trial._replace(
      best=best, best_accuracy=jnp.where(better, dev_accuracy, trial.best_accuracy)
    )
  return trial, metrics


def make_train(config: TrainConfig):
  """Returns the pure `train(hparams, key, data) -> TrainResult` for `config`.

  `hparams` is a dict like `hparams(...)` returns (arrays, traceable);
  `data` a `TrainData`. Under `jax.vmap(train, in_axes=(0, 0, None))` every
  trial shares one copy of the data and gathers its own mini-batches.
  """
  if config.select not in ('final', 'best'):
    raise ValueError(f"select must be 'final' or 'best'; got {config.select!r}.")
  if config.epochs < 1 or config.batch_size < 1:
    raise ValueError(
      f'epochs and batch_size must be >= 1; got {config.epochs}, {config.batch_size}.'
    )

  def train(hp: dict, key: jax.Array, data: TrainData) -> TrainResult:
    n_train, in_features = data.x_train.shape
    if n_train < config.batch_size:
      raise ValueError(
        f'batch_size {config.batch_size} exceeds the {n_train} training '
        'examples; use a smaller batch size.'
      )
    init_key, loop_key = jax.random.split(key)
    trial = init_trial(config, hp, init_key, in_features, n_train // config.batch_size)

    def epoch(trial, index):
      return train_epoch(config, hp, trial, data, loop_key, index)

    trial, metrics = lax.scan(epoch, trial, jnp.arange(config.epochs))
    accuracy = jnp.where(jnp.isnan(metrics['dev_accuracy']), -1.0, metrics['dev_accuracy'])
    params, model_state = (
      trial.best if config.select == 'best' else (trial.params, trial.model_state)
    )
    return TrainResult(
      params,
      model_state,
      metrics,
      trial.diverged_step >= 0,
      trial.diverged_step,
      jnp.argmax(accuracy).astype(jnp.int32),
    )

  return train

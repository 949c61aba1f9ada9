"""One training run as a pure function of traced hyperparameters and a key.

`make_train(config)` closes over the static settings (shapes, batch size,
activation, epochs) and returns `train(hparams, key, data)`, whose whole loop
is a `lax.scan`; it jits once and vmaps over hyperparameter dicts and keys.
`fit` runs the same pieces one epoch at a time with a callback. The pieces
(`init_trial`, `train_epoch`, `train_epochs`, `finish`, `evaluate`) are public,
and `TrialState` carries the epoch and the loop key, so that adaptive
searches can stop a trial and carry on from where it stopped. The settings
and their check live in `bnjax.train_config`; the network, with `predict`
and `evaluate`, in `bnjax.model` (both re-exported here).
"""

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from bnjax import divergence, registry

# `predict` is re-exported beside `evaluate`: `bnjax.training.predict` is public.
from bnjax.model import apply_model, evaluate, init_model, predict  # noqa: F401
from bnjax.nn.losses import l2_penalty, softmax_cross_entropy
from bnjax.nn.mlp import INIT_GAINS
from bnjax.optim import schedules
from bnjax.optim.transforms import optimizer
from bnjax.train_config import TrainConfig, TrainData, check_config


class TrialState(NamedTuple):
  """Everything a trial needs to go on training: a run can stop and resume here."""

  params: Any
  model_state: Any
  opt_state: Any
  key: jax.Array  # the loop key; epoch `e` draws from `fold_in(key, e)`
  epoch: jax.Array  # int32 epochs done
  step: jax.Array  # int32 optimizer steps taken (or attempted)
  diverged_step: jax.Array  # int32 step that produced a non-finite loss or state, -1 if none
  best: Any  # (params, model_state) kept for select='best', else ()
  best_accuracy: jax.Array


class TrainResult(NamedTuple):
  params: Any  # the selected epoch's params ('final' or 'best')
  model_state: Any
  metrics: dict  # 'train_loss', 'dev_loss', 'dev_accuracy': [epochs]; NaN once diverged
  diverged: jax.Array  # bool
  diverged_step: jax.Array  # int32, -1 if none
  best_epoch: jax.Array  # int32 epoch of the best dev accuracy, -1 if diverged at once


def _optimizer(config: TrainConfig, hp: dict, steps_per_epoch: int):
  rate = schedules.decayed(hp['lr_schedule'], hp['learning_rate'], hp['lr_decay'], steps_per_epoch)
  return optimizer(rate, hp['optimizer'], beta1=hp['beta1'], beta2=hp['beta2'], eps=hp['eps'])


def steps_per_epoch(config: TrainConfig, data: TrainData) -> int:
  """Mini-batches per epoch: the last partial batch is dropped."""
  return data.x_train.shape[0] // config.batch_size


def init_trial(config: TrainConfig, hp: dict, key: jax.Array, data: TrainData) -> TrialState:
  """A trial before its first epoch: params (He/Xavier by `hp['init']`), BN and optimizer state.

  `key` is the trial's key: one half initializes, the other drives the
  epochs (permutations and dropout), whichever way the epochs are run.
  """
  check_config(config, data)
  init_key, loop_key = jax.random.split(key)
  gain = registry.lookup('init', INIT_GAINS, hp['init'])
  params, model_state = init_model(config, hp, init_key, data.x_train.shape[1], gain)
  opt_state = _optimizer(config, hp, steps_per_epoch(config, data)).init(params)
  best = (params, model_state) if config.select == 'best' else ()
  return TrialState(
    params,
    model_state,
    opt_state,
    loop_key,
    jnp.zeros([], jnp.int32),
    jnp.zeros([], jnp.int32),
    jnp.full([], -1, jnp.int32),
    best,
    jnp.full([], -jnp.inf, jnp.float32),  # not weakly typed: a segment keeps its dtype
  )


def train_step(
  config: TrainConfig,
  hp: dict,
  trial: TrialState,
  x: jax.Array,
  y: jax.Array,
  key: jax.Array,
  steps_per_epoch: int,
  *,
  checked: bool = True,
) -> tuple[TrialState, jax.Array]:
  """One mini-batch update; returns the new trial state and the batch loss.

  The step is rejected, and the trial marked diverged at it, when anything it
  would keep is non-finite: the loss, a gradient, or the parameters, BN
  statistics or optimizer state it computed (an update can overflow weights
  that a finite loss and gradient produced). A diverged trial keeps its last
  finite state: its parameters, BN statistics and optimizer state stop
  changing, and `diverged_step` is the step that failed.

  `checked=False` (static) leaves that check out and keeps every update: for
  a trial that has not diverged, when the caller proves afterwards that every
  step was finite (`steps_were_finite`) or else runs the steps again checked.

  `config` and `steps_per_epoch` are static (under `jax.jit`,
  `static_argnums=(0, 6)`): they fix shapes and the program. Everything else
  traces, `hp` included.
  """

  def cost(params):
    logits, new_model_state = apply_model(
      config,
      hp,
      params,
      trial.model_state,
      x,
      training=True,
      key=key if config.dropout else None,
      keep_prob=hp['keep_prob'],
    )
    with jax.named_scope('loss'):
      data_loss = jnp.mean(softmax_cross_entropy(logits, y))
      penalty = l2_penalty(params, hp['l2'], x.shape[0]) if config.l2_penalty else 0.0
      return data_loss + penalty, (data_loss, new_model_state)

  (_, (loss, new_model_state)), grads = jax.value_and_grad(cost, has_aux=True)(trial.params)
  # Named scopes (here, in `train_epoch` and around BN and dropout) name the
  # ops of a profile by what they do (`benchmarks/profile_step.py`).
  with jax.named_scope('optimizer'):
    updates, new_opt_state = _optimizer(config, hp, steps_per_epoch).update(
      grads, trial.opt_state, trial.params
    )
    new_params = jax.tree.map(jnp.add, trial.params, updates)
  if not checked:
    new = dict(params=new_params, model_state=new_model_state, opt_state=new_opt_state)
    return trial._replace(**new, step=trial.step + 1), loss
  with jax.named_scope('divergence_check'):
    # Every leaf of what the step produces, not only the loss and gradients:
    # otherwise the update that overflows the weights would be kept.
    finite = divergence.all_finite((loss, grads, new_params, new_model_state, new_opt_state))
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
  evaluate_dev: bool | jax.Array = True,
  *,
  checked: bool = True,
) -> tuple[TrialState, dict]:
  """One pass over a fresh permutation of the training split, then dev metrics.

  The permutation and dropout keys derive from `fold_in(trial.key,
  trial.epoch)`, so an epoch computes the same numbers however the epochs
  before it were run (one scan, or one call each). `evaluate_dev` False
  (a Python bool, or a boolean without a trial axis: under `vmap` the
  evaluation is then skipped, not computed and discarded) leaves the dev
  metrics NaN; training does not depend on it. `checked`: as `train_step`
  takes it.
  """
  n_train = data.x_train.shape[0]
  steps = steps_per_epoch(config, data)
  epoch_key = jax.random.fold_in(trial.key, trial.epoch)
  with jax.named_scope('shuffle'):
    order = jax.random.permutation(jax.random.fold_in(epoch_key, 0), n_train)
  batches = order[: steps * config.batch_size].reshape(steps, config.batch_size)
  dropout_key = jax.random.fold_in(epoch_key, 1)

  def step(trial, args):
    index, rows = args
    with jax.named_scope('batch'):
      x, y = data.x_train[rows], data.y_train[rows]
    return train_step(
      config,
      hp,
      trial,
      x,
      y,
      jax.random.fold_in(dropout_key, index),
      steps,
      checked=checked,
    )

  trial, losses = lax.scan(step, trial, (jnp.arange(steps), batches))

  def dev():
    with jax.named_scope('dev_evaluation'):
      return evaluate(config, hp, trial.params, trial.model_state, data.x_dev, data.y_dev)

  if evaluate_dev is True:
    dev_loss, dev_accuracy = dev()
  else:
    skipped = lambda: (jnp.full([], jnp.nan, jnp.float32), jnp.full([], jnp.nan, jnp.float32))
    dev_loss, dev_accuracy = lax.cond(evaluate_dev, dev, skipped)
  diverged = trial.diverged_step >= 0
  nan_if_diverged = lambda v: jnp.where(diverged, jnp.nan, v)
  metrics = {
    'train_loss': nan_if_diverged(jnp.mean(losses)),
    'dev_loss': nan_if_diverged(dev_loss),
    'dev_accuracy': nan_if_diverged(dev_accuracy),
  }
  trial = trial._replace(epoch=trial.epoch + 1)
  if config.select == 'best':
    better = ~diverged & (dev_accuracy > trial.best_accuracy)
    best = jax.tree.map(
      lambda new, old: jnp.where(better, new, old), (trial.params, trial.model_state), trial.best
    )
    trial = trial._replace(
      best=best, best_accuracy=jnp.where(better, dev_accuracy, trial.best_accuracy)
    )
  return trial, metrics


def train_epochs(
  config: TrainConfig,
  hp: dict,
  trial: TrialState,
  data: TrainData,
  epochs: int,
  *,
  checked: bool = True,
) -> tuple[TrialState, dict]:
  """`epochs` epochs in one `lax.scan`; metrics gain a leading `[epochs]` axis.

  With `config.eval_every = k > 1`, the dev split is evaluated after epochs
  k, 2k, ... of these `epochs` and after the last (so `k` segments of `e`
  epochs equal one run of `k * e` when `e` is a multiple of `k`). `checked`:
  as `train_step` takes it.
  """
  epoch = functools.partial(train_epoch, config, hp, checked=checked)
  if config.eval_every == 1:
    return lax.scan(lambda trial, _: epoch(trial, data), trial, None, epochs)
  # A constant without a trial axis: `vmap` keeps the `lax.cond` in `train_epoch` a branch.
  evaluated = np.asarray([(i + 1) % config.eval_every == 0 for i in range(epochs)])
  evaluated[-1] = True
  return lax.scan(lambda trial, flag: epoch(trial, data, flag), trial, jnp.asarray(evaluated))


def steps_were_finite(trial: TrialState, metrics: dict) -> jax.Array:
  """Whether every unchecked step (`checked=False`) that led to `trial` kept everything finite.

  `metrics` are those epochs' (`train_epochs`). Never True where the same
  steps checked would have rejected one, though read from the last state
  and the epochs' mean losses alone, because a non-finite value never leaves the
  state: each step adds its update to the weights and scales the old BN
  averages and moments (`0 * inf` is NaN too), and a non-finite gradient
  makes the update non-finite under every optimizer (`inf / inf` is NaN).
  So a non-finite gradient, weight, BN statistic or moment at any step is
  still there at the end, and a non-finite loss makes its epoch's mean
  non-finite. (False may also be a finite loss's mean that overflowed: the
  steps run checked then simply reject none.)
  """
  state = (trial.params, trial.model_state, trial.opt_state)
  return divergence.all_finite(state) & jnp.all(jnp.isfinite(metrics['train_loss']))


def finish(config: TrainConfig, trial: TrialState, metrics: dict) -> TrainResult:
  """The `TrainResult` of a trial whose epochs produced `metrics` (`[epochs]` each).

  `best_epoch` is the epoch of the highest dev accuracy, or -1 when the
  trial diverged before its first epoch ended.
  """
  accuracy = jnp.asarray(metrics['dev_accuracy'])
  finite = ~jnp.isnan(accuracy)
  best_epoch = jnp.where(
    jnp.any(finite), jnp.argmax(jnp.where(finite, accuracy, -jnp.inf)), -1
  ).astype(jnp.int32)
  params, model_state = trial.best if config.select == 'best' else (trial.params, trial.model_state)
  return TrainResult(
    params, model_state, metrics, trial.diverged_step >= 0, trial.diverged_step, best_epoch
  )


def make_train(config: TrainConfig) -> Callable[[dict, jax.Array, TrainData], TrainResult]:
  """Returns the pure `train(hparams, key, data) -> TrainResult` for `config`.

  `hparams` is a dict like `hparams(...)` returns (arrays, traceable);
  `data` a `TrainData`. Under `jax.vmap(train, in_axes=(0, 0, None))` every
  trial shares one copy of the data and gathers its own mini-batches.
  """

  def train(hp: dict, key: jax.Array, data: TrainData) -> TrainResult:
    trial = init_trial(config, hp, key, data)
    trial, metrics = train_epochs(config, hp, trial, data, config.epochs)
    return finish(config, trial, metrics)

  return train


def fit(
  config: TrainConfig,
  hp: dict,
  key: jax.Array,
  data: TrainData,
  *,
  on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainResult:
  """Trains one configuration epoch by epoch, calling `on_epoch(epoch, metrics)` after each.

  The same pieces as `make_train`'s `train` (`init_trial`, `train_epoch`,
  `finish`), one jitted epoch at a time so that a caller can print or log
  as training goes; `metrics` holds Python floats.
  """
  trial = jax.jit(init_trial, static_argnums=0)(config, hp, key, data)
  epoch = jax.jit(train_epoch, static_argnums=0)
  history = []
  for index in range(config.epochs):
    trial, metrics = epoch(config, hp, trial, data)
    metrics = {name: float(value) for name, value in metrics.items()}
    history.append(metrics)
    if on_epoch is not None:
      on_epoch(index, metrics)
  stacked = {name: np.asarray([m[name] for m in history], np.float32) for name in history[0]}
  return finish(config, trial, stacked)

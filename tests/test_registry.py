"""Tests for bnjax.registry: one table of hyperparameters that every other place derives from."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import bnjax
from bnjax import registry
from bnjax.nn import cnn, conv, mlp
from bnjax.optim import schedules
from bnjax.search import buckets
from bnjax.space import DEFAULTS, Fixed, Space, SpaceError, with_defaults

ARCHITECTURE = {'hidden_units', 'num_layers', 'channels', 'num_blocks'}

# ------------------------------------------------------------------------------ coverage


def test_traced_names_are_exactly_what_train_receives():
  assert set(registry.TRACED) == set(bnjax.hparams())
  assert len(registry.TRACED) == len(bnjax.hparams())


def test_static_names_are_exactly_what_makes_buckets():
  assert set(registry.STATIC) == {
    'batch_size',
    'activation',
    'batch_norm',
    'bn_placement',
    'model',
    'matmul_dtype',
    'kernel_size',
    'pool',
    'head',
  }
  assert tuple(buckets.STATIC) == tuple(registry.STATIC)


def test_every_model_field_of_train_config_is_a_static_name():
  # The static settings of one model travel in TrainConfig under their registry names.
  for name in ('model', 'matmul_dtype', 'kernel_size', 'pool', 'head'):
    assert name in bnjax.TrainConfig._fields, name
  models = {entry.model for entry in registry.REGISTRY.values()}
  assert models == {None, *registry.choices('model')}
  assert not registry.used_by('hidden_units', 'cnn') and registry.used_by('channels', 'cnn')
  assert registry.used_by('learning_rate', 'mlp') and registry.used_by('learning_rate', 'cnn')


def test_roles_partition_the_registry():
  traced, static = set(registry.TRACED), set(registry.STATIC)
  assert not traced & static and not (traced | static) & ARCHITECTURE
  assert traced | static | ARCHITECTURE == set(registry.REGISTRY)
  roles = {name: entry.role for name, entry in registry.REGISTRY.items()}
  assert {n for n, r in roles.items() if r == 'architecture'} == ARCHITECTURE
  assert all(entry.name == name for name, entry in registry.REGISTRY.items())


def test_space_defaults_are_the_registry_defaults():
  assert DEFAULTS is registry.DEFAULTS
  full = with_defaults({}, 2)
  assert list(full) == list(registry.REGISTRY)
  for name, value in registry.DEFAULTS.items():
    assert full[name].tolist() == [value, value], name


# ---------------------------------------------------------------------- defaults and checks


@pytest.mark.parametrize('name', list(registry.REGISTRY))
def test_every_default_passes_its_own_check_and_fits_in_a_space(name):
  entry = registry.REGISTRY[name]
  value = registry.check(name, entry.default)
  assert value == entry.default and type(value) is type(entry.default)
  assert registry.check(name, np.asarray(entry.default)) == entry.default  # array scalars too
  if entry.kind == 'choice':
    assert entry.default in entry.choices
    assert entry.index(entry.default) == entry.choices.index(entry.default)
  assert Space({name: entry.default})[name] == Fixed(entry.default)


def test_per_layer_widths_follow_hidden_units():
  assert registry.check('hidden_units_2', 64) == 64
  assert registry.per_layer_index('hidden_units_12') == 12
  assert registry.per_layer_index('hidden_units') is None
  with pytest.raises(registry.HyperparameterError, match=r'\[1, inf\)'):
    registry.check('hidden_units_2', 0)
  with pytest.raises(registry.HyperparameterError, match="did you mean 'hidden_units'"):
    registry.get('hidden_unit')


def test_space_errors_are_registry_errors_with_the_same_message():
  with pytest.raises(registry.HyperparameterError) as direct:
    registry.check('beta1', 1.0)
  with pytest.raises(SpaceError) as via_space:
    Space({'beta1': 1.0})
  assert isinstance(via_space.value, registry.HyperparameterError)
  assert str(via_space.value) == str(direct.value)


def test_to_python_unwraps_numpy_and_0d_arrays_only():
  for value, want in [(np.float32(0.5), 0.5), (np.int64(3), 3), (np.asarray('adam'), 'adam')]:
    got = registry.to_python(value)
    assert got == want and type(got) is type(want)
  assert registry.to_python(np.bool_(True)) is True
  array = np.zeros(2)
  assert registry.to_python(array) is array


# --------------------------------------------------------------- tables in code match choices


def test_categorical_tables_cover_the_registry_choices():
  assert set(mlp.ACTIVATIONS) == set(registry.choices('activation'))
  assert set(mlp.INIT_GAINS) == set(registry.choices('init'))
  assert tuple(mlp.PLACEMENTS) == registry.choices('bn_placement')
  assert tuple(bnjax.optim.FAMILIES) == registry.choices('optimizer')
  assert tuple(schedules.SCHEDULES) == registry.choices('lr_schedule')
  assert tuple(conv.POOLS) == registry.choices('pool')
  assert tuple(cnn.HEADS) == registry.choices('head')


def test_lookup_reads_a_table_by_name_and_refuses_a_partial_one():
  gains = registry.lookup('init', mlp.INIT_GAINS, jnp.arange(len(registry.choices('init'))))
  np.testing.assert_array_equal(gains, [mlp.INIT_GAINS[c] for c in registry.choices('init')])
  with pytest.raises(registry.HyperparameterError, match='table covers'):
    registry.lookup('init', {'he': 2.0}, 0)


def _after_updates(family):
  """Params after three updates of `bnjax.optimizer(0.1, family)` on fixed gradients."""
  tx = bnjax.optimizer(0.1, family, beta1=0.8, beta2=0.9, eps=1e-3)
  params = {'w': jnp.array([1.0, -2.0, 0.5])}
  state = tx.init(params)
  for k in range(3):
    grads = {'w': jnp.array([0.3, -0.1, 0.2]) * (k + 1) - 0.05 * params['w']}
    updates, state = tx.update(grads, state)
    params = optax.apply_updates(params, updates)
  return params


def test_optimizer_traced_index_agrees_with_its_name():
  by_name = {name: _after_updates(name) for name in registry.choices('optimizer')}
  traced = jax.jit(_after_updates)
  for name, want in by_name.items():
    index = jnp.int32(registry.choices('optimizer').index(name))
    # Same formulas; the traced path selects with `where` under jit, so only rounding differs.
    chex.assert_trees_all_close(traced(index), want, rtol=1e-6)
  finals = [tuple(np.asarray(p['w']).tolist()) for p in by_name.values()]
  assert len(set(finals)) == len(finals)  # the families really differ, so the test can fail


def _schedule_by_formula(name, lr, decay, epoch):
  """The notes' formulas, per name, in NumPy."""
  return {
    'constant': lr + 0 * epoch,
    'inverse_time': lr / (1 + decay * epoch),
    'exponential': lr * (1 - decay) ** epoch,
  }[name]


def test_schedule_traced_index_agrees_with_its_name():
  lr, decay, steps_per_epoch = 0.1, 0.2, 4
  steps = jnp.arange(40)
  epoch = np.floor(np.arange(40) / steps_per_epoch)
  named = {
    'constant': lambda step: jnp.full(step.shape, lr),
    'inverse_time': bnjax.inverse_time_decay(lr, decay, steps_per_epoch),
    'exponential': bnjax.exponential_decay(lr, 1 - decay, steps_per_epoch),
  }
  assert set(named) == set(registry.choices('lr_schedule'))
  for name in registry.choices('lr_schedule'):
    index = jnp.int32(registry.choices('lr_schedule').index(name))
    rates = jax.vmap(bnjax.optim.decayed(index, lr, decay, steps_per_epoch))(steps)
    np.testing.assert_allclose(rates, named[name](steps), rtol=1e-6)
    np.testing.assert_allclose(rates, _schedule_by_formula(name, lr, decay, epoch), rtol=1e-5)


# ------------------------------------------------------------------------ hparams validation


@pytest.mark.parametrize(
  ('values', 'match'),
  [
    ({'optimizer': 7}, 'index 7'),
    ({'optimizer': -1}, 'index -1'),
    ({'optimizer': [3, 4]}, 'index 4'),
    ({'lr_schedule': 3}, 'index 3'),
    ({'optimizer': 'adamw'}, "did you mean 'adam'"),
    ({'learning_rate': -1.0}, r'learning_rate must lie in \(0, inf\)'),
    ({'learning_rate': math.nan}, r'learning_rate must lie in \(0, inf\)'),
    ({'learning_rate': [1e-3, -1.0]}, 'got -1.0'),
    ({'keep_prob': 0.0}, r'keep_prob must lie in \(0, 1\]'),
    ({'beta1': 1.0}, r'beta1 must lie in \[0, 1\)'),
    ({'lr_decay': -0.5}, r'lr_decay must lie in \[0, 1\)'),
    ({'dropout_rate': 0.5}, 'unknown hyperparameters'),
  ],
)
@pytest.mark.filterwarnings('ignore:invalid value encountered:RuntimeWarning')
def test_hparams_rejects_what_the_registry_forbids(values, match):
  with pytest.raises(registry.HyperparameterError, match=match) as info:
    bnjax.hparams(**values)
  assert '\n' not in str(info.value)


def test_hparams_encodes_names_as_indices_in_registry_order():
  hp = bnjax.hparams(optimizer=['adam', 'sgd'], lr_schedule='exponential', init=['xavier'])
  np.testing.assert_array_equal(hp['optimizer'], [3, 0])
  assert hp['optimizer'].dtype == jnp.int32
  assert int(hp['lr_schedule']) == registry.choices('lr_schedule').index('exponential')
  np.testing.assert_array_equal(hp['init'], [registry.choices('init').index('xavier')])
  np.testing.assert_array_equal(bnjax.hparams(optimizer=[3, 0])['optimizer'], [3, 0])
  defaults = bnjax.hparams()
  for name in registry.TRACED:
    entry = registry.REGISTRY[name]
    want = entry.index(entry.default) if entry.kind == 'choice' else entry.default
    np.testing.assert_allclose(defaults[name], want, rtol=1e-7, err_msg=name)

"""Hyperparameter search spaces: distributions sampled on the right scale, and `Space`.

This module only re-exports (optax-style). Behind it:

* `_scalars`: `SpaceError` and the scalar checks, column packing, one spec value;
* `_sampling`: uniform draws from a jax key that only grow with `n`;
* `_distributions`: `Uniform`, `LogUniform`, `OneMinusLogUniform`, `IntUniform`,
  `IntLogUniform`, `Choice`, `Fixed`;
* `_names`: what a space may name, from `bnjax.registry`, and `with_defaults`;
* `_space`: `Space`;
* `_grammar`: the ``--space`` grammar, JSON files and `as_space`;
* `_keras`: the Keras Tuner facade `HyperParameters`.
"""

from bnjax.registry import Scalar
from bnjax.space._distributions import (
  KINDS,
  Choice,
  Distribution,
  Fixed,
  IntLogUniform,
  IntUniform,
  LogUniform,
  OneMinusLogUniform,
  Uniform,
)
from bnjax.space._grammar import as_space, load_space, parse_spec, space_from_json
from bnjax.space._keras import HyperParameters
from bnjax.space._names import DEFAULTS, with_defaults
from bnjax.space._scalars import SpaceError
from bnjax.space._space import Space

__all__ = [
  'DEFAULTS',
  'KINDS',
  'Choice',
  'Distribution',
  'Fixed',
  'HyperParameters',
  'IntLogUniform',
  'IntUniform',
  'LogUniform',
  'OneMinusLogUniform',
  'Scalar',
  'Space',
  'SpaceError',
  'Uniform',
  'as_space',
  'load_space',
  'parse_spec',
  'space_from_json',
  'with_defaults',
]

"""Every hyperparameter once: its name, kind, allowed values, default and role.

The space, the training loop, the buckets, the optimizers, the schedules, the
MLP and the launchers' flags all derive from `REGISTRY`; adding a
hyperparameter means adding one entry here plus the code that uses it.

Roles:

* ``traced``: a number or category index that `train` receives as an array,
  so trials with different values share one compiled program (categories such
  as ``optimizer`` travel as int32 indices into `Hyperparameter.choices`).
* ``static``: changes shapes or code paths; each value is a bucket, one compile.
* ``architecture``: widths and depth, traced as masks (``widths``, ``depth``)
  but also used to split buckets by width.

``model`` picks the network. Some names apply to one model only
(`Hyperparameter.model`): ``hidden_units``, ``num_layers`` and
``matmul_dtype`` to the MLP, ``channels``, ``num_blocks``, ``kernel_size``,
``pool`` and ``head`` to the CNN; the other model ignores them (and buckets
do not split on them).

=============  ======  ============  =======================================  ========
name           kind    role          allowed                                  default
=============  ======  ============  =======================================  ========
learning_rate  float   traced        (0, inf)                                 1e-3
optimizer      choice  traced        sgd, momentum, rmsprop, adam             adam
beta1          float   traced        [0, 1): momentum beta / Adam beta1       0.9
beta2          float   traced        [0, 1): RMSprop / Adam beta2             0.999
eps            float   traced        (0, inf)                                 1e-8
lr_schedule    choice  traced        constant, inverse_time, exponential      constant
lr_decay       float   traced        [0, 1): inverse_time: lr / (1 + d*epoch);
                                     exponential: lr * (1 - d)**epoch         0.0
l2             float   traced        [0, inf)                                 0.0
keep_prob      float   traced        (0, 1]                                   1.0
bn_momentum    float   traced        [0, 1)                                   0.99
init           choice  traced        he, xavier                               he
batch_norm     bool    static        true, false                              True
bn_placement   choice  static        before, after (BN before/after the act.) before
activation     choice  static        relu, tanh, sigmoid                      relu
batch_size     int     static        [1, inf)                                 128
model          choice  static        mlp, cnn                                 mlp
hidden_units   int     architecture  [1, inf)  (mlp)                          256
num_layers     int     architecture  [1, inf)  (mlp)                          3
matmul_dtype   choice  static        float32, bfloat16  (mlp: matmul inputs)  float32
channels       int     architecture  [1, inf)  (cnn: per block)               32
num_blocks     int     architecture  [1, inf)  (cnn)                          3
kernel_size    int     static        [1, inf)  (cnn: taps per spatial axis)   3
pool           choice  static        max, avg, none  (cnn)                    max
head           choice  static        global_avg, flatten  (cnn)               global_avg
=============  ======  ============  =======================================  ========

Per-layer widths ``hidden_units_1``, ``hidden_units_2``, ... (int >= 1; layers count from 1)
override ``hidden_units`` for that one layer. They have no default.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

Scalar = int | float | str | bool


class HyperparameterError(ValueError):
  """An unknown hyperparameter name or a value outside its allowed set (one-line message)."""


def to_python(value: Any) -> Any:
  """A numpy or 0-d array scalar as the Python `int`/`float`/`str`/`bool` it holds."""
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, np.ndarray) and value.ndim == 0:
    return value.item()
  return value


class Hyperparameter(NamedTuple):
  """One hyperparameter: what it is, what it may be, and how `train` receives it."""

  name: str
  kind: str  # 'float' | 'int' | 'choice' | 'bool'
  role: str  # 'traced' | 'static' | 'architecture'
  default: Scalar
  help: str
  low: float = -math.inf
  high: float = math.inf
  ends: str = '[]'  # '[' / ']' include that bound, '(' / ')' exclude it
  choices: tuple[str, ...] = ()
  model: str | None = None  # the one model that uses it ('mlp' or 'cnn'); None: both

  def interval(self) -> str:
    return f'{self.ends[0]}{self.low:g}, {self.high:g}{self.ends[1]}'

  def admits(self, x: Any) -> Any:
    """Whether `x` (a number, or elementwise an array) lies in the interval; NaN never does."""
    x = np.asarray(x, np.float64)
    with np.errstate(invalid='ignore'):
      above = x >= self.low if self.ends[0] == '[' else x > self.low
      below = x <= self.high if self.ends[1] == ']' else x < self.high
    return above & below

  def check(self, value: Any) -> Scalar:
    """Returns `value` as a Python scalar, or raises a one-line `HyperparameterError`."""
    v = to_python(value)
    if self.kind == 'choice':
      if not (isinstance(v, str) and v in self.choices):
        close = difflib.get_close_matches(str(v), self.choices, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise HyperparameterError(
          f'{self.name} got {v!r}{hint}; choose from {", ".join(map(repr, self.choices))}'
        )
    elif self.kind == 'bool':
      if not isinstance(v, bool):
        raise HyperparameterError(f'{self.name} takes true or false; got {v!r}')
    elif isinstance(v, bool | str) or not isinstance(v, int | float):
      what = 'an integer' if self.kind == 'int' else 'a number'
      raise HyperparameterError(f'{self.name} takes {what}; got {v!r}')
    elif self.kind == 'int' and not isinstance(v, int):
      raise HyperparameterError(f'{self.name} takes an integer; got {v!r}')
    elif not self.admits(v):  # NaN is admitted by no interval
      raise HyperparameterError(f'{self.name} must lie in {self.interval()}; got {v!r}')
    return v

  def index(self, value: str) -> int:
    """The int32 index a traced category travels as."""
    return self.choices.index(self.check(value))


def _positive(name, role, default, help):
  return Hyperparameter(name, 'float', role, default, help, 0, math.inf, '()')


def _unit(name, default, help):
  return Hyperparameter(name, 'float', 'traced', default, help, 0, 1, '[)')


def _count(name, role, default, help, model=None):
  return Hyperparameter(name, 'int', role, default, help, 1, math.inf, '[)', model=model)


def _choice(name, role, choices, help, model=None):
  return Hyperparameter(name, 'choice', role, choices[0], help, choices=choices, model=model)


_ENTRIES = (
  _positive('learning_rate', 'traced', 1e-3, 'Initial learning rate alpha0.'),
  Hyperparameter(
    'optimizer',
    'choice',
    'traced',
    'adam',
    "Update rule (the notes' forms; momentum is an average of gradients).",
    choices=('sgd', 'momentum', 'rmsprop', 'adam'),
  ),
  _unit('beta1', 0.9, 'Momentum beta / Adam beta1.'),
  _unit('beta2', 0.999, 'RMSprop / Adam beta2.'),
  _positive('eps', 'traced', 1e-8, 'Added to sqrt(s) in RMSprop and Adam.'),
  _choice(
    'lr_schedule', 'traced', ('constant', 'inverse_time', 'exponential'), 'Learning-rate decay.'
  ),
  # exponential: lr * (1 - lr_decay)**epoch, so 1 would zero the rate.
  _unit('lr_decay', 0.0, 'inverse_time: lr / (1 + d * epoch); exponential: lr * (1 - d)**epoch.'),
  Hyperparameter(
    'l2', 'float', 'traced', 0.0, 'L2 lambda: lambda / (2m) * sum ||W||^2.', 0, math.inf, '[)'
  ),
  Hyperparameter(
    'keep_prob', 'float', 'traced', 1.0, 'Inverted-dropout keep probability.', 0, 1, '(]'
  ),
  _unit('bn_momentum', 0.99, 'Running-average momentum of batch norm.'),
  _choice('init', 'traced', ('he', 'xavier'), 'Weight init: He (2/fan_in) or Xavier (1/fan_in).'),
  Hyperparameter('batch_norm', 'bool', 'static', True, 'Batch norm in every hidden layer.'),
  _choice('bn_placement', 'static', ('before', 'after'), 'BN before (z -> BN -> g) or after g.'),
  _choice('activation', 'static', ('relu', 'tanh', 'sigmoid'), 'Hidden activation.'),
  _count('batch_size', 'static', 128, 'Mini-batch size.'),
  _choice('model', 'static', ('mlp', 'cnn'), 'The network: an MLP, or conv blocks and a head.'),
  _count('hidden_units', 'architecture', 256, 'mlp: units per hidden layer.', 'mlp'),
  _count('num_layers', 'architecture', 3, 'mlp: hidden layers.', 'mlp'),
  _choice(
    'matmul_dtype',
    'static',
    ('float32', 'bfloat16'),
    'mlp: matmul inputs; bfloat16 rounds them (forward and backward) and sums in float32.',
    'mlp',
  ),
  _count('channels', 'architecture', 32, 'cnn: channels of every conv block.', 'cnn'),
  _count('num_blocks', 'architecture', 3, 'cnn: conv blocks (conv -> BN -> g -> pool).', 'cnn'),
  _count('kernel_size', 'static', 3, 'cnn: kernel taps along each spatial axis.', 'cnn'),
  _choice(
    'pool', 'static', ('max', 'avg', 'none'), 'cnn: pooling (2, stride 2) in every block.', 'cnn'
  ),
  _choice(
    'head',
    'static',
    ('global_avg', 'flatten'),
    'cnn: average over positions, or flatten them, before the dense output layer.',
    'cnn',
  ),
)

#: name -> `Hyperparameter`, read-only.
REGISTRY: Mapping[str, Hyperparameter] = MappingProxyType({e.name: e for e in _ENTRIES})
#: name -> default value, read-only.
DEFAULTS: Mapping[str, Scalar] = MappingProxyType({e.name: e.default for e in _ENTRIES})
#: The names `train` receives as arrays, in registry order.
TRACED: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.role == 'traced')
#: The names whose values split trials into buckets (one compile each).
STATIC: tuple[str, ...] = tuple(e.name for e in _ENTRIES if e.role == 'static')
_PER_LAYER = re.compile(r'hidden_units_([1-9][0-9]*)')


def get(name: Any) -> Hyperparameter:
  """The entry for `name` (per-layer ``hidden_units_K`` included), or a one-line error."""
  if isinstance(name, str) and name in REGISTRY:
    return REGISTRY[name]
  if isinstance(name, str) and _PER_LAYER.fullmatch(name):
    return REGISTRY['hidden_units']._replace(
      name=name, help=f'mlp: units of hidden layer {name[13:]}.'
    )
  close = difflib.get_close_matches(str(name), list(REGISTRY), n=1)
  hint = f' (did you mean {close[0]!r}?)' if close else ''
  raise HyperparameterError(
    f'unknown hyperparameter {name!r}{hint}; known names: '
    f'{", ".join(REGISTRY)}, hidden_units_1, hidden_units_2, ...'
  )


def used_by(name: str, model: str) -> bool:
  """Whether `model` ('mlp' or 'cnn') reads hyperparameter `name`; the other model ignores it."""
  entry = get(name)
  return entry.model is None or entry.model == model


def choices(name: str) -> tuple[str, ...]:
  """The allowed values of a categorical hyperparameter, in index order."""
  return REGISTRY[name].choices


def check(name: Any, value: Any) -> Scalar:
  """`value` as a Python scalar if `name` admits it; else a one-line `HyperparameterError`."""
  return get(name).check(value)


def lookup(name: str, table: Mapping[str, Any], index: Any) -> Any:
  """`table[choice]` for a (possibly traced) index of category `name`.

  Code that behaves differently per category writes its table by name, never
  by position: `lookup('init', {'he': 2.0, 'xavier': 1.0}, hp['init'])`.
  """
  import jax.numpy as jnp  # the registry itself needs no jax

  if set(table) != set(choices(name)):
    raise HyperparameterError(f'{name} table covers {sorted(table)}; expected {choices(name)}')
  return jnp.asarray([table[choice] for choice in choices(name)])[index]


def per_layer_index(name: str) -> int | None:
  """K for ``hidden_units_K`` (layers count from 1); None for any other name."""
  match = _PER_LAYER.fullmatch(name)
  return int(match.group(1)) if match else None

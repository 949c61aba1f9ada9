"""Softmax cross-entropy, accuracy and the notes' L2 penalty.

Labels are checked before any math: their shape against the logits' at trace
time, and integer class ids against `[0, C)` whenever they are concrete (a
NumPy or an un-traced JAX array). One-hot encoding an id outside the range
gives a row of zeros and so a loss of 0, silently; JAX cannot raise inside a
jitted program, so traced ids are the caller's to keep in range.
"""

import jax
import jax.numpy as jnp
import numpy as np


def _checked_labels(logits: jax.Array, labels: jax.typing.ArrayLike, where: str):
  """`(logits, labels, is_ids)` once their shapes fit; concrete ids must lie in `[0, C)`."""
  # The values as given: JAX's int32 cast could wrap an id like 2**40 into the range.
  given = None if isinstance(labels, jax.core.Tracer) else np.asarray(labels)
  logits, labels = jnp.asarray(logits), jnp.asarray(labels)
  if logits.ndim < 1:
    raise ValueError(f'{where}: logits has shape {logits.shape}; it must be [batch, classes]')
  num_classes = logits.shape[-1]
  if labels.shape == logits.shape[:-1]:
    if not jnp.issubdtype(labels.dtype, jnp.integer):
      raise TypeError(
        f'{where}: labels of shape {labels.shape} are class ids and must be integers; got dtype '
        f'{labels.dtype}: cast them (labels.astype(int)) or pass probability rows '
        f'{logits.shape}'
      )
    if given is not None:
      outside = np.flatnonzero((given < 0) | (given >= num_classes))
      if outside.size:
        first = int(outside[0])
        raise ValueError(
          f'{where}: label {given.ravel()[first].item()} (at flat index {first}) is outside '
          f'[0, {num_classes}) for logits of shape {logits.shape}; labels must be class ids '
          f'0..{num_classes - 1}'
        )
    return logits, labels, True
  if labels.shape == logits.shape:
    return logits, labels, False
  raise ValueError(
    f'{where}: labels have shape {labels.shape} but logits have shape {logits.shape}; pass '
    f'class ids of shape {logits.shape[:-1]} or probability rows of shape {logits.shape}'
  )


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example loss `-sum_c y_c log softmax(logits)_c`.

  `log_softmax` subtracts the row maximum first, so logits of magnitude 1e4
  stay finite and exact. Its gradient with respect to the logits is
  `softmax(logits) - y` (the notes' dJ/dz = y_hat - y).

  Args:
    logits: `[batch, C]`.
    labels: integer class ids `[batch]` in `[0, C)`, or probability vectors
      `[batch, C]`.

  Returns:
    `[batch]` losses.

  Raises:
    ValueError: shapes that do not fit (at trace time), or concrete ids
      outside `[0, C)`.
    TypeError: class ids that are not integers (at trace time).
  """
  logits, labels, is_ids = _checked_labels(logits, labels, 'softmax_cross_entropy')
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
  if is_ids:
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=dtype)
  else:
    targets = labels.astype(dtype)
  # Where a target is 0 its term is 0 even if log_prob is -inf.
  return -jnp.sum(jnp.where(targets == 0, 0.0, targets * log_probs), axis=-1)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose arg-max logit is the label.

  Args:
    logits: `[batch, C]`.
    labels: integer class ids `[batch]` in `[0, C)` or probability rows
      `[batch, C]` (their arg-max is the label); checked as in
      `softmax_cross_entropy`.
  """
  logits, labels, is_ids = _checked_labels(logits, labels, 'accuracy')
  if not is_ids:
    labels = jnp.argmax(labels, axis=-1)
  return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def weight_matrices(params) -> list[jax.Array]:
  """The leaves named `'w'`: the weight matrices that L2 regularizes.

  BN scale/offset and biases are never regularized (the notes' L2 is over
  `||W^[l]||_F^2`).
  """
  found = []

  def visit(path, leaf):
    if path and getattr(path[-1], 'key', None) == 'w':
      found.append(leaf)

  jax.tree_util.tree_map_with_path(visit, params)
  return found


def l2_penalty(params, l2: jax.typing.ArrayLike, num_examples: jax.typing.ArrayLike) -> jax.Array:
  """The notes' `lambda / (2m) * sum_l ||W^[l]||_F^2`.

  Args:
    params: a pytree whose weight matrices are the leaves named `'w'`.
    l2: lambda (traceable).
    num_examples: m, the number of examples the data term averages over
      (the mini-batch size in mini-batch training).
  """
  total = sum(
    jnp.sum(jnp.square(w.astype(jnp.promote_types(w.dtype, jnp.float32))))
    for w in weight_matrices(params)
  )
  return l2 / (2.0 * num_examples) * total

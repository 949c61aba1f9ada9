"""Softmax cross-entropy, accuracy and the notes' L2 penalty."""

import jax
import jax.numpy as jnp


def _targets(labels: jax.Array, logits: jax.Array, dtype) -> jax.Array:
  """Class ids (one rank less than the logits) become one-hot rows."""
  labels = jnp.asarray(labels)
  if labels.ndim == logits.ndim - 1:
    return jax.nn.one_hot(labels, logits.shape[-1], dtype=dtype)
  return labels.astype(dtype)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Per-example loss `-sum_c y_c log softmax(logits)_c`.

  `log_softmax` subtracts the row maximum first, so logits of magnitude 1e4
  stay finite and exact. Its gradient with respect to the logits is
  `softmax(logits) - y` (the notes' dJ/dz = y_hat - y).

  Args:
    logits: `[batch, C]`.
    labels: integer class ids `[batch]` or probability vectors `[batch, C]`.

  Returns:
    `[batch]` losses.
  """
  logits = jnp.asarray(logits)
  dtype = jnp.promote_types(logits.dtype, jnp.float32)
  log_probs = jax.nn.log_softmax(logits.astype(dtype), axis=-1)
  targets = _targets(labels, logits, dtype)
  # Where a target is 0 its term is 0 even if log_prob is -inf.
  return -jnp.sum(jnp.where(targets == 0, 0.0, targets * log_probs), axis=-1)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Fraction of rows whose arg-max logit is the label (ids or probability rows)."""
  labels = jnp.asarray(labels)
  if labels.ndim == logits.ndim:
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

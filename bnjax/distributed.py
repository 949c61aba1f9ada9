"""One population over several processes: JAX's multi-controller runtime, as the search uses it.

After `jax.distributed.initialize`, every process runs the same program: it
samples the same trials from the same seed, plans the same chunks, and calls
each compiled program in the same order, with the trial axis sharded over
every process's devices (`jax.devices()`, a global `Mesh`). A process holds
only its own devices' part of a global array, so:

* host values that every process holds whole (the chunk's hyperparameters
  and keys, the data set) become global arrays with
  `jax.make_array_from_callback`, each process filling its own devices
  (`jax.device_put` is the shortcut where every device is local);
* results come back to every process whole with
  `multihost_utils.process_allgather`, so rankings are computed the same on
  every process and no decision needs a message;
* only process 0 writes files (`is_writer`).

With one process every function here is the plain single-process call.
"""

import functools
import hashlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec


class DistributedError(ValueError):
  """Bad process settings (`initialize`), or processes that disagree."""


def initialize(
  *,
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  detect: bool = False,
  heartbeat_timeout: int = 100,
) -> bool:
  """Joins this process to the others (`jax.distributed.initialize`); call before any device use.

  Args:
    coordinator_address: `host:port` of process 0, which serves there.
    num_processes: how many processes take part.
    process_id: this process's index in [0, num_processes).
    detect: let JAX read all three from the cluster (SLURM, Cloud TPU pods,
      Open MPI, Kubernetes via their environment) where none is given.
    heartbeat_timeout: seconds after which a silent process counts as dead
      and every other process stops.

  Returns:
    True if the runtime was started; False where nothing asks for it (one
    process, nothing to do).

  Raises:
    DistributedError: some of the three are given but not all, or they are
      out of range (before any connection is tried).
  """
  given = {
    'coordinator_address': coordinator_address,
    'num_processes': num_processes,
    'process_id': process_id,
  }
  missing = [f'--{name}' for name, value in given.items() if value is None]
  if len(missing) == len(given) and not detect:
    return False
  if missing and not detect:
    raise DistributedError(
      f'{", ".join(missing)} missing: give all three of --coordinator_address, '
      '--num_processes and --process_id, or --distributed alone to let JAX detect them'
    )
  if num_processes is not None and num_processes < 1:
    raise DistributedError(f'--num_processes must be at least 1; got {num_processes}')
  if process_id is not None and not 0 <= process_id < (num_processes or process_id + 1):
    raise DistributedError(
      f'--process_id must be in [0, --num_processes={num_processes}); got {process_id}'
    )
  if heartbeat_timeout < 1:
    raise DistributedError(f'--heartbeat_timeout must be at least 1 s; got {heartbeat_timeout}')
  jax.distributed.initialize(
    coordinator_address, num_processes, process_id, heartbeat_timeout_seconds=heartbeat_timeout
  )
  return True


def is_multiprocess() -> bool:
  return jax.process_count() > 1


def is_writer() -> bool:
  """Whether this process writes the search's files: process 0 does, the others compute."""
  return jax.process_index() == 0


def devices() -> list[jax.Device]:
  """Where a population's trial axis goes by default: every process's devices when several."""
  return jax.devices() if is_multiprocess() else jax.local_devices()


def put(tree, sharding: NamedSharding):
  """Host values that every process holds whole, as global arrays laid out by `sharding`."""
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)
  return jax.tree.map(lambda value: _put_leaf(value, sharding), tree)


def _put_leaf(value, sharding: NamedSharding):
  if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
    # Typed PRNG keys travel as their raw data and are wrapped again in place.
    data = _put_leaf(np.asarray(jax.random.key_data(value)), sharding)
    return jax.random.wrap_key_data(data, impl=jax.random.key_impl(value))
  value = np.asarray(value)
  # Each process fills only its own devices' slices.
  return jax.make_array_from_callback(value.shape, sharding, value.__getitem__)


def fetch(tree):
  """Arrays on the host as NumPy, whole on every process."""
  leaves = jax.tree.leaves(tree)
  if all(getattr(leaf, 'is_fully_addressable', True) for leaf in leaves):
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def take(tree, rows: np.ndarray):
  """Rows `rows` of each leaf's leading axis, on the host (e.g. a few trials' params).

  Where a leaf is spread over other processes' devices, every process gathers
  the rows onto all its devices in one program, then reads its own copy; so
  every process must call this with the same `rows`.
  """
  leaves = jax.tree.leaves(tree)
  if all(leaf.is_fully_addressable for leaf in leaves):
    return jax.device_get(jax.tree.map(lambda leaf: leaf[rows], tree))
  mesh = leaves[0].sharding.mesh
  taken = _gather(NamedSharding(mesh, PartitionSpec()))(tree, jnp.asarray(rows))
  return jax.tree.map(lambda leaf: np.asarray(leaf.addressable_data(0)), taken)


@functools.cache
def _gather(replicated: NamedSharding):
  return jax.jit(
    lambda tree, rows: jax.tree.map(lambda leaf: leaf[rows], tree), out_shardings=replicated
  )


def broadcast_bytes(data: bytes | None) -> bytes:
  """Process 0's `data` on every process (the others pass None)."""
  if not is_multiprocess():
    return data
  size = multihost_utils.broadcast_one_to_all(np.int32(len(data) if is_writer() else 0))
  buffer = np.frombuffer(data, np.uint8) if is_writer() else np.zeros(int(size), np.uint8)
  return np.asarray(multihost_utils.broadcast_one_to_all(buffer)).tobytes()


def check_same(name: str, value: bytes) -> None:
  """Raises the same `DistributedError` on every process unless all hold the same `value`."""
  if not is_multiprocess():
    return
  digest = np.frombuffer(hashlib.sha256(value).digest(), np.uint8)
  everyone = multihost_utils.process_allgather(digest)
  differ = [i for i in range(len(everyone)) if not np.array_equal(everyone[i], everyone[0])]
  if differ:
    raise DistributedError(
      f'process(es) {", ".join(map(str, differ))} have other {name} than process 0; '
      'start every process with the same flags and the same data files'
    )

"""Test setup: four virtual CPU devices, so sharding tests run anywhere.

XLA reads the flag when JAX starts its backend, so it is set before any test
module imports jax. Computations that name no sharding still run on device 0.
"""

import os

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
).strip()


# Shared by the search tests (tests/test_search_*.py).
import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnjax.data import Splits  # noqa: E402


def blobs(rng, centers, n):
  """Three overlapping Gaussian blobs in 6-D: learnable, but not solved in two epochs."""
  y = rng.integers(0, 3, size=n)
  x = centers[y] + 1.5 * rng.normal(size=(n, 6))
  return x.astype(np.float32), y.astype(np.int32)


@pytest.fixture(scope='module')
def search_compile_cache(tmp_path_factory):
  """Compiles each distinct program once per session, and cheaply; restored afterwards.

  Programs die with each module (`jax.clear_caches`), so a persistent cache
  (shared by the search test modules) lets equal programs compile once. XLA's
  optimization passes cost more than they save on these tiny runs, and change
  only the last bits of the numbers.
  """
  from jax.experimental.compilation_cache import compilation_cache

  from bnjax.search import segments

  names = ('jax_compilation_cache_dir', 'jax_disable_most_optimizations')
  saved = {name: jax.config.values[name] for name in names}
  path = tmp_path_factory.getbasetemp() / 'jax_compilation_cache'
  path.mkdir(exist_ok=True)
  jax.config.update('jax_compilation_cache_dir', str(path))
  jax.config.update('jax_disable_most_optimizations', True)
  compilation_cache.reset_cache()
  # `run_trials` keeps its programs between calls: none compiled optimized may serve here.
  segments.programs.cache_clear()
  yield
  for name, value in saved.items():
    jax.config.update(name, value)
  compilation_cache.reset_cache()
  jax.clear_caches()  # no unoptimized executable outlives this module


@pytest.fixture(scope='module')
def blob_splits():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(3, 6))
  parts = [blobs(rng, centers, n) for n in (200, 60, 60)]
  return Splits(*parts[0], *parts[1], *parts[2], num_classes=3, name='blobs')


@pytest.fixture(scope='module')
def blob_npz(blob_splits, tmp_path_factory):
  """`blob_splits` as a data file the launchers load (train and dev together, test apart)."""
  splits = blob_splits
  path = tmp_path_factory.mktemp('data') / 'blobs.npz'
  np.savez(
    path,
    x=np.concatenate([splits.x_train, splits.x_dev]),
    y=np.concatenate([splits.y_train, splits.y_dev]),
    x_test=splits.x_test,
    y_test=splits.y_test,
  )
  return path

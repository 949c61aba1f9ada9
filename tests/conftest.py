"""Test setup: four virtual CPU devices, so sharding tests run anywhere.

XLA reads the flag when JAX starts its backend, so it is set before any test
module imports jax. Computations that name no sharding still run on device 0.
"""

import os

os.environ['XLA_FLAGS'] = (
  os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=4'
).strip()

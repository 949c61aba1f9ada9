r"""One process of four devices against two processes of two, the same search, on this machine.

  python benchmarks/processes.py                          # 32 trials x 5 epochs, MNIST-1D
  python benchmarks/processes.py --num_trials=8 --epochs=1

Runs `experiments/random_search.py` (default space, `--seed=0`) twice on
virtual CPU devices: once as one process with
`--xla_force_host_platform_device_count=4`, once as two processes with two
devices each, joined on localhost (`--num_processes=2`), each in its own
working directory. Prints each side's wall time (start to exit, imports
included) and search time (the launcher's `trials in ... s`), and whether
the two `results.csv` are identical. On one CPU machine expect no speed-up:
the point is that it works and agrees.
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(ROOT, 'experiments', 'random_search.py')

NUM_TRIALS = flags.DEFINE_integer('num_trials', 32, 'Trials of the search.')
EPOCHS = flags.DEFINE_integer('epochs', 5, 'Epochs per trial.')
DATASET = flags.DEFINE_string('dataset', 'mnist1d', 'mnist1d, digits or a file.')


def launch(workdir: str, index: int, processes: int, devices: int, port: int):
  env = dict(os.environ)
  env.update(
    JAX_PLATFORMS='cpu',
    XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
    PYTHONPATH=ROOT,
  )
  command = [
    sys.executable,
    LAUNCHER,
    f'--dataset={DATASET.value}',
    f'--num_trials={NUM_TRIALS.value}',
    f'--epochs={EPOCHS.value}',
    '--seed=0',
    '--output_dir=out',
  ]
  if processes > 1:
    command += [
      f'--coordinator_address=localhost:{port}',
      f'--num_processes={processes}',
      f'--process_id={index}',
    ]
  os.makedirs(workdir, exist_ok=True)
  return subprocess.Popen(
    command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def side(root: str, processes: int, devices: int) -> tuple[float, float, str]:
  """(wall seconds, search seconds, results.csv text) of one configuration."""
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  workdirs = [os.path.join(root, f'{processes}x{devices}', f'process{i}') for i in range(processes)]
  start = time.perf_counter()
  running = [launch(w, i, processes, devices, port) for i, w in enumerate(workdirs)]
  outputs = [p.communicate()[0] for p in running]
  wall = time.perf_counter() - start
  for p, output in zip(running, outputs, strict=True):
    if p.returncode:
      raise SystemExit(f'error: a process exited with {p.returncode}:\n{output[-2000:]}')
  search = float(re.search(r'trials in ([0-9.]+) s', outputs[0]).group(1))
  with open(os.path.join(workdirs[0], 'out', 'results.csv')) as f:
    return wall, search, f.read()


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as root:
    print(f'{NUM_TRIALS.value} trials x {EPOCHS.value} epochs on {DATASET.value}; {load()}')
    one = side(root, 1, 4)
    print(f'1 process x 4 devices:  {one[0]:6.1f} s wall, {one[1]:6.1f} s search; {load()}')
    two = side(root, 2, 2)
    print(f'2 processes x 2 devices: {two[0]:6.1f} s wall, {two[1]:6.1f} s search; {load()}')
    print('results.csv identical' if one[2] == two[2] else 'results.csv DIFFER')


def load() -> str:
  return 'load average {:.1f} {:.1f} {:.1f}'.format(*os.getloadavg())


if __name__ == '__main__':
  app.run(main)

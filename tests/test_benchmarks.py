"""The benchmark suite's own measurements (`benchmarks/`), where they can be wrong silently."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from benchmarks import report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='VmHWM is Linux only')
def test_scaling_peak_memory_is_the_childs_own_not_its_large_parents():
  # `ru_maxrss` of a process started by a large parent starts at the parent's
  # high water (the scaling section once reported 2519 MB for every N).
  ballast = np.ones(600 * 2**20 // 8)  # 600 MB, touched
  child = textwrap.dedent(
    """
    import numpy as np
    from benchmarks.scaling import peak_memory_mb
    before = peak_memory_mb()
    block = np.ones(200 * 2**20 // 8)  # 200 MB more, touched
    print(before, peak_memory_mb())
    """
  )
  done = subprocess.run(
    [sys.executable, '-c', child],
    cwd=ROOT,
    env=dict(os.environ, PYTHONPATH=ROOT),
    capture_output=True,
    text=True,
    check=True,
  )
  del ballast  # held, and resident, until the child has measured
  before, after = map(float, done.stdout.split())
  assert before < 500, f'the child reports {before:.0f} MB: its parent holds 600 MB of them'
  assert after - before > 190, "the high water does not follow the child's own allocations"


def test_report_renders_the_kept_record(tmp_path):
  # The README's table and figure come from `benchmarks/report.py`; the record
  # kept in docs/ was written by it, so rendering its JSON again must give its
  # markdown back, and a PNG.
  record = os.path.join(ROOT, 'docs', 'figures', 'benchmarks')
  with open(os.path.join(record, 'results.json')) as f:
    figures = json.load(f)
  with open(os.path.join(record, 'results.md')) as f:
    kept = f.read()
  assert report.markdown(figures) == kept, (
    'the kept results.md is not report.markdown of its results.json: a format change must '
    'render the record again'
  )
  report.figure(figures, str(tmp_path / 'results.png'))
  with open(tmp_path / 'results.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'

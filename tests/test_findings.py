"""Every claim of experiments/findings.py in --quick mode writes its JSON and PNG.

This checks the plumbing (each claim runs, writes strict JSON with its claim
text and intervals, and a PNG), not that a claim holds: docs/findings.md
reports the default runs. Each claim compiles a few small programs, so the
whole file takes minutes on a 2-core CPU: slow.
"""

import json
import pathlib

import pytest
from test_launchers import launch, read_json

from experiments import claims
from experiments.claims import common

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures('search_compile_cache')]


@pytest.mark.parametrize('name', claims.NAMES)
def test_each_claim_writes_its_json_and_png(name, tmp_path):
  numbers, figure = claims.load(name).run(quick=True)
  json_path, png_path = common.write(str(tmp_path), name, numbers, figure)
  written = read_json(pathlib.Path(json_path))
  assert written['claim'] == claims.load(name).CLAIM
  assert pathlib.Path(png_path).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert 'ci95' in json.dumps(written) or 'bitwise_equal_train_losses' in json.dumps(written)


def test_an_unknown_claim_is_one_error_line(tmp_path):
  done = launch('findings.py', '--claim=nope', f'--output_dir={tmp_path}', timeout=120)
  assert done.returncode != 0
  assert done.stderr.strip().splitlines()[-1].startswith("error: unknown claim 'nope'")

"""The README's Python snippets run as written, and its links stay inside the repository."""

import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / 'README.md'
SNIPPETS = re.findall(r'^```python\n(.*?)^```', README.read_text(), flags=re.MULTILINE | re.DOTALL)
# [text](target) and <https://...> links.
LINKS = re.compile(r'\]\(([^)\s]+)\)|<(https?://[^>\s]+)>')


def test_readme_has_snippets():
  assert len(SNIPPETS) >= 3, 'the README lost its ```python examples'


@pytest.mark.parametrize('index', range(len(SNIPPETS)))
def test_snippet_runs_as_written(index, tmp_path, monkeypatch):
  """Each snippet runs alone, in a fresh namespace, as a reader would paste it."""
  monkeypatch.chdir(tmp_path)  # where a snippet's files (results.csv) go
  source = SNIPPETS[index]
  namespace = {'__name__': f'readme_snippet_{index + 1}'}
  exec(compile(source, f'README.md python snippet {index + 1}', 'exec'), namespace)
  for path in re.findall(r"to_csv\('([^']+)'\)", source):
    rows = (tmp_path / path).read_text().splitlines()
    assert len(rows) > 1, f'{path} has no trial rows'


@pytest.mark.parametrize(
  'document', ['README.md', 'BUILD.md', 'docs/design.md', 'docs/performance.md']
)
def test_links_stay_inside_the_repository(document):
  text = (ROOT / document).read_text()
  assert '../shared' not in text
  for relative, _ in LINKS.findall(text):
    if not relative or re.match(r'[a-z]+:', relative) or relative.startswith('#'):
      continue
    target = (ROOT / document).parent / relative.split('#')[0]
    assert target.resolve().is_relative_to(ROOT), f'{document} links outside: {relative}'
    assert target.exists(), f'{document} links a missing file: {relative}'

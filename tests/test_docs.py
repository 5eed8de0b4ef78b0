"""The documentation site builds strictly (a broken link, a missing page or a bad reference fails
it) with its API reference generated from the docstrings, and every ```python example of the README
and the docs runs as written (```py marks a sketch that names your own classes)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
# the own-loop example is run, and its checkpoint checked, by tests/trainers/test_own_loop.py; the
# deployment example (it loads a front file) by tests/deploy/test_front.py, beside a front it exported
NEEDS_MORE = ("WeNetStep(", "DynamicModel.load(")
EXAMPLES = [(document.relative_to(ROOT).as_posix(), index, block) for document in DOCUMENTS
            for index, block in enumerate(re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.S))
            if not any(marker in block for marker in NEEDS_MORE)]


def test_the_readme_is_what_a_newcomer_needs_first() -> None:
    assert len((ROOT / "README.md").read_bytes()) <= 12_000
    links = re.findall(r"\]\((docs/[^)#]+)", (ROOT / "README.md").read_text())
    assert links and all((ROOT / link).exists() for link in links), links


@pytest.mark.slow
def test_the_docs_site_builds_strictly_with_its_api_reference(tmp_path) -> None:
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "search" / "index.html").read_text()
    assert "SearchStrategy" in reference and "register_strategy" in reference  # generated from the docstrings
    assert (tmp_path / "site" / "tutorial" / "quickstart" / "index.html").exists()


@pytest.mark.slow
@pytest.mark.parametrize(("where", "index", "code"), EXAMPLES, ids=[f"{w}#{i}" for w, i, _ in EXAMPLES])
def test_every_python_example_runs_as_written(tmp_path, monkeypatch, where, index, code) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"{where} example {index}", "exec"), {"__name__": "__docs__"})  # noqa: S102 - our own docs

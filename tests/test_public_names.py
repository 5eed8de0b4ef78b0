"""The README's examples use only public names: no private module (`subnetsearch.x._y`), and every
imported name is in its package's `__all__`."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _examples() -> list[tuple[str, str]]:
    found = []
    for document in DOCUMENTS:
        for block in re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.S):
            found.append((document.relative_to(ROOT).as_posix(), block))
    return found


def test_documented_examples_import_only_public_names() -> None:
    examples = _examples()
    assert examples, "the README has Python examples"
    wrong = []
    for where, code in examples:
        for node in ast.walk(ast.parse(code)):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith("subnetsearch"):
                continue
            module = node.module or ""
            if any(part.startswith("_") for part in module.split(".")):
                wrong.append(f"{where}: from {module} (a private module)")
                continue
            public = set(getattr(importlib.import_module(module), "__all__", ()))
            wrong.extend(f"{where}: {alias.name} is not in {module}.__all__" for alias in node.names
                         if alias.name not in public)
    assert not wrong, "\n".join(wrong)

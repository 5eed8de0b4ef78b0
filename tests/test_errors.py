"""One exception root: everything subnetsearch raises on purpose is a `SubnetsearchError`, keeps
the standard base its callers rely on, and reaches the user as one line with a non-zero status."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import subnetsearch
from subnetsearch import ExportError, InputError, SubnetsearchError

ROOT = Path(subnetsearch.__file__).parent


def _modules() -> list[str]:
    return sorted(info.name for info in pkgutil.walk_packages([str(ROOT)], "subnetsearch.")
                  if ".alembic" not in info.name and not info.name.endswith("__main__"))


def test_every_exception_class_of_the_package_has_the_root() -> None:
    found = {}
    for name in _modules():
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if value.__module__ == name and issubclass(value, Exception):
                found[f"{name}.{value.__qualname__}"] = value
    assert len(found) >= 14  # the 13 of the issue, ExportError's move and InputError
    assert not [name for name, cls in found.items() if not issubclass(cls, SubnetsearchError)]
    # the standard bases callers relied on stay
    from subnetsearch.storage import StorageError
    from subnetsearch.supernets import ArchError, CheckpointError

    assert issubclass(CheckpointError, ValueError) and issubclass(ArchError, ValueError)
    assert issubclass(StorageError, RuntimeError) and issubclass(ExportError, RuntimeError)
    assert issubclass(InputError, ValueError)


def test_the_library_raises_no_bare_value_error() -> None:
    """A bad argument is an `InputError` (a ValueError with the root), so that a caller catching the
    root catches it; the CLI (which turns its own checks into messages) is exempt."""
    bare = []
    for path in sorted(ROOT.rglob("*.py")):
        if "cli" in path.relative_to(ROOT).parts or "alembic" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)
                    and isinstance(node.exc.func, ast.Name) and node.exc.func.id in ("ValueError", "Exception")):
                bare.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert not bare, bare


def test_the_root_imports_without_torch() -> None:
    done = subprocess.run([sys.executable, "-c", "import sys, subnetsearch; print(subnetsearch.SubnetsearchError); "
                           "assert 'torch' not in sys.modules"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(("error", "code"), [(InputError("the knob [x] is out of range"), 2),
                                             (ExportError("the exporter refused"), 1)])
def test_main_prints_one_line_for_the_root(monkeypatch, capsys, error, code) -> None:
    from subnetsearch.cli import _app

    def app() -> None:
        raise error

    monkeypatch.setattr(_app, "app", app)
    monkeypatch.setattr(sys, "argv", ["subnetsearch"])
    with pytest.raises(SystemExit) as stopped:
        _app.main()
    assert stopped.value.code == code
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and str(error) in err and "Traceback" not in err

"""Every subpackage imports on its own in a fresh interpreter, as a Ray worker imports it: an import
cycle shows only when a module that is part of the cycle is imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

PACKAGES = ["costs", "data", "spaces", "supernets", "trainers", "devices", "search", "storage", "dashboards", "distributed",
            "deploy", "service", "cli"]


@pytest.mark.parametrize("package", PACKAGES)
def test_subpackage_imports_first(package: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import subnetsearch.{package}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# Each package may import the packages of lower layers only, through their public __init__ (never
# another package's private module): data flows one way.
LAYERS = [{"errors", "seeding"}, {"costs", "files", "pareto", "deploy"}, {"data", "spaces"}, {"supernets"},
          {"trainers", "devices"}, {"storage"}, {"search"}, {"distributed", "dashboards", "service"}, {"cli"}, {"__main__"}]


def _imports_of(path) -> list[tuple[int, str]]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, name) for line, name in found if name.startswith("subnetsearch.")]


def test_packages_import_only_lower_layers_through_their_public_names() -> None:
    from pathlib import Path

    import subnetsearch

    root = Path(subnetsearch.__file__).parent
    layer_of = {package: index for index, layer in enumerate(LAYERS) for package in layer}
    assert set(layer_of) >= {p.stem for p in root.iterdir() if p.stem != "__init__" and not p.stem.startswith(".")
                             and (p.suffix == ".py" or (p / "__init__.py").exists())}
    wrong = []
    for path in sorted(root.rglob("*.py")):
        own = path.relative_to(root).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for line, name in _imports_of(path):
            parts = name.split(".")
            other = parts[1]
            where = f"{path.relative_to(root.parent)}:{line} imports {name}"
            if other == own:
                continue
            if layer_of[other] >= layer_of[own]:
                wrong.append(f"{where} (a package of the same or a higher layer)")
            elif len(parts) > 2 and parts[2].startswith("_"):
                wrong.append(f"{where} (another package's private module)")
    assert not wrong, "\n".join(wrong)

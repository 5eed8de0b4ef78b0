"""The package installs beside a user's own torch: its dependencies are version ranges (no pins), the
versions this project tests satisfy them, and the set-up script pins those through its constraints."""

import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def test_dependencies_are_ranges_the_tested_versions_satisfy() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(text) for text in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        requirements += [Requirement(text) for text in extra]
    pinned = [str(r) for r in requirements if any(spec.operator in ("==", "===") for spec in r.specifier)]
    assert not pinned, f"pins replace a user's own build: {pinned}"
    for requirement in requirements:
        if requirement.name in ("torch", "torchvision"):
            installed = version(requirement.name).split("+")[0]
            assert requirement.specifier.contains(installed), (requirement, installed)


def test_the_setup_script_pins_this_machines_torch_through_its_constraints() -> None:
    constraints = {Requirement(line).name: Requirement(line) for line in
                   (ROOT / "scripts" / "constraints.txt").read_text().splitlines() if line and not line.startswith("#")}
    assert str(constraints["torch"].specifier) == "==2.14.1" and str(constraints["torchvision"].specifier) == "==0.29.1"
    assert "-c scripts/constraints.txt" in (ROOT / "scripts" / "setup.sh").read_text()

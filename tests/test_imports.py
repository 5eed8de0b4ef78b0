"""Every subpackage imports on its own in a fresh interpreter, as a Ray worker imports it: an import
cycle shows only when a module that is part of the cycle is imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

PACKAGES = ["data", "spaces", "supernets", "trainers", "devices", "search", "storage", "dashboards", "distributed",
            "cli"]


@pytest.mark.parametrize("package", PACKAGES)
def test_subpackage_imports_first(package: str) -> None:
    done = subprocess.run([sys.executable, "-c", f"import subnetsearch.{package}"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

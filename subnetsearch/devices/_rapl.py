"""Measured energy from Linux powercap (RAPL: Intel, and AMD through the same interface), where the
host exposes it. Package domains (`intel-rapl:N`) are summed; counters wrap at
`max_energy_range_uj`. The figure is whole-package energy while the model runs (other processes and
idle power included), per inference: a measurement, not the Eq. (6) model, and labelled as such.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

POWERCAP = Path("/sys/class/powercap")
_PACKAGE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class RaplDomain:
    name: str
    energy_file: Path
    max_range_uj: int


def rapl_domains(root: Path = POWERCAP) -> list[RaplDomain]:
    """The readable package domains (empty where there is no powercap or no permission)."""
    domains = []
    try:
        entries = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:
        return []
    for entry in entries:
        if not _PACKAGE.match(entry.name):
            continue
        try:
            int((entry / "energy_uj").read_text())
            limit = int((entry / "max_energy_range_uj").read_text())
            name = (entry / "name").read_text().strip() if (entry / "name").exists() else entry.name
        except (OSError, ValueError):
            continue
        domains.append(RaplDomain(name, entry / "energy_uj", limit))
    return domains


def _read(domains: list[RaplDomain]) -> list[int]:
    return [int(domain.energy_file.read_text()) for domain in domains]


def measure_energy_mj(run: Callable[[], object], min_time: float = 0.5, root: Path = POWERCAP) -> float | None:
    """Energy per call of `run` in millijoules, from the package counters over at least `min_time`
    seconds of calls; None where the host has no readable RAPL counter."""
    domains = rapl_domains(root)
    if not domains:
        return None
    run()  # warm-up
    before, calls, started = _read(domains), 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - started < min_time:
        run()
        calls += 1
    after = _read(domains)
    total_uj = sum((b - a) % d.max_range_uj for a, b, d in zip(before, after, domains, strict=True))
    return total_uj / calls / 1000.0

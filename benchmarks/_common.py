"""Shared helpers for benchmark scripts: results are JSON files in benchmarks/results/."""

from __future__ import annotations

import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "cpu": cpu,
            "logical_cpus": os.cpu_count(),
            "date": datetime.now(UTC).isoformat(timespec="seconds")}


def write_result(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "environment": environment(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def median(values: list[float]) -> float:
    return statistics.median(values)

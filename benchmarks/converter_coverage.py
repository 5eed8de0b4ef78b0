"""Converter coverage over torchvision's whole classification zoo (issue 31's target: at least 76 of
the 80 classifiers convert and pass the zoo checks).

Runs tests/supernets/test_converter_zoo.py with SUBNETSEARCH_FULL_ZOO=1 (every model, the largest
variants too: full mode == original, materialized random modes == the supernet, analytic MACs ==
counted, ONNX == materialized) and reads each model's outcome from its JUnit report; then builds
each model's supernet at the same input size to record what the converter made of it (knobs by
kind, the share of the MACs they change, what stayed static). Writes
benchmarks/results/converter_coverage.json.

    .venv/bin/python benchmarks/converter_coverage.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the zoo suite's input sizes (tests.supernets.test_converter_zoo)


def zoo_outcomes() -> tuple[dict[str, dict], float]:
    """Each model's outcome in the zoo suite, every variant included."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "zoo.xml"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-W", "ignore", "--full",
                        "tests/supernets/test_converter_zoo.py", "-k", "every_torchvision_classifier",
                        f"--junitxml={report}"], cwd=ROOT, env={**os.environ, "SUBNETSEARCH_FULL_ZOO": "1"},
                       check=False, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        outcomes = {}
        for case in ET.parse(report).getroot().iter("testcase"):
            name = case.get("name", "").split("[", 1)[1].rstrip("]")
            failure = case.find("failure")
            skipped = case.find("skipped")
            outcome = "failed" if failure is not None or case.find("error") is not None else \
                "skipped" if skipped is not None else "passed"
            detail = (failure.get("message", "") if failure is not None else
                      skipped.get("message", "") if skipped is not None else "")
            outcomes[name] = {"zoo_checks": outcome, **({"detail": detail[:300]} if detail else {}),
                              "seconds": round(float(case.get("time", 0.0)), 1)}
    return outcomes, seconds


def conversion(name: str, size: int) -> dict:
    from subnetsearch.supernets import build_supernet

    arch = {"family": "wenet-torchvision", "model": name, "num_classes": 10, "input_size": size,
            "width_ratios": [1.0, 0.75, 0.5, 0.25]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            supernet = build_supernet(arch)
        except Exception as error:  # refused: its reason is the result
            return {"converted": False, "reason": str(error)[:300]}
    report = supernet.conversion
    kinds = Counter(report.knobs[layer].split(",")[0] for layer in report.switchable)
    full, smallest = supernet.cost(supernet.full_mode()).macs, supernet.cost(supernet.smallest_mode()).macs
    return {"converted": True, "knobs": dict(kinds), "switchable_macs_share": round(report.switchable_macs_share, 4),
            "smallest_over_full_macs": round(smallest / full, 4), "static": dict(Counter(
                reason.split(":")[0] for reason in report.static.values())), "summary": report.summary()}


def main() -> None:
    import torchvision

    from tests.supernets.test_converter_zoo import INPUT_SIZE

    models = torchvision.models.list_models(module=torchvision.models)
    outcomes, seconds = zoo_outcomes()
    rows = {}
    for name in models:
        size = INPUT_SIZE.get(name, 32)
        rows[name] = {"input_size": size, **outcomes.get(name, {"zoo_checks": "not run"}), **conversion(name, size)}
        print(name, rows[name]["zoo_checks"], rows[name].get("summary", rows[name].get("reason")), flush=True)
    passed = [name for name, row in rows.items() if row["converted"] and row["zoo_checks"] == "passed"]
    by_kind = Counter("both" if {"groups", "width"} <= set(row.get("knobs", {})) else
                      next(iter(row.get("knobs", {"none": 0}))) for row in rows.values() if row["converted"])
    write_result("converter_coverage", {
        "models": len(models),
        "converted_and_passing": len(passed),
        "target": 76,
        "target_met": len(passed) >= 76,
        "refused": {name: row.get("reason") for name, row in rows.items() if not row["converted"]},
        "failing": {name: row.get("detail") for name, row in rows.items() if row["zoo_checks"] == "failed"},
        "knob_kinds": dict(by_kind),
        "zoo_seconds": round(seconds, 1),
        "per_model": rows,
    })


if __name__ == "__main__":
    main()

"""Issue 32: the README's first command, timed as a new user meets it, and the front it shows.

Clones this repository (its committed HEAD) into a fresh folder, then runs what
`bash scripts/quickstart.sh` runs, timing its two parts apart: the set-up (`scripts/setup.sh`: the
Debian data package, a `.venv` with the package and its dependencies; on this machine pip's cache is
warm, which a really fresh machine's is not) and the main job (`.venv/bin/subnetsearch run`, on the
shipped default supernet, the clone's own `subnetsearch.db`). Then reads the clone's store: the
stored front of `this-host` (what the main job printed), each mode's kind, speedup over the full
network with its interval and accuracy with its interval, and checks the issue's targets:

- the main job at most 4 minutes, the whole command at most 9;
- at least 5 modes on the front, spanning at least 3x in latency (the fastest's speedup);
- every pair of neighbours separated beyond noise: latency intervals disjoint, or accuracies apart
  beyond their paired difference's 95 % bound (the store's noise-aware rule);
- accuracy falling monotonically with latency along the front.

Run: .venv/bin/python benchmarks/quickstart.py [--keep DIR] [--dse-iterations N] (about 10 minutes,
16 with --dse-iterations 2; nothing else may run meanwhile).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

from _common import write_result

from subnetsearch.spaces import Mode
from subnetsearch.storage import Store, accuracy_interval, paired_accuracy_difference
from subnetsearch.storage._uncertain import Z
from subnetsearch.supernets import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
TARGETS = {"main_job_s": 240, "first_command_s": 540, "front_modes": 5, "latency_span": 3.0}


def timed(command: list[str], cwd: Path, log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {log}")
    return seconds


def front_rows(clone: Path) -> tuple[list[dict], dict]:
    store = Store(f"sqlite:///{clone / 'subnetsearch.db'}")
    [supernet] = store.list_supernets()
    network = load_checkpoint(Path(supernet.checkpoint_path)).build()
    front = sorted(store.get_front("this-host", "accuracy,latency", supernet.content_hash), key=lambda e: e.latency_ms)
    rows = []
    for e in front:
        paired = e.latency["paired"]
        full = paired["graph"] == paired["reference"]
        low, high = accuracy_interval(e.accuracy, e.accuracy_samples)
        mode = Mode.from_json(e.mode_json)
        speedup = [1.0, 1.0] if full else [round(1 / paired["high"], 3), round(1 / paired["low"], 3)]
        rows.append({"mode_id": e.mode_id, "kind": network.kind_of(mode), "mode": network.describe(mode),
                     "latency_ms": round(e.latency_ms, 4),
                     "latency_interval_ms": [round(v, 4) for v in e.latency["interval_ms"]],
                     "speedup": 1.0 if full else round(1 / paired["ratio"], 3), "speedup_interval": speedup,
                     "windows": paired["windows"], "accuracy": e.accuracy,
                     "accuracy_interval": [round(low, 4), round(high, 4)], "accuracy_samples": e.accuracy_samples,
                     "macs": e.macs, "_correct": store.get_correctness(e)})
    evaluations = store.list_evaluations("this-host")
    counts = {"full_fidelity": sum(1 for e in evaluations if e.settings.get("fidelity", "full") == "full"),
              "first_looks": sum(1 for e in evaluations if e.settings.get("fidelity") == "low")}
    store.dispose()
    return rows, counts


def separated(a: dict, b: dict) -> dict:
    """Whether two neighbours (a faster than b) differ beyond noise, and how."""
    import numpy as np

    latency = a["latency_interval_ms"][1] < b["latency_interval_ms"][0]
    accuracy = False
    if a["_correct"] is not None and b["_correct"] is not None and a["accuracy_samples"] == b["accuracy_samples"]:
        n = a["accuracy_samples"]
        bits = [np.unpackbits(np.frombuffer(r["_correct"], dtype=np.uint8), count=n).astype(bool) for r in (a, b)]
        difference, error = paired_accuracy_difference(bits[1], bits[0])
        accuracy = difference > Z * error
    return {"latency": latency, "accuracy": accuracy, "either": latency or accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="clone into this folder (kept) instead of a temporary one")
    parser.add_argument("--dse-iterations", type=int, default=0,
                        help="the main job's greedy DSE iterations (its option; 0, the default, skips the DSE); "
                             "results go to quickstart_dse<N>.json for N > 0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        clone = args.keep or Path(scratch) / "subnetsearch"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True,
                                check=True).stdout.strip()
        setup_s = timed(["bash", "scripts/setup.sh"], clone, clone.parent / "setup.log")
        job_s = timed([".venv/bin/subnetsearch", "run", "--dse-iterations", str(args.dse_iterations)], clone,
                      clone.parent / "run.log")
        rows, counts = front_rows(clone)
        output = (clone.parent / "run.log").read_text()
    pairs = [separated(a, b) for a, b in zip(rows, rows[1:], strict=False)]
    for row in rows:
        del row["_correct"]
    fastest = max((row["speedup"] for row in rows), default=1.0)
    monotone = all(a["accuracy"] <= b["accuracy"] for a, b in zip(rows, rows[1:], strict=False))
    checks = {"main_job": job_s <= TARGETS["main_job_s"], "first_command": setup_s + job_s <= TARGETS["first_command_s"],
              "front_modes": len(rows) >= TARGETS["front_modes"], "latency_span": fastest >= TARGETS["latency_span"],
              "neighbours_separated": all(p["either"] for p in pairs), "accuracy_monotone": monotone}
    print(f"set-up {setup_s:.0f} s, main job {job_s:.0f} s; front of {len(rows)} modes, fastest {fastest:.2f}x; {checks}")
    write_result("quickstart" if not args.dse_iterations else f"quickstart_dse{args.dse_iterations}", {
        "commit": commit, "dse_iterations": args.dse_iterations, "setup_s": round(setup_s, 1), "main_job_s": round(job_s, 1),
        "first_command_s": round(setup_s + job_s, 1), "pip_cache": "warm (this machine)", "targets": TARGETS,
        "checks": checks, "front": rows, "neighbours": pairs, "evaluations": counts,
        "main_job_output_tail": output.splitlines()[-60:]})


if __name__ == "__main__":
    main()

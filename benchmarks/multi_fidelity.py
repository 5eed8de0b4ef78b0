"""Issue 32: does multi-fidelity evaluation find the main job's front at a fraction of the cost?

The main job's search (`search.MainJob` with its default plan: the mode table, 2 DSE iterations, 20
TPE trials, the front refined in 4 more windows) on the shipped default supernet and the default
device (ONNX Runtime, batch 1, 2 threads), run twice per seed in fresh stores: every candidate in
full (`full`), and with a first look at each candidate and the full evaluation only where the look
could join the front (`multi`, `search.Fidelity()`). The two arms of a seed run one after the other,
their order alternating by seed. Per run: the wall time of the job's evaluations (the mode table,
the searches, the refinement; the device's noise profile, measured once per store, is left out),
how many full evaluations and first looks it made, and its stored front. Front quality: the
hypervolume of a run's front (accuracy, latency as the paired ratio to the full network) as a share
of the reference front's, the non-dominated set of every full-fidelity figure of every run
(reference point: accuracy 0.01 below the lowest, 1.05x the slowest ratio).

Target: the multi arm's median hypervolume share equals the full arm's (within a few hundredths)
at no more than 40 % of its median time.

Run: .venv/bin/python benchmarks/multi_fidelity.py [--seeds 5] (about 45 minutes).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _common import write_result

from subnetsearch.cli._devices import device_or_default
from subnetsearch.pareto import hypervolume, nondominated
from subnetsearch.search import EvaluationSettings, Fidelity, MainJob, MainJobPlan, SearchSession, record_device_noise
from subnetsearch.storage import Store, StoredEvaluation
from subnetsearch.supernets import DEFAULT_CHECKPOINT

OBJECTIVES = ["accuracy", "latency"]


def ratio(e: StoredEvaluation) -> float:
    paired = e.latency["paired"]
    return 1.0 if paired["graph"] == paired["reference"] else float(paired["ratio"])


def one_run(folder: Path, seed: int, fidelity: Fidelity | None) -> dict:
    url = f"sqlite:///{folder / 'store.db'}"
    store = Store(url)
    device = device_or_default(store, "this-host")
    torch.set_num_threads(device.protocol.threads)
    session = SearchSession(store, url, device, DEFAULT_CHECKPOINT, EvaluationSettings(), fidelity=fidelity)
    record_device_noise(store, device, session.supernet)  # once per store, not timed
    job = MainJob(session, MainJobPlan(seed=seed))
    started = time.perf_counter()
    job.mode_rows()
    job.search()
    job.refine()
    seconds = time.perf_counter() - started
    front = job.front()
    full = [e for e in store.list_evaluations(device.name) if e.settings.get("fidelity", "full") == "full"
            and e.settings.get("calibration_batches")]  # the table's trained-BN column is no candidate
    looks = session.screening.misses if session.screening is not None else 0
    run = {"seed": seed, "arm": "multi" if fidelity else "full", "seconds": round(seconds, 1),
           "full_evaluations": session.evaluator.misses, "first_looks": looks,
           "promoted": sum(s.promoted for s in session.screens), "dismissed": sum(s.dismissed for s in session.screens),
           "front": [[e.accuracy, ratio(e)] for e in front],
           "_full_points": [[e.accuracy, ratio(e)] for e in full]}
    store.dispose()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(args.seeds):
            arms = [None, Fidelity()] if seed % 2 == 0 else [Fidelity(), None]
            for fidelity in arms:
                folder = Path(scratch) / f"seed{seed}-{'multi' if fidelity else 'full'}"
                folder.mkdir()
                runs.append(one_run(folder, seed, fidelity))
                last = runs[-1]
                print(f"seed {seed} {last['arm']}: {last['seconds']:.0f} s, {last['full_evaluations']} full, "
                      f"{last['first_looks']} looks, front of {len(last['front'])}", flush=True)
    union = np.asarray([p for run in runs for p in run.pop("_full_points")])
    reference_front = union[nondominated(union, OBJECTIVES)]
    reference = [float(union[:, 0].min()) - 0.01, 1.05 * float(union[:, 1].max())]
    total = hypervolume(reference_front, OBJECTIVES, reference)
    for run in runs:
        run["hypervolume_share"] = round(hypervolume(np.asarray(run["front"]), OBJECTIVES, reference) / total, 4)
    summary = {}
    for arm in ("full", "multi"):
        rows = [run for run in runs if run["arm"] == arm]
        summary[arm] = {"median_seconds": statistics.median(r["seconds"] for r in rows),
                        "seconds_range": [min(r["seconds"] for r in rows), max(r["seconds"] for r in rows)],
                        "median_hypervolume_share": statistics.median(r["hypervolume_share"] for r in rows),
                        "hypervolume_share_range": [min(r["hypervolume_share"] for r in rows),
                                                    max(r["hypervolume_share"] for r in rows)],
                        "median_full_evaluations": statistics.median(r["full_evaluations"] for r in rows),
                        "median_first_looks": statistics.median(r["first_looks"] for r in rows)}
    pairs = [next(r["seconds"] for r in runs if r["seed"] == s and r["arm"] == "multi")
             / next(r["seconds"] for r in runs if r["seed"] == s and r["arm"] == "full") for s in range(args.seeds)]
    summary["time_ratio_multi_over_full"] = {"median": round(statistics.median(pairs), 3),
                                             "range": [round(min(pairs), 3), round(max(pairs), 3)]}
    summary["target_met"] = (summary["time_ratio_multi_over_full"]["median"] <= 0.40
                             and summary["multi"]["median_hypervolume_share"]
                             >= summary["full"]["median_hypervolume_share"] - 0.02)
    print(summary)
    write_result("multi_fidelity", {"checkpoint": DEFAULT_CHECKPOINT.parent.name, "fidelity": Fidelity().to_dict(),
                                    "reference_point": reference, "summary": summary, "runs": runs})


if __name__ == "__main__":
    main()

"""Issue 7 benchmark: wall time of one greedy-DSE iteration (WeNet Algorithm 2) with its candidates
evaluated by 1 and by 2 Ray evaluation actors (one torch thread each) on this 2-core machine, against
the same iteration in one local process (1 and 2 torch threads).

The shipped Fashion-MNIST ResNet-20 supernet; iteration 1 of the DSE evaluates one candidate per
layer (20 candidates). An evaluation is BN recalibration on CALIBRATION x 128 training images plus
accuracy on EVAL_BATCHES validation batches (a few seconds each at one thread); cost = MACs, and the
device is a Ray-node device no node advertises, so no latency is measured: the benchmark times the
accuracy work the actors share out. Each run starts from an empty store (nothing cached). Iteration
time is the time between the DSE's step-0 and step-1 callbacks, so actor start-up (supernet and data
loaded once per actor) is excluded and reported separately. Runs are sequential (never two timed
things at once), their order rotates across REPEATS rounds, and medians are reported.

Parallel efficiency = T(1 actor) / (2 x T(2 actors)); target >= 0.85.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import median, write_result

from subnetsearch.devices import Device
from subnetsearch.distributed import RayBackend, connect
from subnetsearch.search import EvaluationSettings
from subnetsearch.search._session import SearchSession
from subnetsearch.storage import Store
from subnetsearch.supernets._pretrained import DEFAULT_CHECKPOINT

CALIBRATION, EVAL_BATCHES = 4, 8
SETTINGS = EvaluationSettings(calibration_batches=CALIBRATION, calibration_batch_size=128,
                              max_eval_batches=EVAL_BATCHES)
DEVICE = Device("bench-remote", "ray-node")  # no node advertises it: accuracy work only
RUNS = {"local-1thread": (None, 1), "local-2threads": (None, 2), "ray-1actor": (1, 1), "ray-2actors": (2, 1)}


def one_run(kind: str, scratch: Path) -> dict:
    workers, threads = RUNS[kind]
    url = f"sqlite:///{scratch / f'{kind}-{time.monotonic_ns()}.db'}"
    store = Store(url)
    store.add_device(DEVICE)
    torch.set_num_threads(threads)
    backend = RayBackend(workers=workers, threads=threads) if workers else None
    stamps: list[float] = []
    start = time.perf_counter()
    try:
        session = SearchSession(store, url, store.get_device(DEVICE.name), DEFAULT_CHECKPOINT, SETTINGS,
                                backend=backend)
        result, _ = session.dse(0.0, "macs", ["accuracy", "macs"], max_iterations=1,
                                on_step=lambda step: stamps.append(time.perf_counter()))
    finally:
        if backend is not None:
            backend.close()
        store.dispose()
    candidates = result.evaluations - 1
    iteration = stamps[1] - stamps[0]
    return {"run": kind, "candidates": candidates, "iteration_s": iteration,
            "per_candidate_s": iteration / candidates, "startup_and_full_network_s": stamps[0] - start,
            "chosen_layer": result.trajectory[1].changed_layer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    connect()  # the embedded local Ray instance, started once (this machine's CPUs)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-dse-") as scratch:
        kinds = list(RUNS)
        for round_ in range(args.repeats):
            for kind in kinds[round_ % len(kinds):] + kinds[:round_ % len(kinds)]:
                row = one_run(kind, Path(scratch))
                rows.append({"round": round_, **row})
                print(f"round {round_} {kind:>15}: iteration {row['iteration_s']:.1f} s "
                      f"({row['per_candidate_s']:.2f} s/candidate), start-up {row['startup_and_full_network_s']:.1f} s")
    medians = {kind: median([r["iteration_s"] for r in rows if r["run"] == kind]) for kind in RUNS}
    efficiency = medians["ray-1actor"] / (2 * medians["ray-2actors"])
    chosen = {r["chosen_layer"] for r in rows}
    summary = {
        "median_iteration_s": medians,
        "parallel_efficiency_2_actors": round(efficiency, 3),
        "target_efficiency": 0.85,
        "meets_target": efficiency >= 0.85,
        "speedup_ray_2actors_vs_local_1thread": round(medians["local-1thread"] / medians["ray-2actors"], 3),
        "speedup_ray_2actors_vs_local_2threads": round(medians["local-2threads"] / medians["ray-2actors"], 3),
        "ray_1actor_overhead_vs_local_1thread": round(medians["ray-1actor"] / medians["local-1thread"] - 1, 3),
        "same_choice_in_every_run": len(chosen) == 1,
    }
    print(summary)
    write_result("distributed_dse", {
        "setup": {"checkpoint": str(DEFAULT_CHECKPOINT.name), "calibration_batches": CALIBRATION,
                  "calibration_batch_size": 128, "max_eval_batches": EVAL_BATCHES, "cost": "macs",
                  "repeats": args.repeats, "cpus": os.cpu_count(), "runs": {k: {"actors": w, "threads": t}
                                                                            for k, (w, t) in RUNS.items()}},
        "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()

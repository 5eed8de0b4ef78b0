"""Issue 7 benchmark: what running an Optuna search as Ray Tune trials costs per trial, against the
same search run in this process without Ray.

The same search both ways: the shipped Fashion-MNIST ResNet-20 supernet, TPE (seed 0), objectives
accuracy and MACs, TRIALS trials, an empty store each time, one torch thread, one trial at a time
(the Ray instance is given 1 CPU, so Tune runs one trial slot: parallelism is not what is measured).
An evaluation is BN recalibration on 4 x 128 training images and accuracy on 8 validation batches
(a few seconds at one thread); the device is a Ray-node device no node advertises, so no latency.

Per-trial overhead = median interval between consecutive trial completions (from the study's
own timestamps) with Tune / the same without Ray - 1; the first trial of each run, which pays the
trial actor's start-up (supernet and data loaded once: Tune reuses the actor), is left out of the
intervals and reported with Tune's experiment start-up as fixed cost. Runs are sequential, in
alternating order over REPEATS rounds; medians are reported. Target: per-trial overhead <= 5 %.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import ray
import torch
from _common import median, write_result
from distributed_dse import SETTINGS  # the same evaluation settings as the DSE fan-out benchmark

from subnetsearch.devices import Device
from subnetsearch.distributed import RayBackend
from subnetsearch.distributed._cluster import OBJECT_STORE_BYTES
from subnetsearch.search import Constraints
from subnetsearch.search._session import SearchSession
from subnetsearch.storage import Store
from subnetsearch.supernets._pretrained import DEFAULT_CHECKPOINT

DEVICE = Device("bench-remote", "ray-node")
OBJECTIVES = ["accuracy", "macs"]


def one_run(kind: str, trials: int, scratch: Path) -> dict:
    url = f"sqlite:///{scratch / f'{kind}-{time.monotonic_ns()}.db'}"
    store = Store(url)
    store.add_device(DEVICE)
    torch.set_num_threads(1)
    backend = RayBackend(threads=1) if kind == "tune" else None
    start = time.perf_counter()
    try:
        session = SearchSession(store, url, store.get_device(DEVICE.name), DEFAULT_CHECKPOINT, SETTINGS,
                                backend=backend)
        ready = time.perf_counter()
        _, study = session.optuna("tpe", trials, OBJECTIVES, Constraints(), seed=0)
        total = time.perf_counter() - ready
    finally:
        if backend is not None:
            backend.close()
        store.dispose()
    done = sorted((t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE),
                  key=lambda t: t.datetime_complete)
    completions = [t.datetime_complete.timestamp() for t in done]
    intervals = [b - a for a, b in itertools.pairwise(completions)]
    return {"run": kind, "trials": len(done), "search_s": total, "session_setup_s": ready - start,
            "median_interval_s": statistics.median(intervals), "mean_interval_s": statistics.fmean(intervals),
            "first_trial_s": completions[0] - done[0].datetime_start.timestamp(),
            "fixed_s": total - sum(intervals),
            "modes": [t.user_attrs["mode_id"] for t in done]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ray.init(num_cpus=1, object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)  # one trial slot; the backend attaches to this instance
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-tune-") as scratch:
        for round_ in range(args.repeats):
            for kind in (("local", "tune") if round_ % 2 == 0 else ("tune", "local")):
                row = one_run(kind, args.trials, Path(scratch))
                rows.append({"round": round_, **row})
                print(f"round {round_} {kind:>5}: {row['search_s']:.1f} s, median interval "
                      f"{row['median_interval_s']:.2f} s, fixed {row['fixed_s']:.1f} s")
    ray.shutdown()
    interval = {kind: median([r["median_interval_s"] for r in rows if r["run"] == kind]) for kind in ("local", "tune")}
    fixed = {kind: median([r["fixed_s"] for r in rows if r["run"] == kind]) for kind in ("local", "tune")}
    total = {kind: median([r["search_s"] for r in rows if r["run"] == kind]) for kind in ("local", "tune")}
    overhead = interval["tune"] / interval["local"] - 1
    paired = [next(r for r in rows if r["round"] == k and r["run"] == "tune")["median_interval_s"]
              / next(r for r in rows if r["round"] == k and r["run"] == "local")["median_interval_s"] - 1
              for k in range(args.repeats)]  # the same round: closest in time, so least apart in machine load
    summary = {
        "median_trial_interval_s": interval,
        "per_trial_overhead_fraction": round(overhead, 4),
        "per_trial_overhead_s": round(interval["tune"] - interval["local"], 3),
        "paired_overhead_fraction_per_round": [round(value, 4) for value in paired],
        "median_paired_overhead_fraction": round(statistics.median(paired), 4),
        "target_fraction": 0.05,
        "meets_target": overhead <= 0.05 and statistics.median(paired) <= 0.05,
        "fixed_cost_s": fixed,
        "median_search_s": total,
        "whole_search_overhead_fraction": round(total["tune"] / total["local"] - 1, 4),
        "same_modes_every_run": len({tuple(r["modes"]) for r in rows}) == 1,
    }
    print(summary)
    write_result("tune_overhead", {
        "setup": {"checkpoint": DEFAULT_CHECKPOINT.name, "sampler": "tpe", "seed": 0, "objectives": OBJECTIVES,
                  "trials": args.trials, "repeats": args.repeats, "ray_cpus": 1, "torch_threads": 1,
                  "calibration_batches": SETTINGS.calibration_batches, "max_eval_batches": SETTINGS.max_eval_batches,
                  "cpus": os.cpu_count()},
        "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()

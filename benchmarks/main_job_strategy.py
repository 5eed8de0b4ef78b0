"""Issue 19: should the main job (`subnetsearch run`) search with the predictor strategy?

`search_strategies.py` compares strategies with latency predicted from a lookup table, which makes
latency an exact cost. The main job measures latency (ONNX Runtime, batch 1, 2 threads: the default
device), with the evaluator's default settings (BN calibrated on 20 x 128 training images, accuracy
on all 5,000 validation images), so a predictor there must learn latency as well as accuracy. This
benchmark runs the main job's search both ways, at the main job's own budget, in one store (a mode
is evaluated once, so every strategy sees the same measured values):

- `today`: what `run` did before this benchmark: the greedy DSE (Algorithm 2, measured latency,
  delta 0.90, 2 iterations; deterministic, so shared by every seed) and a 20-trial TPE search;
- `predictor`: the predictor strategy on (accuracy, latency), MACs as a hint feature, with as many
  distinct evaluations as `today` made for the same seed.

Both also hold the main job's mode table (full, uniform modes, smallest, 2 random). Reported per
seed and as medians: the fraction of the reference hypervolume (the union of every run's front;
reference point accuracy 0.80 and 1.1x the full network's latency), the size and latency span of
each run's front, the wall time, and the predictor's held-out Kendall tau per round.

Resumable (store under ~/.cache, not in the repository); `--report-only` recomputes the JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
import torch
from _common import write_result

from subnetsearch.cli._devices import device_or_default
from subnetsearch.pareto import hypervolume, nondominated
from subnetsearch.search import Constraints, EvaluationSettings
from subnetsearch.search._session import SearchSession
from subnetsearch.spaces import Mode
from subnetsearch.storage import Store, distinct_trials
from subnetsearch.supernets._pretrained import DEFAULT_CHECKPOINT

HOME = Path(os.environ.get("SUBNETSEARCH_BENCH_HOME", Path.home() / ".cache" / "subnetsearch-bench-main"))
OBJECTIVES = ["accuracy", "latency"]
DELTA, DSE_ITERATIONS, TPE_TRIALS, RANDOM_MODES = 0.90, 2, 20, 2
DSE_NAME = "bench/main/dse"


def open_session() -> SearchSession:
    HOME.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{HOME / 'main.db'}"
    store = Store(url)
    device = device_or_default(store, "this-host")  # as `run` records it: ONNX Runtime, batch 1, 2 threads
    torch.set_num_threads(device.protocol.threads)
    return SearchSession(store, url, device, DEFAULT_CHECKPOINT, EvaluationSettings())


def table_modes(session: SearchSession) -> list[Mode]:
    """The main job's mode table: full, the family's named modes, smallest, random mixes (seed 0)."""
    supernet = session.supernet
    generator = torch.Generator().manual_seed(0)
    return list(supernet.named_modes().values()) + [supernet.random_mode(generator) for _ in range(RANDOM_MODES)]


def modes_of(study: optuna.Study) -> list[Mode]:
    return [Mode.from_json(t.user_attrs["mode_json"]) for t in distinct_trials(study)]


def run_all(session: SearchSession, seeds: int) -> dict:
    wall: dict[str, float] = {}
    started = time.perf_counter()
    for mode in table_modes(session):
        session.evaluate(mode)
    wall["mode_table"] = time.perf_counter() - started
    started = time.perf_counter()
    _, dse = session.dse(DELTA, "latency", OBJECTIVES, DSE_ITERATIONS, name=DSE_NAME)
    wall["dse"] = time.perf_counter() - started
    print(f"mode table {wall['mode_table']:.0f} s, DSE {wall['dse']:.0f} s: {len(modes_of(dse))} modes", flush=True)
    for seed in range(seeds):
        started = time.perf_counter()
        _, tpe = session.optuna("tpe", TPE_TRIALS, OBJECTIVES, Constraints(), seed, name=f"bench/main/tpe/seed{seed}")
        wall[f"tpe/seed{seed}"] = time.perf_counter() - started
        budget = len({m.id for m in modes_of(dse) + modes_of(tpe)})
        started = time.perf_counter()
        session.predictor(budget, OBJECTIVES, seed=seed, name=f"bench/main/predictor/seed{seed}")
        wall[f"predictor/seed{seed}"] = time.perf_counter() - started
        print(f"seed {seed}: TPE {wall[f'tpe/seed{seed}']:.0f} s, predictor ({budget} modes) "
              f"{wall[f'predictor/seed{seed}']:.0f} s", flush=True)
    return wall


def report(session: SearchSession, seeds: int, wall: dict | None) -> None:
    url = session.storage_url

    def load(name: str) -> list[Mode]:
        return modes_of(optuna.load_study(study_name=name, storage=url))

    def point(mode: Mode) -> list[float]:
        result = session.evaluate(mode)  # stored: no evaluation
        return [result.accuracy, result.latency_ms]

    table, dse = table_modes(session), load(DSE_NAME)
    runs = {}
    for seed in range(seeds):
        runs[("today", seed)] = table + dse + load(f"bench/main/tpe/seed{seed}")
        runs[("predictor", seed)] = table + load(f"bench/main/predictor/seed{seed}")
    runs = {key: list({m.id: m for m in modes}.values()) for key, modes in runs.items()}
    points = {key: np.asarray([point(m) for m in modes]) for key, modes in runs.items()}
    full = point(session.supernet.full_mode())
    reference = [0.80, 1.1 * full[1]]
    union = np.vstack(list(points.values()))
    reference_front = union[nondominated(union, OBJECTIVES)]
    reference_hv = hypervolume(reference_front, OBJECTIVES, reference)
    per_run: dict[str, list[dict]] = {}
    for (strategy, seed), values in points.items():
        front = values[nondominated(values, OBJECTIVES)]
        per_run.setdefault(strategy, []).append({
            "seed": seed, "evaluations": len(values),
            "hypervolume_fraction": round(hypervolume(values, OBJECTIVES, reference) / reference_hv, 4),
            "front_size": len(front), "front_latency_span": round(float(front[:, 1].max() / front[:, 1].min()), 3),
            "front_fastest_speedup_over_full": round(full[1] / float(front[:, 1].min()), 3),
            "front_accuracy_range": [round(float(front[:, 0].min()), 4), round(float(front[:, 0].max()), 4)]})
    summary = {strategy: {"median_hypervolume_fraction": statistics.median(r["hypervolume_fraction"] for r in rows),
                          "median_front_latency_span": statistics.median(r["front_latency_span"] for r in rows),
                          "median_evaluations": statistics.median(r["evaluations"] for r in rows),
                          "runs": rows} for strategy, rows in per_run.items()}
    rounds = {}
    for seed in range(seeds):
        record = session.store.get_search(f"bench/main/predictor/seed{seed}")
        for entry in (record.summary.get("rounds", []) if record else []):
            row = rounds.setdefault(int(entry["round"]), {"trained_on": [], "accuracy": [], "latency": []})
            row["trained_on"].append(entry.get("trained_on", 0))
            for name in OBJECTIVES:
                if (tau := entry.get("kendall_tau", {}).get(name)) is not None:
                    row[name].append(tau)
    tau = {str(r): {"trained_on": int(statistics.median(v["trained_on"])),
                    **{f"median_kendall_tau_{name}": round(statistics.median(v[name]), 3) if v[name] else None
                       for name in OBJECTIVES}} for r, v in sorted(rounds.items())}
    winner = max(summary, key=lambda s: summary[s]["median_hypervolume_fraction"])
    write_result("main_job_strategy", {
        "supernet": DEFAULT_CHECKPOINT.name, "device": asdict(session.device.protocol),
        "evaluation_settings": asdict(session.settings), "seeds": seeds,
        "today": f"mode table + DSE (delta {DELTA}, {DSE_ITERATIONS} iterations, measured latency) + TPE "
                 f"{TPE_TRIALS} trials", "predictor": "mode table + predictor strategy with as many distinct modes "
                 "as today's DSE + TPE of the same seed (MACs as a hint feature, latency learned)",
        "reference_point": dict(zip(OBJECTIVES, reference, strict=True)), "full_network": dict(zip(OBJECTIVES, full,
                                                                                                 strict=True)),
        "reference_front_size": len(reference_front), "strategies": summary, "predictor_rounds": tau,
        "wall_s": {k: round(v, 1) for k, v in (wall or {}).items()}, "winner": winner})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    session = open_session()
    wall = None if args.report_only else run_all(session, args.seeds)
    report(session, args.seeds, wall)


if __name__ == "__main__":
    main()

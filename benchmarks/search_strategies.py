"""Issues 4 and 19: hypervolume against the number of real evaluations, per search strategy.

Shipped Fashion-MNIST supernet; strategies: greedy DSE (Algorithm 2, cost = latency and cost = MACs),
random, TPE (Optuna 5 default), NSGA-II, TPE seeded with the DSE's first evaluations (added as
completed trials), and the predictor strategy (`SearchSession.predictor`: 20 initial evaluations,
rounds of 10; its per-round held-out Kendall tau and planning time are reported). Optuna strategies
and the predictor search accuracy, latency and MACs jointly; hypervolume is reported for (accuracy,
latency) and (accuracy, MACs) with a fixed reference point (accuracy 0.80, 1.1x the full network's
cost); the reference front is the union of every run's front at the largest
budget. An "evaluation" is a distinct mode a run asked for (a repeat is free: the evaluator's cache).

Cost of one evaluation on these 2 cores is the limit: accuracy is BN-recalibrated on 2 x 128
training images and measured on 512 validation images (not the product's default 20 x 128 / 5000),
and latency is the lookup-table prediction for this host's eager runtime (1 thread), which
`latency_predictor.json` found within +-10 % of end-to-end measurement for every random mode. Both
are deterministic per mode through the cache, so strategies are compared on the same objective.

Resumable: evaluations, searches and studies live in a SQLite store under ~/.cache (not in the
repository); rerunning continues unfinished runs. `--workers N --worker I` splits the runs across
processes that share the store.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import optuna
import torch
from _common import RESULTS, write_result

from subnetsearch.devices import Device, LatencyProtocol
from subnetsearch.devices._lookup import LatencyTable, build_table
from subnetsearch.pareto import hypervolume, nondominated
from subnetsearch.search import Constraints, EvaluationSettings, finish_orphans, make_sampler, open_study, record_trial
from subnetsearch.search._optuna import _tell
from subnetsearch.search._session import SearchSession
from subnetsearch.spaces import mode_from_params, to_optuna
from subnetsearch.storage import StorageError, Store, distinct_trials
from subnetsearch.supernets._pretrained import DEFAULT_CHECKPOINT

HOME = Path(os.environ.get("SUBNETSEARCH_BENCH_HOME", Path.home() / ".cache" / "subnetsearch-bench"))
SETTINGS = EvaluationSettings(calibration_batches=2, calibration_batch_size=128, max_eval_batches=4)
OBJECTIVES = ["accuracy", "latency", "macs"]
SEEDED_FROM_DSE = 40
PREDICTOR_INIT, PREDICTOR_BATCH = 20, 10
PAIRS = {"latency": ("accuracy", "latency"), "macs": ("accuracy", "macs")}


def latency_table(supernet) -> LatencyTable:
    path = HOME / "table-eager-1thread.json"
    if path.exists():
        return LatencyTable.from_dict(json.loads(path.read_text()))
    protocol = LatencyProtocol(runtime="eager", threads=1, warmup=5, repeats=3, min_run_time=0.1)
    generator = torch.Generator().manual_seed(0)
    table = build_table(supernet, None, protocol, [supernet.random_mode(generator) for _ in range(5)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table.to_dict()))
    return table


def runs(seeds: int) -> list[tuple[str, int]]:
    return [("dse-latency", 0), ("dse-macs", 0)] + [(s, seed) for seed in range(seeds)
                                                    for s in ("random", "tpe", "nsga2", "dse+tpe", "predictor")]


def optuna_run(session: SearchSession, strategy: str, seed: int, budget: int, timing: dict) -> optuna.Study:
    """Ask/tell with each part timed: sampler + Optuna storage (ask, tell), our store and the evaluator."""
    sampler = "tpe" if strategy == "dse+tpe" else strategy
    name = f"bench/{strategy}/seed{seed}"
    study = open_study(session.storage_url, name, OBJECTIVES, make_sampler(sampler, seed), {"benchmark": name})
    space = session.supernet.space
    if strategy == "dse+tpe" and not study.trials:
        dse = optuna.load_study(study_name="bench/dse-latency/seed0", storage=session.storage_url)
        for trial in dse.trials[:SEEDED_FROM_DSE]:
            mode = mode_from_params(space, trial.params)
            record_trial(study, space, mode, session.evaluator.evaluate(mode), OBJECTIVES, Constraints(),
                         {"seeded_from": "dse-latency"})
    finish_orphans(study, space, session.evaluator.evaluate, OBJECTIVES)
    distributions = to_optuna(space)
    while len({t.user_attrs.get("mode_id") for t in study.trials}) < budget:
        t0 = time.perf_counter()
        trial = study.ask(distributions)
        t1 = time.perf_counter()
        mode = mode_from_params(space, trial.params)
        misses = session.evaluator.misses
        evaluation = session.evaluator.evaluate(mode)
        t2 = time.perf_counter()
        _tell(study, trial, mode, evaluation, OBJECTIVES, Constraints())
        t3 = time.perf_counter()
        timing["ask_s"].append(t1 - t0)
        timing["tell_s"].append(t3 - t2)
        (timing["fresh_evaluation_s"] if session.evaluator.misses > misses else timing["cached_evaluation_s"]).append(
            t2 - t1)
    return study


def sequence(study: optuna.Study) -> list[dict]:
    """The run's distinct modes in the order it first evaluated them, with their objective values."""
    return [{**dict(zip(study.metric_names, trial.values, strict=True)), "mode_json": trial.user_attrs["mode_json"]}
            for trial in distinct_trials(study)]


def run_all(args: argparse.Namespace) -> None:
    HOME.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{HOME / 'search.db'}"
    store = Store(url)
    device = Device("bench-eager-1t", protocol=LatencyProtocol(runtime="eager", threads=1))
    if device.name not in {d.name for d in store.list_devices()}:
        try:
            store.add_device(device)
        except StorageError:  # a worker started beside this one added it first
            pass
    torch.set_num_threads(1)
    probe = SearchSession(store, url, device, DEFAULT_CHECKPOINT, SETTINGS)
    table = latency_table(probe.supernet)
    session = SearchSession(store, url, device, DEFAULT_CHECKPOINT, SETTINGS, latency_table=table)
    timing = {"ask_s": [], "tell_s": [], "fresh_evaluation_s": [], "cached_evaluation_s": [], "store_put_s": []}
    put = store.put_evaluation

    def timed_put(*args, **kwargs):  # our store's share of a fresh evaluation (insert + front maintenance)
        t0 = time.perf_counter()
        try:
            return put(*args, **kwargs)
        finally:
            timing["store_put_s"].append(time.perf_counter() - t0)

    store.put_evaluation = timed_put
    mine = [run for i, run in enumerate(runs(args.seeds)) if i % args.workers == args.worker]
    if args.worker != 0:  # the seeded runs need the DSE run (worker 0 does it first)
        mine.sort(key=lambda run: run[0] == "dse+tpe")
    for strategy, seed in mine:
        started = time.perf_counter()
        if strategy.startswith("dse-"):
            cost = strategy.split("-", 1)[1]
            session.dse(args.delta, cost, OBJECTIVES, args.dse_iterations, name=f"bench/{strategy}/seed0")
        elif strategy == "predictor":
            session.predictor(args.budget, OBJECTIVES, seed=seed, init_size=PREDICTOR_INIT, batch=PREDICTOR_BATCH,
                              name=f"bench/{strategy}/seed{seed}")
        else:
            if strategy == "dse+tpe":
                while not _finished(store, "bench/dse-latency/seed0"):
                    time.sleep(10)
            optuna_run(session, strategy, seed, args.budget, timing)
        print(f"{strategy} seed {seed}: {time.perf_counter() - started:.0f} s, {session.evaluator.misses} fresh so far",
              flush=True)
    (HOME / f"timing-worker{args.worker}.json").write_text(json.dumps(timing))


def _finished(store: Store, name: str) -> bool:
    record = store.get_search(name)
    return record is not None and record.status == "finished"


def remeasure_front(members: list[dict]) -> dict:
    """Search on predicted latency, re-measure only the front: measure the reference front's modes end
    to end (same runtime and threads as the table, one interleaved run) and say how much of the
    predicted front survives."""
    from subnetsearch.devices import measure_latencies
    from subnetsearch.spaces import Mode
    from subnetsearch.supernets._pretrained import default_checkpoint

    supernet = default_checkpoint().build()
    unique = {Mode.from_json(p["mode_json"]).id: p for p in members}
    models = {mode_id: supernet.materialize(Mode.from_json(p["mode_json"])) for mode_id, p in unique.items()}
    protocol = LatencyProtocol(runtime="eager", threads=1, warmup=5, repeats=3, min_run_time=0.1)
    measured = measure_latencies(models, supernet.input_shape, protocol)
    errors = [(p["latency"] - measured[i].ms) / measured[i].ms for i, p in unique.items()]
    points = [[p["accuracy"], measured[i].ms] for i, p in unique.items()]
    still = nondominated(points, ["accuracy", "latency"])
    return {"modes": len(unique), "prediction_error_median_abs": round(statistics.median(abs(e) for e in errors), 4),
            "within_10_percent": round(sum(abs(e) <= 0.10 for e in errors) / len(errors), 3),
            "still_pareto_optimal_when_measured": int(still.sum())}


def evaluations_to_reach(curve: list[float], target: float) -> int | None:
    return next((i + 1 for i, value in enumerate(curve) if value >= target), None)


def rescore_latency(studies: dict) -> None:
    """Every evaluated mode's latency predicted again from the one saved table, so that every run is
    scored on the same objective even where runs evaluated a mode with a table of their own (workers
    started side by side before the table was saved each built one; those tables differ by ~2 %)."""
    from subnetsearch.devices._lookup import LatencyPredictor
    from subnetsearch.spaces import Mode
    from subnetsearch.supernets._pretrained import default_checkpoint

    supernet = default_checkpoint().build()
    predictor = LatencyPredictor(supernet, latency_table(supernet))
    memo: dict[str, float] = {}
    for points in studies.values():
        for point in points:
            if point["mode_json"] not in memo:
                memo[point["mode_json"]] = predictor(Mode.from_json(point["mode_json"])).ms
            point["latency"] = memo[point["mode_json"]]


def report(args: argparse.Namespace) -> None:
    url = f"sqlite:///{HOME / 'search.db'}"
    studies = {}
    for strategy, seed in runs(args.seeds):
        try:
            studies[(strategy, seed)] = sequence(optuna.load_study(study_name=f"bench/{strategy}/seed{seed}",
                                                                   storage=url))
        except KeyError:
            continue
    rescore_latency(studies)
    full = studies[("dse-latency", 0)][0]  # Algorithm 2 starts from the full network
    reference_point = {"accuracy": 0.80, "latency": 1.1 * full["latency"], "macs": 1.1 * full["macs"]}
    results, curves_for_plot = {}, {}
    for cost, pair in PAIRS.items():
        ref = [reference_point[o] for o in pair]
        union = [[p[o] for o in pair] for points in studies.values() for p in points[:args.budget]]
        front = np.asarray(union)[nondominated(union, pair)]
        reference_hv = hypervolume(front, pair, ref)
        per_strategy: dict[str, dict] = {}
        for (strategy, seed), points in studies.items():
            if strategy.startswith("dse-") and strategy != f"dse-{cost}":
                continue
            curve = [hypervolume([[p[o] for o in pair] for p in points[:n]], pair, ref) / reference_hv
                     for n in range(1, min(len(points), args.budget) + 1)]
            entry = per_strategy.setdefault("dse" if strategy.startswith("dse-") else strategy, {"runs": []})
            entry["runs"].append({"seed": seed, "evaluations": len(curve), "final_fraction": round(curve[-1], 4),
                                  "to_0.95": evaluations_to_reach(curve, 0.95),
                                  "to_0.98": evaluations_to_reach(curve, 0.98),
                                  **{f"at_{n}": round(curve[min(n - 1, len(curve) - 1)], 4) for n in (50, 100, 150)}})
            label = "dse" if strategy.startswith("dse-") else strategy
            curves_for_plot.setdefault(cost, {}).setdefault(label, []).append(curve)
        for entry in per_strategy.values():
            reached = [r["to_0.98"] for r in entry["runs"]]
            entry["median_evaluations_to_0.95"] = _median_or_none([r["to_0.95"] for r in entry["runs"]])
            entry["median_evaluations_to_0.98"] = _median_or_none(reached)
            for n in (50, 100, 150):
                entry[f"median_fraction_at_{n}"] = round(statistics.median(r[f"at_{n}"] for r in entry["runs"]), 4)
            entry["seeds_reaching_0.98_within_150"] = sum(1 for r in reached if r is not None and r <= 150)
        if cost == "latency":
            members = [p for points in studies.values() for p in points[:args.budget]]
            members = [members[i] for i in np.flatnonzero(nondominated([[p[o] for o in pair] for p in members], pair))]
            remeasured = remeasure_front(members)
        results[f"accuracy_vs_{cost}"] = {"reference_point": dict(zip(pair, ref, strict=True)),
                                         "reference_hypervolume": reference_hv, "reference_front_size": len(front),
                                         "strategies": per_strategy}
    timing = {}
    for path in HOME.glob("timing-worker*.json"):
        for key, values in json.loads(path.read_text()).items():
            timing.setdefault(key, []).extend(values)
    overhead = {key: {"median_ms": round(1e3 * statistics.median(v), 1), "count": len(v)}
                for key, v in timing.items() if v}
    plot = _plot(curves_for_plot, args.budget)
    best = {pair: max(((name, e["median_fraction_at_150"]) for name, e in r["strategies"].items()), key=lambda x: x[1])
            for pair, r in results.items()}
    results["accuracy_vs_latency"]["front_remeasured_end_to_end"] = remeasured
    results["predictor_rounds"] = predictor_rounds(Store(url), args.seeds)
    write_result("search_strategies", {
        "supernet": str(DEFAULT_CHECKPOINT.name), "evaluation_settings": asdict(SETTINGS),
        "latency": "lookup-table prediction, eager runtime, 1 thread, this host; every run's modes scored with "
                   "the one saved table (rescore_latency)", "budget": args.budget,
        "seeds": args.seeds, "dse_delta": args.delta, "seeded_from_dse": SEEDED_FROM_DSE,
        "hypervolume": "moocore.hypervolume, accuracy maximized, cost minimized", "results": results,
        "time_per_evaluation": overhead, "plot": plot.name,
        "target": "best strategy reaches 0.98 of the reference hypervolume within 150 evaluations",
        "best_strategy_at_150": {pair: {"strategy": name, "median_fraction": value}
                                 for pair, (name, value) in best.items()},
        "met": {pair: value >= 0.98 for pair, (_, value) in best.items()},
        "predictor_targets": {pair: {"at_50": r["strategies"].get("predictor", {}).get("median_fraction_at_50"),
                                     "at_150": r["strategies"].get("predictor", {}).get("median_fraction_at_150"),
                                     "met_0.95_at_50": (r["strategies"].get("predictor", {}).get("median_fraction_at_50")
                                                        or 0) >= 0.95,
                                     "met_0.98_at_150": (r["strategies"].get("predictor", {})
                                                         .get("median_fraction_at_150") or 0) >= 0.98}
                              for pair, r in results.items() if pair.startswith("accuracy_vs_")},
    })


def predictor_rounds(store: Store, seeds: int) -> dict:
    """Per round of the predictor runs: median over seeds of the held-out Kendall tau of predicted vs
    real accuracy (the round's batch, predicted before it was evaluated) and of the seconds spent
    outside real evaluations (fit, evolution, selection)."""
    by_round: dict[int, dict[str, list[float]]] = {}
    for seed in range(seeds):
        record = store.get_search(f"bench/predictor/seed{seed}")
        for entry in (record.summary.get("rounds", []) if record else []):
            row = by_round.setdefault(int(entry["round"]), {"tau": [], "planning_s": [], "trained_on": []})
            if (tau := entry.get("kendall_tau", {}).get("accuracy")) is not None:
                row["tau"].append(tau)
            row["planning_s"].append(entry.get("fit_s", 0) + entry.get("evolve_s", 0) + entry.get("select_s", 0))
            row["trained_on"].append(entry.get("trained_on", 0))
    return {str(r): {"trained_on": int(statistics.median(v["trained_on"])),
                     "median_kendall_tau_accuracy": round(statistics.median(v["tau"]), 3) if v["tau"] else None,
                     "median_planning_s": round(statistics.median(v["planning_s"]), 2), "seeds": len(v["planning_s"])}
            for r, v in sorted(by_round.items())}


def _median_or_none(values: list[int | None]) -> float | None:
    """Median where runs that never reached the level count as infinitely late."""
    ordered = sorted(values, key=lambda v: float("inf") if v is None else v)
    middle = ordered[len(ordered) // 2]
    return None if middle is None else middle


def _plot(curves: dict, budget: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(curves), figsize=(12, 4.5), sharey=True)
    for axis, (cost, by_strategy) in zip(np.atleast_1d(axes), curves.items(), strict=True):
        for strategy, runs_ in sorted(by_strategy.items()):
            length = min(len(c) for c in runs_)
            median = np.median(np.asarray([c[:length] for c in runs_]), axis=0)
            axis.plot(range(1, length + 1), median, label=f"{strategy} ({len(runs_)} run{'s' * (len(runs_) > 1)})")
        axis.axhline(0.98, color="grey", linestyle=":", linewidth=1)
        axis.axvline(150, color="grey", linestyle=":", linewidth=1)
        axis.set(title=f"accuracy vs {cost}", xlabel="evaluations", xlim=(1, budget), ylim=(0.3, 1.005))
        axis.legend(fontsize=8, loc="lower right")
    np.atleast_1d(axes)[0].set_ylabel("hypervolume / reference (median over seeds)")
    figure.tight_layout()
    path = RESULTS / "search_strategies.png"
    figure.savefig(path, dpi=110)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--delta", type=float, default=0.80, help="DSE accuracy threshold")
    parser.add_argument("--dse-iterations", type=int, default=10)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-report", action="store_true", help="Only run (e.g. workers run side by side; then "
                                                                 "--report-only once all have finished).")
    args = parser.parse_args()
    if not args.report_only:
        run_all(args)
    if args.worker == 0 and not args.no_report:
        report(args)


if __name__ == "__main__":
    main()

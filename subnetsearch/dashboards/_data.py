"""Plot data for the report, computed from the store and the Optuna studies on the same URL (step
one of two: these functions are tested; `_render` only draws what they return)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import optuna

from subnetsearch.errors import InputError
from subnetsearch.pareto import COSTS as PARETO_COSTS
from subnetsearch.pareto import OBJECTIVES, hypervolume, nondominated
from subnetsearch.search import strategy_of_record
from subnetsearch.storage import Store, StoredEvaluation, accuracy_interval, distinct_trials
from subnetsearch.supernets import BaseSupernet

COSTS = {name: OBJECTIVES[name].title for name in PARETO_COSTS}


@dataclass(frozen=True)
class Point:
    mode_id: str
    accuracy: float
    cost: float
    label: str  # hover text: mode id, metrics and the command that exports the mode
    # 95 % intervals (equal to the value where the figure is exact or has none: MACs, unpaired latency)
    accuracy_interval: tuple[float, float] = (0.0, 0.0)
    cost_interval: tuple[float, float] = (0.0, 0.0)
    kind: str = ""  # what the mode changes (full, groups, width, ...: `BaseSupernet.kind_of`), where known

    @classmethod
    def of(cls, evaluation: StoredEvaluation, cost: str, device: str, kind: str = "") -> Point:
        value = evaluation.objective(cost)
        if value is None:
            raise InputError(f"evaluation of mode {evaluation.mode_id} has no {cost}: it has no point on that axis")
        latency = "-" if evaluation.latency_ms is None else f"{evaluation.latency_ms:.3f} ms"
        interval = (evaluation.latency or {}).get("interval_ms")
        if interval:
            latency += f" [{interval[0]:.3f}-{interval[1]:.3f}]"
        elif evaluation.latency_ms is not None:
            latency += " (unpaired)" if (evaluation.latency or {}).get("measured", True) else " (predicted)"
        bound = (evaluation.latency or {}).get("bound_ms")
        if bound and evaluation.latency_ms:  # how much of the device's roofline this mode reaches
            latency += f" ({bound / evaluation.latency_ms:.0%} of its roofline bound {bound:.3f} ms)"
        label = (f"mode {evaluation.mode_id}{f' ({kind})' if kind else ''}<br>val acc {evaluation.accuracy:.4f}, {latency}, "
                 f"{evaluation.macs / 1e6:.2f} MMACs, {evaluation.energy_mj:.4f} mJ<br>"
                 f"subnetsearch export {evaluation.mode_id} --device {device} -o {evaluation.mode_id}.onnx")
        accuracy = accuracy_interval(evaluation.accuracy, evaluation.accuracy_samples)
        costs = (float(interval[0]), float(interval[1])) if cost == "latency" and interval else (value, value)
        return cls(evaluation.mode_id, evaluation.accuracy, float(value), label, accuracy, costs, kind)


@dataclass(frozen=True)
class Series:
    name: str
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Curve:
    name: str
    x: tuple[int, ...]
    y: tuple[float, ...]


@dataclass
class DeviceReport:
    """Everything the report shows for one device and supernet."""

    device: str
    supernet_hash: str
    costs: tuple[str, ...]
    fronts: dict[str, Series] = field(default_factory=dict)  # cost -> the stored, merged front
    full: dict[str, Point] = field(default_factory=dict)  # cost -> the full network, if evaluated on the device
    full_missing: str | None = None  # why the full network is not marked (not evaluated here, or unknown)
    strategy_fronts: dict[str, list[Series]] = field(default_factory=dict)  # cost -> one front per strategy
    dse: dict[str, list[Series]] = field(default_factory=dict)  # cost -> each DSE search's trajectory
    hypervolume: list[Curve] = field(default_factory=list)  # per search: fraction of all evaluations' HV
    hypervolume_reference: dict[str, float] = field(default_factory=dict)
    predictor_fit: list[Curve] = field(default_factory=list)  # per predictor search: held-out Kendall tau per round
    predictor_rounds: dict[str, list[dict]] = field(default_factory=dict)  # per predictor search: its summary's rounds
    layers: tuple[str, ...] = ()  # knob names, in network order
    layer_modes: list[tuple[str, tuple[float, ...]]] = field(default_factory=list)  # front modes' knob values
    noise: str | None = None  # the device's measured repeatability (NoiseProfile.describe), if measured


def _front(points: Sequence[Point]) -> tuple[Point, ...]:
    if not points:
        return ()
    mask = nondominated([[p.accuracy, p.cost] for p in points], ["accuracy", "macs"])  # any cost: minimized
    return tuple(sorted((p for p, keep in zip(points, mask, strict=True) if keep), key=lambda p: (p.cost, p.mode_id)))


def _study_modes(storage_url: str, study_name: str) -> list[str]:
    """The mode ids a search's study evaluated, in order, each once (read once per search)."""
    try:
        study = optuna.load_study(study_name=study_name, storage=storage_url)
    except KeyError:
        return []
    return [trial.user_attrs["mode_id"] for trial in distinct_trials(study)]


def _points(mode_ids: Sequence[str], by_mode: dict[str, StoredEvaluation], cost: str, device: str) -> list[Point]:
    return [Point.of(by_mode[m], cost, device) for m in mode_ids
            if m in by_mode and by_mode[m].objective(cost) is not None]


def device_report(store: Store, storage_url: str, device: str, supernet_hash: str,
                  full_mode_id: str | None = None, kind_of: Callable[[str], str] | None = None) -> DeviceReport:
    """Fronts per cost, the full network (the mode `full_mode_id`, marked only if it was evaluated on
    this device), per-strategy fronts, DSE trajectories, hypervolume against evaluations for every
    search, and the per-layer view of the front's modes. `kind_of` (a mode's JSON -> its kind) marks
    each front mode with what it changes."""
    evaluations = [e for e in store.list_evaluations(device, supernet_hash) if e.settings.get("split", "val") == "val"]
    evaluations = store.refresh_latency(evaluations)  # paired figures as every window measured so far has them
    costs = tuple(c for c in COSTS if any(e.objective(c) is not None for e in evaluations))
    noise = store.get_device_noise(device)
    report = DeviceReport(device, supernet_hash, costs, noise=noise.describe() if noise is not None else None)
    if not evaluations:
        return report
    by_mode = {}
    for e in sorted(evaluations, key=lambda e: (e.settings.get("fidelity", "full") == "full",
                                                e.settings.get("calibration_batches", 0))):
        by_mode[e.mode_id] = e  # prefer full fidelity, then recalibrated BN, where a mode was evaluated several ways
    full = by_mode.get(full_mode_id) if full_mode_id else None
    if full_mode_id is None:
        report.full_missing = "the supernet's full mode is unknown (its architecture cannot be built here)"
    elif full is None:
        report.full_missing = (f"the full network (mode {full_mode_id}) was not evaluated on {device}: "
                               f"`subnetsearch devices measure {device} --modes full` adds it")
    searches = [s for s in store.list_searches(device) if s.supernet_hash == supernet_hash]
    visited = {search.name: _study_modes(storage_url, search.study_name) for search in searches}
    for cost in costs:
        report.fronts[cost] = Series("stored front", tuple(
            Point.of(e, cost, device, kind_of(e.mode_json) if kind_of else "")
            for e in store.get_front(device, f"accuracy,{cost}", supernet_hash)))
        if full is not None and full.objective(cost) is not None:
            report.full[cost] = Point.of(full, cost, device)
        by_strategy: dict[str, list[Point]] = {}
        for search in searches:
            points = _points(visited[search.name], by_mode, cost, device)
            by_strategy.setdefault(search.strategy, []).extend(points)
            strategy = strategy_of_record(search.strategy)
            walk = strategy.trajectory(search.summary) if strategy is not None else []
            if walk:  # a strategy that walks (Algorithm 2): its path is drawn
                trajectory = [by_mode[m] for m in walk if m in by_mode]
                report.dse.setdefault(cost, []).append(Series(search.name, tuple(Point.of(e, cost, device)
                                                                                    for e in trajectory)))
        report.strategy_fronts[cost] = [Series(name, _front(points)) for name, points in sorted(by_strategy.items())]
    cost = costs[0]
    everything = [Point.of(e, cost, device) for e in by_mode.values()]
    reference = [min(p.accuracy for p in everything) - 0.01, 1.05 * max(p.cost for p in everything)]
    total = hypervolume([[p.accuracy, p.cost] for p in everything], ["accuracy", cost], reference)
    report.hypervolume_reference = {"accuracy": reference[0], cost: reference[1], "hypervolume_of_all": total}
    for search in searches:
        points = _points(visited[search.name], by_mode, cost, device)
        fractions = tuple(hypervolume([[p.accuracy, p.cost] for p in points[:n]], ["accuracy", cost], reference)
                          / total if total else 0.0 for n in range(1, len(points) + 1))
        report.hypervolume.append(Curve(search.name, tuple(range(1, len(points) + 1)), fractions))
    for search in searches:  # how well each model-guided search's accuracy model ranked its next batch
        strategy = strategy_of_record(search.strategy)
        rounds = strategy.rounds(search.summary) if strategy is not None else []
        if not rounds:
            continue
        report.predictor_rounds[search.name] = rounds
        ranked = [r for r in rounds if (r.get("kendall_tau") or {}).get("accuracy") is not None]
        report.predictor_fit.append(Curve(search.name, tuple(int(r["round"]) for r in ranked),  # no tau: a tie
                                          tuple(float(r["kendall_tau"]["accuracy"]) for r in ranked)))
    front_modes = store.get_front(device, f"accuracy,{cost}", supernet_hash)  # the first cost's front, as drawn
    if front_modes:
        values = [json.loads(e.mode_json)["values"] for e in front_modes]
        report.layers = tuple(values[0])
        report.layer_modes = [(e.mode_id, tuple(float(v[name]) for name in report.layers))
                              for e, v in zip(front_modes, values, strict=True)]
    return report


def built_supernet(arch: dict) -> BaseSupernet | None:
    """A stored supernet's architecture built (untrained: for its modes), None if it cannot be here."""
    from subnetsearch.supernets import ArchError, build_supernet

    try:
        return build_supernet(arch)
    except (ArchError, ValueError, TypeError, KeyError):
        return None


def full_mode_of(arch: dict) -> str | None:
    """The id of a supernet's full mode, from its stored architecture (None if it cannot be built)."""
    supernet = built_supernet(arch)
    return None if supernet is None else supernet.full_mode().id


def cross_device(store: Store, supernet_hash: str, devices: Sequence[str], cost: str) -> list[Series]:
    """The same supernet's stored fronts on several devices, for one chart."""
    return [Series(device, tuple(Point.of(e, cost, device)
                                 for e in store.get_front(device, f"accuracy,{cost}", supernet_hash)))
            for device in devices]

"""The store's answers: Pareto fronts per device (with latency refreshed from the device's graph
book and noise-aware fronts), the figures a mode is shown with, and the best mode under a budget,
with how sure the answer is."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from sqlalchemy import case, literal, select

from subnetsearch.deploy import BUDGET_RULE, Candidate, choose
from subnetsearch.devices import KERNEL_OPTIONS, PAIRING, GraphSamples, LatencyProtocol
from subnetsearch.errors import InputError
from subnetsearch.pareto import nondominated
from subnetsearch.storage._fronts import ALL, COLUMNS, objective_sets
from subnetsearch.storage._graphs import StoreBook, protocol_key
from subnetsearch.storage._models import (
    DeviceRow,
    EvaluationRow,
    FrontRow,
    LatencyGraphRow,
    SupernetRow,
)
from subnetsearch.storage._records import BestMode, Budget, StoredEvaluation
from subnetsearch.storage._store import _EVALUATION_COLUMNS, RecordStore
from subnetsearch.storage._uncertain import Figures, accuracy_interval, noise_front, sign_confidence


class Store(RecordStore):
    """The store: its records (`RecordStore`), fronts and best-mode query."""

    @staticmethod
    def _front_rows(device: str, objectives: str, supernet_hash: str | None, *conditions: Any) -> Any:
        query = (select(*_EVALUATION_COLUMNS)  # joined through the front row: its index is what makes this fast
                 .join(FrontRow, FrontRow.evaluation_id == EvaluationRow.id)
                 .join(SupernetRow, SupernetRow.id == FrontRow.supernet_id)
                 .join(DeviceRow, DeviceRow.id == FrontRow.device_id)
                 .where(DeviceRow.name == device, FrontRow.objectives == objectives, *conditions))
        if supernet_hash is not None:
            query = query.where(SupernetRow.content_hash == supernet_hash)
        return query

    def get_front(self, device: str, objectives: str = "accuracy,latency",
                  supernet_hash: str | None = None, noise_aware: bool = True) -> list[StoredEvaluation]:
        """The stored front of a device for an objective set, merged across supernets and evaluation
        settings (a mode another stored front dominates is left out), sorted by its cost. Noise-aware
        (`_uncertain`): a mode equal to a better one within the figures' intervals is left out, and
        paired latencies are read as the store knows them now (`refresh_latency`)."""
        self.get_device(device)  # unknown device: a clear error
        if objectives not in objective_sets(True):
            raise InputError(f"unknown objective set {objectives!r}; choose from {sorted(objective_sets(True))}")
        with self.session() as session:
            rows = [StoredEvaluation(*row) for row in session.execute(self._front_rows(device, objectives, supernet_hash))]
        if not rows:
            return []
        names = objective_sets(all(r.latency_ms is not None for r in rows))[ALL] if objectives == ALL \
            else tuple(objectives.split(","))
        rows = [r for r in rows if all(r.objective(n) is not None for n in names)]
        mask = nondominated([[float(r.objective(n) or 0.0) for n in names] for r in rows], names)  # none is None here
        merged = [r for r, keep in zip(rows, mask, strict=True) if keep]
        if noise_aware:
            merged = self._noise_front(merged, names)
        return sorted(merged, key=lambda r: tuple(r.objective(n) for n in names[1:]) + (-r.accuracy, r.mode_id))

    # ---- figures with their intervals -------------------------------------------------------------
    def refresh_latency(self, rows: Sequence[StoredEvaluation]) -> list[StoredEvaluation]:
        """The evaluations with their paired latency as the store knows it now: each graph's ratio
        over every window measured for it (later windows narrow it), times the reference's pooled
        median now. Unpaired and predicted figures are returned as stored."""
        wanted: dict[tuple[str, str, str], set[str]] = {}
        for row in rows:
            paired = (row.latency or {}).get("paired")
            if paired:
                key = (row.device, protocol_key(_protocol_of(row.latency or {})), paired["reference"])
                wanted.setdefault(key, set()).update({paired["graph"], paired["reference"]})
        if not wanted:
            return list(rows)
        graphs: dict[tuple[str, str, str, str], LatencyGraphRow] = {}
        with self.session() as session:
            for (device, options, reference), digests in wanted.items():
                query = (select(LatencyGraphRow).join(DeviceRow, DeviceRow.id == LatencyGraphRow.device_id)
                         .where(DeviceRow.name == device, LatencyGraphRow.protocol_key == options,
                                LatencyGraphRow.reference == reference, LatencyGraphRow.digest.in_(digests)))
                for found in session.scalars(query):
                    graphs[(device, options, reference, found.digest)] = found
        between = {}  # each device's between-window factor (its noise profile), widening one-window figures
        for device in {row.device for row in rows}:
            noise = self.get_device_noise(device)
            between[device] = noise.between if noise is not None else 1.0
        refreshed = []
        for row in rows:
            paired = (row.latency or {}).get("paired")
            if not paired:
                refreshed.append(row)
                continue
            key = (row.device, protocol_key(_protocol_of(row.latency or {})), paired["reference"])
            pool = graphs.get((*key, paired["reference"]))
            graph = graphs.get((*key, paired["graph"]))
            if pool is None or not pool.reference_ms:
                refreshed.append(row)
                continue
            pooled = statistics.median(pool.reference_ms)
            confidence = paired.get("pairing", {}).get("confidence", PAIRING.confidence)
            if paired["graph"] == paired["reference"]:
                ratio, low, high, achieved, count, windows = 1.0, 1.0, 1.0, 1.0, paired.get("ratios", 0), 0
            elif graph is not None and graph.ratios:
                samples = GraphSamples(tuple(tuple(window) for window in graph.ratios))
                ratio, low, high, achieved = samples.figure(confidence, between.get(row.device, 1.0))
                count, windows = len(samples.ratios), samples.windows
            else:
                refreshed.append(row)
                continue
            latency = {**(row.latency or {}), "ms": ratio * pooled, "interval_ms": [low * pooled, high * pooled],
                       "paired": {**paired, "ratio": ratio, "low": low, "high": high, "confidence": achieved,
                                  "ratios": count, "windows": windows, "reference_ms": pooled,
                                  "reference_blocks": len(pool.reference_ms)}}
            refreshed.append(replace(row, latency_ms=ratio * pooled, latency=latency))
        return refreshed

    def figures(self, rows: Sequence[StoredEvaluation], correct: Sequence[bytes | None] | None = None) -> list[Figures]:
        """Each evaluation's objective values with their intervals (see `_uncertain`)."""
        figures = []
        for index, row in enumerate(rows):
            values = {name: float(value) for name in COLUMNS if (value := row.objective(name)) is not None}
            low, high = dict(values), dict(values)
            low["accuracy"], high["accuracy"] = accuracy_interval(row.accuracy, row.accuracy_samples)
            interval = (row.latency or {}).get("interval_ms")
            if interval and "latency" in values:
                low["latency"], high["latency"] = float(interval[0]), float(interval[1])
            packed = correct[index] if correct is not None else None
            bits = (np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=row.accuracy_samples).astype(bool)
                    if packed is not None and row.accuracy_samples else None)
            figures.append(Figures(values, low, high, bits))
        return figures

    def _noise_front(self, rows: Sequence[StoredEvaluation], names: Sequence[str]) -> list[StoredEvaluation]:
        rows = self.refresh_latency(rows)
        correct = [self.get_correctness(row) for row in rows]
        mask = noise_front(self.figures(rows, correct), names)
        return [row for row, keep in zip(rows, mask, strict=True) if keep]

    def best_candidates(self, device: str, supernet_hash: str | None = None) -> list[tuple[StoredEvaluation, Figures]]:
        """The modes `best_mode` chooses from, with their figures: every Pareto-optimal mode of the
        device's "all" front (see `_fronts`), latency refreshed from the graph book; not only the
        noise-aware front's, since a mode left off it for one equal within noise may be the one whose
        interval fits a budget. One indexed lookup of the front rows, whatever the number of
        evaluations. What `export --front` puts in a device's artifact by default."""
        self.get_device(device)  # an unknown device is an error, not an empty answer
        with self.session() as session:
            rows = [StoredEvaluation(*row) for row in session.execute(self._front_rows(device, ALL, supernet_hash))]
        if not rows:
            return []
        names = objective_sets(all(r.latency_ms is not None for r in rows))[ALL]
        rows = [r for r in rows if all(r.objective(n) is not None for n in names)]
        mask = nondominated([[float(r.objective(n) or 0.0) for n in names] for r in rows], names)
        front = self.refresh_latency([r for r, keep in zip(rows, mask, strict=True) if keep])
        return list(zip(front, self.figures(front), strict=True))

    def best_mode(self, device: str, budget: Budget = Budget(), objective: str = "accuracy",
                  supernet_hash: str | None = None, closest: int = 3) -> BestMode:
        """The stored mode that optimizes `objective` among those that meet `budget` on `device` with
        stated confidence (`BUDGET_RULE`, applied by `subnetsearch.deploy.choose`, as a deployed
        front's `select` applies it), from `best_candidates`. Ties are broken by accuracy, then MACs,
        then mode id. `confidence` says, per constrained objective, how sure the answer is."""
        if objective not in COLUMNS:
            raise InputError(f"unknown objective {objective!r}; choose from {sorted(COLUMNS)}")
        candidates = self.best_candidates(device, supernet_hash)
        if not candidates:
            return BestMode(device, objective, budget, None, (), 0, BUDGET_RULE)
        rows = {row.mode_id + row.supernet_hash: row for row, _ in candidates}
        chosen = choose([Candidate(row.mode_id + row.supernet_hash, figure.values, figure.low, figure.high)
                         for row, figure in candidates], budget.limits(), objective)
        if chosen is not None:
            best = rows[chosen.mode_id]
            return BestMode(device, objective, budget, best, (), None, BUDGET_RULE, self._confidence(best, budget))
        front = [row for row, _ in candidates]
        nearest = sorted(front, key=lambda r: (budget.violation(r), -r.accuracy, r.macs, r.mode_id))[:closest]
        return BestMode(device, objective, budget, None, tuple(nearest), len(front), BUDGET_RULE)

    def _confidence(self, evaluation: StoredEvaluation, budget: Budget) -> dict:
        """Per constrained objective: how sure it is that the mode meets that limit."""
        answer: dict = {}
        for name, _kind, limit in budget.limits():
            if name in ("macs", "energy"):
                answer[name] = {"confidence": 1.0, "how": "exact (analytical model)"}
            elif name == "accuracy":
                low, _ = accuracy_interval(evaluation.accuracy, evaluation.accuracy_samples)
                answer[name] = {"confidence": 0.975 if evaluation.accuracy_samples else None, "low": low,
                                "how": f"lower end of the 95 % binomial interval over {evaluation.accuracy_samples} "
                                       "validation images" if evaluation.accuracy_samples else "no interval stored"}
            elif name == "latency":
                answer[name] = self._latency_confidence(evaluation, limit)
        return answer

    def _latency_confidence(self, evaluation: StoredEvaluation, limit: float) -> dict:
        latency = evaluation.latency or {}
        paired = latency.get("paired")
        if not paired:
            return {"confidence": None, "how": "unpaired figure (measured alone in its window): no interval"}
        if paired["graph"] == paired["reference"]:
            return {"confidence": 1.0 if paired["reference_ms"] <= limit else 0.0,
                    "how": "the reference graph: its pooled median is the figure"}
        book = StoreBook(self, evaluation.device, _protocol_of(latency), paired["reference"])
        samples = book.get(paired["graph"])
        if samples is None:
            return {"confidence": None, "how": "its graph's samples are not in this store"}
        pooled = paired["reference_ms"]
        # windows are the independent samples (GraphSamples); within a single window, its ratios
        units = samples.window_medians if samples.windows > 1 else samples.ratios
        what = f"{samples.windows} windows' median ratios" if samples.windows > 1 else \
            f"the {len(units)} paired ratios of its one window (the host's between-window drift not included)"
        return {"confidence": sign_confidence([ratio * pooled for ratio in units], limit),
                "interval_ms": latency.get("interval_ms"),
                "how": f"sign test over {what}, times the reference's pooled median {pooled:.4f} ms"}


def _protocol_of(latency: dict) -> LatencyProtocol:
    """The kernel options a stored latency was measured under."""
    return LatencyProtocol(**{key: latency[key] for key in KERNEL_OPTIONS if key in latency})

def _violation(column: Any, kind: str, limit: float) -> Any:
    """SQL for the relative violation of one budget (as `Budget.violation`); unknown values violate."""
    excess = column - limit if kind == "max" else limit - column
    return case((column.is_(None), literal(1e9)), (excess > 0, excess / abs(limit or 1e-12)), else_=literal(0.0))

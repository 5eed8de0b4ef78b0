"""Multi-fidelity evaluation: a cheap first look at every candidate, the full evaluation only for
those that could join the front.

A first look (`Fidelity`) calibrates BN on a few training batches, scores a validation subset and
times a short paired window (in a private graph book, so short windows never join the store's
figures). It is stored under its own key (`EvaluationSettings.fidelity == "low"`), reused by a
resumed search, and never enters a front or answers `best` (`storage._fronts.selects`). A
candidate is promoted to the full evaluation unless another candidate's first look beats it on
every objective beyond noise (`storage.could_join`: intervals, and paired accuracy differences on
the same images) - a multi-objective rule, where Optuna's pruners and Ray Tune's schedulers rank
one objective. Every strategy gets it through `SearchSession` (its evaluations, local or fanned out
to Ray actors); a dismissed candidate's first look is what the strategy sees for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from subnetsearch.devices import MemoryBook, Pairing
from subnetsearch.errors import InputError
from subnetsearch.search._cache import CachedEvaluator
from subnetsearch.search._evaluator import EvaluationSettings
from subnetsearch.storage import Figures, Store, StoredEvaluation, Z, accuracy_interval, could_join


@dataclass(frozen=True)
class Fidelity:
    """The first look: `calibration_batches` BN calibration batches (of the full settings' size),
    `eval_batches` validation batches of 500 images, a paired window of `rounds` rounds of
    `block_s`-second blocks; `z` of the promotion rule's intervals (1.96: 95 %)."""

    calibration_batches: int = 4
    eval_batches: int = 2
    rounds: int = 5
    block_s: float = 0.01
    z: float = Z

    def __post_init__(self) -> None:
        if self.calibration_batches < 0:
            raise InputError(f"calibration_batches must be >= 0, got {self.calibration_batches}")
        if self.eval_batches < 1:
            raise InputError(f"eval_batches must be >= 1, got {self.eval_batches}")
        if self.rounds < 2 or not self.block_s > 0:
            raise InputError(f"a first look's window needs rounds >= 2 and block_s > 0, got {self.rounds}, "
                             f"{self.block_s}")
        if not self.z > 0:
            raise InputError(f"z must be positive, got {self.z}")

    def settings(self, full: EvaluationSettings) -> EvaluationSettings:
        """The first look's evaluation settings: never more work than the full ones."""
        calibration = min(full.calibration_batches, self.calibration_batches)
        batches = self.eval_batches if full.max_eval_batches is None else min(full.max_eval_batches, self.eval_batches)
        return replace(full, calibration_batches=calibration, max_eval_batches=batches, fidelity="low")

    def pairing(self) -> Pairing:
        return Pairing(rounds=self.rounds, block_s=self.block_s)

    def to_dict(self) -> dict:
        return asdict(self)


def screening_evaluator(full: CachedEvaluator, fidelity: Fidelity) -> CachedEvaluator:
    """The evaluator of first looks beside `full` (same supernet, device, store and meters): the
    fidelity's settings and window, a private graph book."""
    return CachedEvaluator(full.supernet, full.supernet_hash, full.splits, full.device, full.store,
                           fidelity.settings(full.settings), measure=full.measure, predictor=full.predictor,
                           meter=full.meter, planner=full.planner, paired_meter=full.paired_meter,
                           paired=full.paired_arguments, pairing=fidelity.pairing(), book=MemoryBook())


def look_figures(record: StoredEvaluation, correct: bytes | None) -> Figures:
    """A first look's figures with their intervals. Latency is its paired ratio to the device's
    reference (looks timed in different processes share no pooled reference median); a predicted or
    unpaired latency is its value."""
    values = {"accuracy": record.accuracy, "macs": float(record.macs), "energy": record.energy_mj}
    low, high = dict(values), dict(values)
    low["accuracy"], high["accuracy"] = accuracy_interval(record.accuracy, record.accuracy_samples)
    paired = (record.latency or {}).get("paired")
    if paired:
        values["latency"], low["latency"], high["latency"] = paired["ratio"], paired["low"], paired["high"]
    elif record.latency_ms is not None:
        values["latency"] = low["latency"] = high["latency"] = record.latency_ms
    bits = None
    if correct is not None and record.accuracy_samples:
        bits = np.unpackbits(np.frombuffer(correct, dtype=np.uint8), count=record.accuracy_samples).astype(bool)
    return Figures(values, low, high, bits)


class Screen:
    """The first looks of one supernet on one device under one key (this search's and those stored
    before: a resumed search decides as an uninterrupted one would) and the promotion rule on them."""

    def __init__(self, store: Store, screening: CachedEvaluator, objectives: Sequence[str], z: float = Z) -> None:
        self.store, self.objectives, self.z = store, list(objectives), z
        self.looks: dict[str, Figures] = {}
        for record in store.list_evaluations(screening.device.name, screening.supernet_hash):
            if record.settings_key == screening.key:
                self.add(record)
        self.decided: dict[str, bool] = {}  # a mode is decided once per search (a re-walk asks again)
        self.promoted = self.dismissed = 0

    def add(self, record: StoredEvaluation) -> None:
        if record.mode_id not in self.looks:
            self.looks[record.mode_id] = look_figures(record, self.store.get_correctness(record))

    def promote(self, record: StoredEvaluation) -> bool:
        """Whether a first look could join the front (counted once per mode)."""
        if record.mode_id in self.decided:
            return self.decided[record.mode_id]
        self.add(record)
        missing = [name for name in self.objectives if name not in self.looks[record.mode_id].values]
        if missing:
            raise InputError(f"a first look of mode {record.mode_id} has no {', '.join(missing)}: the promotion "
                             "rule compares every objective of the search")
        others = [figures for mode_id, figures in self.looks.items()
                  if mode_id != record.mode_id and all(name in figures.values for name in self.objectives)]
        decision = could_join(self.looks[record.mode_id], others, self.objectives, self.z)
        self.decided[record.mode_id] = decision
        if decision:
            self.promoted += 1
        else:
            self.dismissed += 1
        return decision

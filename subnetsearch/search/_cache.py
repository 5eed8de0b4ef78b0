"""An evaluator that never evaluates a mode twice: results are kept in the store, keyed by
(supernet content hash, device, mode id, evaluation settings + device protocol)."""

from __future__ import annotations

import torch

from subnetsearch.data import Splits
from subnetsearch.devices import (
    PAIRING,
    Device,
    GraphBook,
    LatencyPredictor,
    MemoryBook,
    PairedMeter,
    Pairing,
    Reference,
    reference_for,
)
from subnetsearch.search._evaluator import EvaluationSettings, Meter, Metrics, calibration_batches, evaluate_mode
from subnetsearch.spaces import Mode
from subnetsearch.storage import Store, StoredEvaluation, settings_key
from subnetsearch.supernets import PLAIN, BaseSupernet


def to_record(metrics: Metrics, supernet_hash: str, key: str) -> StoredEvaluation:
    latency = metrics.latency.to_dict() if metrics.latency else None
    return StoredEvaluation(supernet_hash, metrics.device, metrics.mode.id, metrics.mode.to_json(), key,
                            metrics.settings.to_dict(), metrics.accuracy, metrics.loss, metrics.macs, metrics.params,
                            metrics.latency.ms if metrics.latency else None, latency, metrics.energy_mj,
                            metrics.energy_source, metrics.energy_measured_mj, metrics.cost_profile,
                            metrics.accuracy_samples)


class CachedEvaluator:
    """Evaluates modes of one supernet on one device. Not thread-safe (the supernet has one mode)."""

    def __init__(self, supernet: BaseSupernet, supernet_hash: str, splits: Splits, device: Device,
                 store: Store | None = None, settings: EvaluationSettings = EvaluationSettings(),
                 measure: bool = True, predictor: LatencyPredictor | None = None, meter: Meter | None = None,
                 planner: LatencyPredictor | None = None, paired_meter: PairedMeter | None = None,
                 paired: bool = True, pairing: Pairing = PAIRING, book: GraphBook | None = None) -> None:
        self.supernet, self.supernet_hash, self.splits = supernet, supernet_hash, splits
        self.device, self.store, self.settings, self.measure = device, store, settings, measure
        self.predictor, self.meter, self.planner, self.paired_meter = predictor, meter, planner, paired_meter
        # measured latency of input-independent modes is paired against the device's reference
        # (devices._paired) unless `paired` is False (the protocol of stores from before it)
        self.paired = paired and measure and predictor is None and not supernet.dynamic_cost
        self.paired_arguments = paired  # as given (`screening_evaluator` builds a sibling from them)
        self.pairing = pairing  # how a paired window is timed (a multi-fidelity search's first look: shorter)
        self._reference: Reference | None = None
        self._book: GraphBook | None = book  # given: a private book (short windows never join the store's)
        self._between: float | None = None
        # The roofline is a property of the device that no measurement depends on (it is left out so
        # that measuring it again, or a store from before it was kept, reuses the evaluations).
        profile = {key: value for key, value in device.to_dict().items() if key != "roofline"}
        payload = {"settings": settings.to_dict(), "device": profile, "measure": measure,
                   "data": splits.name, "split_seed": splits.split_seed}
        if predictor is not None:  # predicted latencies are kept apart from measured ones
            payload["latency_table"] = predictor.table.digest
        if self.paired:  # paired figures are kept apart from those measured alone in their windows
            payload["latency"] = "paired"
            if pairing != PAIRING:
                payload["pairing"] = pairing.to_dict()
        self.key = settings_key(payload)
        self._memory: dict[str, StoredEvaluation] = {}
        self._calibration: list[torch.Tensor] | None = None
        self.hits = self.misses = 0

    @property
    def reference(self) -> Reference:
        """The device's reference for this supernet: its full network as realized (stored BN)."""
        if self._reference is None:
            static = self.supernet.realize(self.supernet.full_mode(), PLAIN).cpu()
            self._reference = reference_for(static, self.supernet.input_shape, self.device.protocol)
        return self._reference

    @property
    def between(self) -> float:
        """The device's between-window factor (its stored noise profile; 1 where none is stored)."""
        if self._between is None:
            noise = self.store.get_device_noise(self.device.name) if self.store is not None else None
            self._between = noise.between if noise is not None else 1.0
        return self._between

    @property
    def book(self) -> GraphBook:
        """Where graph figures are kept: the store's book (shared) or, without a store, this process's."""
        if self._book is None:
            self._book = (self.store.graph_book(self.device.name, self.device.protocol, self.reference.digest)
                          if self.store is not None else MemoryBook())
        return self._book

    def lookup(self, mode: Mode) -> StoredEvaluation | None:
        """The stored evaluation of `mode` under this evaluator's key, if any."""
        cached = self._memory.get(mode.id)
        if cached is None and self.store is not None:
            cached = self.store.get_evaluation(self.supernet_hash, self.device.name, mode.id, self.key)
        if cached is not None:
            self._memory[mode.id] = cached
        return cached

    def remember(self, record: StoredEvaluation, fresh: bool | None = None) -> None:
        """Keep an evaluation made elsewhere (by a distributed worker) for later lookups; with
        `fresh`, count it as computed now (True) or reused from the store (False)."""
        self._memory[record.mode_id] = record
        if fresh is not None:
            self.count(fresh)

    def count(self, fresh: bool) -> None:
        """Count an evaluation as computed now or reused from the store."""
        if fresh:
            self.misses += 1
        else:
            self.hits += 1

    def evaluate(self, mode: Mode) -> StoredEvaluation:
        cached = self.lookup(mode)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        if self._calibration is None and self.settings.calibration_batches:
            self._calibration = calibration_batches(self.splits, self.settings)
        metrics = evaluate_mode(self.supernet, mode, self.splits, self.device, self.settings,
                                calibration=self._calibration, measure=self.measure, predictor=self.predictor,
                                meter=self.meter, planner=self.planner,
                                book=self.book if self.paired else None,
                                reference=self.reference if self.paired else None, paired_meter=self.paired_meter,
                                between=self.between, pairing=self.pairing)
        record = to_record(metrics, self.supernet_hash, self.key)
        if self.store is not None:
            self.store.put_evaluation(record, metrics.bn_state, metrics.correct)
        self._memory[mode.id] = record
        return record

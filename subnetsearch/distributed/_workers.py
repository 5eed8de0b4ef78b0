"""Ray actors of a distributed search.

- `DeviceMeter`: one per searched device, placed on a node advertising `device:<name>` (resource
  quantity 1, so one measurement per device at a time, even across searches). It times the
  materialized modes it is sent; the node id goes into every latency it records.
- `EvaluationWorker`: one per worker slot, holding the supernet and the data once. It evaluates modes
  with the same cached evaluator as a local search (store reads and writes included), sending the
  latency part to the meter.

Both restart when their process or node dies, and Ray retries the call they were running: a dead
worker costs the retry of its current evaluation, and the store's unique key keeps every result
once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import ray
import torch
from torch import nn

from subnetsearch.data import DataSpec, load_data
from subnetsearch.devices import (
    Device,
    Latency,
    LatencyPredictor,
    LatencyProtocol,
    LatencyTable,
    PairedWindow,
    Pairing,
    measure_paired,
)
from subnetsearch.errors import InputError
from subnetsearch.search import CachedEvaluator, EvaluationSettings, Fidelity, measure_on_host, screening_evaluator
from subnetsearch.spaces import Mode
from subnetsearch.storage import Store, StoredEvaluation
from subnetsearch.supernets import Checkpoint

RESTARTS = 3  # per actor: process or node deaths survived, each costing one retried call


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs besides the checkpoint: everything that makes its evaluations the same as
    the driver's (the evaluator's settings key is computed from it)."""

    storage_url: str
    device: dict
    settings: EvaluationSettings
    measure: bool
    latency_table: dict | None
    threads: int = 1
    plan_table: dict | None = None  # measured latency: the device's table, whose per-layer plan is also timed
    fidelity: Fidelity | None = None  # a multi-fidelity search's first looks


class RemoteMeter:
    """The evaluator's meter hook: ships the materialized mode to the device's meter actor."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self._node: str | None = None

    def __call__(self, model: nn.Module, input_shape: tuple[int, ...], label: str,
                 examples: torch.Tensor | None = None) -> tuple[Latency, float | None]:
        return ray.get(self.handle.measure.remote(model, input_shape, label, examples))

    def paired(self, candidates: Mapping[str, nn.Module], reference: nn.Module, input_shape: tuple[int, ...],
               protocol: LatencyProtocol, pairing: Pairing) -> dict[str, PairedWindow]:
        """A paired window (devices.measure_paired) timed on the device's node."""
        return ray.get(self.handle.measure_paired.remote(dict(candidates), reference, input_shape, pairing))

    @property
    def node(self) -> str:
        """The device's node: where every window of this device's figures was timed (a figure reused
        from the store was measured there too)."""
        if self._node is None:
            self._node = ray.get(self.handle.node_id.remote())
        return self._node


def build_evaluator(checkpoint: Checkpoint, spec: WorkerSpec, meter: Any | None) -> CachedEvaluator:
    """A worker's evaluator: the same key as the driver's, so results are shared through the store."""
    torch.set_num_threads(spec.threads)
    supernet = checkpoint.build()
    splits = load_data(DataSpec.from_dict(checkpoint.data))
    table = LatencyTable.from_dict(spec.latency_table) if spec.latency_table else None
    predictor = LatencyPredictor(supernet, table) if table else None
    plan = LatencyTable.from_dict(spec.plan_table) if spec.plan_table else None
    remote = RemoteMeter(meter) if meter is not None and spec.measure else None
    return CachedEvaluator(supernet, checkpoint.hash, splits, Device.from_dict(spec.device), Store(spec.storage_url),
                           spec.settings, measure=spec.measure, predictor=predictor,
                           planner=LatencyPredictor(supernet, plan) if plan else None,
                           meter=remote, paired_meter=remote.paired if remote is not None else None)


def evaluate_counted(evaluator: CachedEvaluator, mode_json: str) -> tuple[StoredEvaluation, bool]:
    """(evaluation, whether it was computed now rather than found in the store)."""
    misses = evaluator.misses
    record = evaluator.evaluate(Mode.from_json(mode_json))
    return record, evaluator.misses > misses


@ray.remote(num_cpus=0, max_restarts=RESTARTS, max_task_retries=RESTARTS)
class DeviceMeter:
    def __init__(self, protocol: LatencyProtocol) -> None:
        self.protocol = protocol
        self.node = ray.get_runtime_context().get_node_id()

    def measure(self, model: nn.Module, input_shape: tuple[int, ...], label: str,
                examples: torch.Tensor | None = None) -> tuple[Latency, float | None]:
        latency, energy = measure_on_host(model, tuple(input_shape), self.protocol, label, examples=examples)
        return replace(latency, node=self.node), energy

    def measure_paired(self, candidates: dict[str, nn.Module], reference: nn.Module, input_shape: tuple[int, ...],
                       pairing: Pairing) -> dict[str, PairedWindow]:
        windows = measure_paired(candidates, reference, tuple(input_shape), self.protocol, pairing)
        return {name: replace(window, node=self.node) for name, window in windows.items()}

    def node_id(self) -> str:
        return self.node


@ray.remote(max_restarts=RESTARTS, max_task_retries=RESTARTS)
class EvaluationWorker:
    """Built from plain values only: Ray cannot reliably restart an actor whose constructor
    arguments hold object references or actor handles (ray-project/ray#53727), and logs an error
    for each such actor. The checkpoint ([ObjectRef]: fetched here, not resolved by Ray; the driver
    keeps it alive) and the meter's handle come with each call; the supernet and data are built on
    the first call after a (re)start."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.evaluators: dict[str, CachedEvaluator] = {}

    def evaluate(self, context: list[Any], mode_json: str, fidelity: str = "full") -> tuple[StoredEvaluation, bool]:
        """`context`: [the checkpoint's ObjectRef, the device meter's handle or None]; `fidelity`
        "low": a first look (the spec's `Fidelity`)."""
        if not self.evaluators:
            checkpoint, meter = context
            self.evaluators["full"] = build_evaluator(ray.get(checkpoint), self.spec, meter)
        if fidelity not in self.evaluators:
            if fidelity != "low" or self.spec.fidelity is None:
                raise InputError(f"this worker evaluates fidelity 'full'{' and low' if self.spec.fidelity else ''}, "
                                 f"not {fidelity!r}")
            self.evaluators["low"] = screening_evaluator(self.evaluators["full"], self.spec.fidelity)
        return evaluate_counted(self.evaluators[fidelity], mode_json)

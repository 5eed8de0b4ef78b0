"""Evaluate one mode of a supernet: cost, BN-calibrated validation accuracy, measured latency."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from subnetsearch.data import Splits
from subnetsearch.devices import Latency, LatencyProtocol, measure_latency
from subnetsearch.spaces import Mode
from subnetsearch.supernets import WeNetSupernet
from subnetsearch.supernets._calibrate import calibrated_bn
from subnetsearch.trainers import evaluate_accuracy


@dataclass(frozen=True)
class EvaluationSettings:
    """How accuracy is measured. Calibration uses training images only; accuracy uses `split`."""

    split: str = "val"
    calibration_batches: int = 20
    calibration_batch_size: int = 128
    calibration_seed: int = 0
    max_eval_batches: int | None = None

    def __post_init__(self) -> None:
        if self.split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test' (selection uses 'val'), got {self.split!r}")
        if self.calibration_batches < 0:
            raise ValueError(f"calibration_batches must be >= 0, got {self.calibration_batches}")


@dataclass(frozen=True)
class Metrics:
    mode: Mode
    macs: int
    params: int
    accuracy: float  # with BN calibrated for this mode (or stored statistics if calibration_batches == 0)
    accuracy_stored_bn: float | None
    latency: Latency | None
    settings: EvaluationSettings


def calibration_batches(splits: Splits, settings: EvaluationSettings) -> list[torch.Tensor]:
    """A fixed, seeded sample of training images (never validation or test) for BN calibration."""
    generator = torch.Generator().manual_seed(settings.calibration_seed)
    return [images for images, _ in splits.batches(splits.train, settings.calibration_batch_size, shuffle=True,
                                                   generator=generator, max_batches=settings.calibration_batches)]


def mode_accuracy(supernet: WeNetSupernet, mode: Mode, splits: Splits, settings: EvaluationSettings,
                  calibration: list[torch.Tensor] | None = None) -> float:
    split = splits.val if settings.split == "val" else splits.test
    if settings.calibration_batches == 0:
        previous = supernet.mode
        supernet.set_mode(mode)
        try:
            return evaluate_accuracy(supernet, splits, split, max_batches=settings.max_eval_batches)
        finally:
            supernet.set_mode(previous)
    batches = calibration if calibration is not None else calibration_batches(splits, settings)
    with calibrated_bn(supernet, mode, batches):
        return evaluate_accuracy(supernet, splits, split, max_batches=settings.max_eval_batches)


def evaluate_mode(supernet: WeNetSupernet, mode: Mode, splits: Splits, settings: EvaluationSettings = EvaluationSettings(),
                  protocol: LatencyProtocol | None = LatencyProtocol(), with_stored_bn: bool = False,
                  calibration: list[torch.Tensor] | None = None) -> Metrics:
    """Cost from the analytical model, accuracy with per-mode BN calibration, and (if a protocol is
    given) the measured latency of the materialized mode, with calibrated BN folded in."""
    cost = supernet.cost(mode)
    batches = calibration if calibration is not None else calibration_batches(splits, settings)
    accuracy = mode_accuracy(supernet, mode, splits, settings, batches)
    stored = None
    if with_stored_bn:
        stored = mode_accuracy(supernet, mode, splits, EvaluationSettings(settings.split, 0,
                                                                           max_eval_batches=settings.max_eval_batches))
    latency = None
    if protocol is not None:
        if settings.calibration_batches:
            with calibrated_bn(supernet, mode, batches):
                static = supernet.materialize(mode)
        else:
            static = supernet.materialize(mode)
        latency = measure_latency(static, supernet.input_shape, protocol, label=mode.id)
    return Metrics(mode, cost.macs, cost.params, accuracy, stored, latency, settings)

"""Evaluate one mode of a supernet on one device: cost, BN-calibrated validation accuracy and loss,
measured latency, modelled energy. Every figure says how it was obtained."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import nn

from subnetsearch.data import Splits
from subnetsearch.devices import (
    PAIRING,
    Device,
    GraphBook,
    Latency,
    LatencyPredictor,
    LatencyProtocol,
    PairedMeter,
    Pairing,
    Reference,
    compute_lock,
    energy_pj,
    get_runtime,
    measure_energy_mj,
    measure_latency,
    network_accesses,
    paired_latency,
    rapl_domains,
)
from subnetsearch.errors import InputError
from subnetsearch.spaces import Mode
from subnetsearch.supernets import PLAIN, BaseSupernet, Realization, bn_state, calibrated_bn
from subnetsearch.trainers import evaluate_split_correct


@dataclass(frozen=True)
class EvaluationSettings:
    """How accuracy is measured. Calibration uses training images only; accuracy uses `split`
    (validation for every selection; "test" only for reports). `fidelity` "low" marks the cheap
    first look of a multi-fidelity search (`search._fidelity`): such evaluations are stored and
    reused, but never enter a front or answer `best`."""

    split: str = "val"
    calibration_batches: int = 20
    calibration_batch_size: int = 128
    calibration_seed: int = 0
    max_eval_batches: int | None = None
    fidelity: str = "full"

    def __post_init__(self) -> None:
        if self.split not in ("val", "test"):
            raise InputError(f"split must be 'val' or 'test' (selection uses 'val'), got {self.split!r}")
        if self.calibration_batches < 0:
            raise InputError(f"calibration_batches must be >= 0, got {self.calibration_batches}")
        if self.calibration_batch_size < 1:
            raise InputError(f"calibration_batch_size must be >= 1, got {self.calibration_batch_size}")
        if self.max_eval_batches is not None and self.max_eval_batches < 1:
            raise InputError(f"max_eval_batches must be >= 1 (or unset: the whole split), got {self.max_eval_batches}")
        if self.fidelity not in ("full", "low"):
            raise InputError(f"fidelity must be 'full' or 'low', got {self.fidelity!r}")

    def to_dict(self) -> dict:
        """The settings as stored and keyed: `fidelity` only where it is low, so that full-fidelity
        evaluations keep the keys of stores from before multi-fidelity evaluation."""
        payload = asdict(self)
        if self.fidelity == "full":
            del payload["fidelity"]
        return payload


def evaluation_settings(calibration_batches: int, eval_batches: int | None) -> EvaluationSettings:
    """The settings a user's bounds on one evaluation's cost give (the CLI's --calibration-batches,
    --eval-batches); a ValueError names the option that is out of range."""
    if calibration_batches < 0:
        raise InputError(f"--calibration-batches must be >= 0, got {calibration_batches}")
    if eval_batches is not None and eval_batches < 1:
        raise InputError(f"--eval-batches must be >= 1, got {eval_batches}")
    return EvaluationSettings(calibration_batches=calibration_batches, max_eval_batches=eval_batches)


@dataclass(frozen=True)
class Metrics:
    """Everything measured for one (mode, device). `latency` is None where the device does not run
    here (a Ray node or an imported table); `energy_mj` always comes from the Eq. (6) model."""

    mode: Mode
    device: str
    macs: int
    params: int
    accuracy: float  # BN calibrated for this mode (stored statistics if calibration_batches == 0)
    loss: float
    accuracy_stored_bn: float | None
    latency: Latency | None
    energy_mj: float
    settings: EvaluationSettings
    energy_measured_mj: float | None = None  # RAPL package energy per inference, where the host exposes it
    cost_profile: dict | None = None  # input-dependent modes: per-sample MACs (`macs` is their mean)
    bn_state: bytes | None = None  # the calibrated BN statistics (None: the stored ones were used)
    correct: bytes | None = None  # which evaluated images it classified correctly (`pack_correct`)
    accuracy_samples: int | None = None  # how many images `accuracy` rests on

    @property
    def energy_source(self) -> str:
        return "model"


def pack_correct(correct: torch.Tensor) -> bytes:
    """A bool vector as bytes, 8 images per byte (numpy's packbits order; `unpack_correct` reverses)."""
    return np.packbits(correct.numpy().astype(bool)).tobytes()


def unpack_correct(packed: bytes, samples: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=samples).astype(bool)


DYNAMIC_LATENCY_SAMPLES = 32  # real validation images per latency call of an input-dependent mode

Meter = Callable[[nn.Module, tuple[int, ...], str, torch.Tensor | None], tuple[Latency, float | None]]
"""Measures a materialized mode (model, input shape without batch, label, and the real examples to
time it on one by one, for input-dependent modes, else None): its latency and, where RAPL counters
exist, its measured energy per inference in mJ. The default measures on this host; a distributed
search sends the model (and the examples) to the device's node instead."""


def measure_on_host(model: nn.Module, input_shape: tuple[int, ...], protocol: LatencyProtocol, label: str,
                    node: str | None = None, examples: torch.Tensor | None = None) -> tuple[Latency, float | None]:
    """Latency under `protocol` (per sample over `examples` if given), and RAPL package energy per
    inference where the host exposes it. Input-dependent modes (timed per real example) run eagerly
    whatever the device's runtime: their data-dependent control flow cannot be traced or exported, so
    eager is how they run on any device; the stored protocol says so."""
    if examples is not None:
        protocol = replace(protocol, runtime="eager")
    latency = measure_latency(model, input_shape, protocol, label=label, examples=examples)
    if node is not None:
        latency = replace(latency, node=node)
    measured_energy = None
    if rapl_domains():
        example = torch.randn(protocol.batch_size, *input_shape) if examples is None else examples
        with torch.inference_mode():
            per_call = measure_energy_mj(lambda: model(example))
        measured_energy = None if per_call is None else per_call / example.shape[0]
    return latency, measured_energy


def rapl_energy_mj(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> float | None:
    """RAPL package energy per inference (mJ) where the host exposes it, else None."""
    if not rapl_domains():
        return None
    example = torch.randn(batch_size, *input_shape)
    with torch.inference_mode():
        per_call = measure_energy_mj(lambda: model(example))
    return None if per_call is None else per_call / batch_size


def calibration_batches(splits: Splits, settings: EvaluationSettings) -> list[torch.Tensor]:
    """A fixed, seeded sample of training images (never validation or test) for BN calibration."""
    generator = torch.Generator().manual_seed(settings.calibration_seed)
    return [images for images, _ in splits.batches(splits.train, settings.calibration_batch_size, shuffle=True,
                                                   generator=generator, max_batches=settings.calibration_batches)]


def mode_accuracy(supernet: BaseSupernet, mode: Mode, splits: Splits, settings: EvaluationSettings,
                  calibration: list[torch.Tensor] | None = None) -> float:
    return mode_accuracy_and_loss(supernet, mode, splits, settings, calibration)[0]


def mode_accuracy_and_loss(supernet: BaseSupernet, mode: Mode, splits: Splits, settings: EvaluationSettings,
                           calibration: list[torch.Tensor] | None = None) -> tuple[float, float]:
    return _accuracy_and_static(supernet, mode, splits, settings, calibration, ())[0]


def realization_candidates(grouped: Sequence[str], planned: Realization | None = None,
                           shuffle: str = "reshape") -> list[Realization]:
    """The realizations of a mode whose latency is measured (the fastest is kept): its `grouped`
    layers as grouped kernels, and, if it has any, all of them as dense equivalents (which runtimes
    whose grouped kernels are slow run as fast as the full network), and the per-layer plan the
    device's lookup table predicts fastest (`planned`, if it is neither of those): the table chooses
    per layer, the end-to-end measurement decides where the table is wrong. Shuffles that stay are
    computed in the `shuffle` form (the device runtime's cheaper one, `Runtime.shuffle`)."""
    if not grouped:
        return [PLAIN]
    candidates = [Realization((), shuffle), Realization(tuple(grouped))]
    if planned is not None:
        planned = replace(planned, shuffle=shuffle)
        if planned not in candidates:
            candidates.append(planned)
    return candidates


def _accuracy_and_static(supernet: BaseSupernet, mode: Mode, splits: Splits, settings: EvaluationSettings,
                         calibration: list[torch.Tensor] | None, realizations: Sequence[Realization],
                         record_costs: bool = False,
                         ) -> tuple[tuple[float, float], list[torch.nn.Module], list | None, bytes | None, torch.Tensor]:
    """Accuracy and loss on the settings' split, and the static network of each of `realizations`,
    all under the same BN statistics: recalibrated once for this mode, or the stored ones. With
    `record_costs` (an input-dependent supernet) the per-sample costs of the evaluated split's
    forward passes, and only those (not the calibration batches, which are training images). Last,
    which evaluated images the mode classified correctly (bool, in split order)."""
    split = splits.val if settings.split == "val" else splits.test

    def scored() -> tuple[tuple[float, float], list | None, torch.Tensor]:
        if not record_costs:
            accuracy, loss, correct = evaluate_split_correct(supernet, splits, split, max_batches=settings.max_eval_batches)
            return (accuracy, loss), None, correct
        with supernet.recording_costs() as records:
            accuracy, loss, correct = evaluate_split_correct(supernet, splits, split, max_batches=settings.max_eval_batches)
        return (accuracy, loss), records, correct

    if settings.calibration_batches == 0:
        previous = supernet.mode
        supernet.set_mode(mode)
        try:
            scores, records, correct = scored()
            return scores, [supernet.realize(mode, r).cpu() for r in realizations], records, None, correct
        finally:
            supernet.set_mode(previous)
    batches = calibration if calibration is not None else calibration_batches(splits, settings)
    with calibrated_bn(supernet, mode, batches):
        scores, records, correct = scored()
        # the static networks run on the device profile's runtime, on the host: from an accelerator, copied back
        return scores, [supernet.realize(mode, r).cpu() for r in realizations], records, bn_state(supernet), correct


def mode_energy_mj(supernet: BaseSupernet, mode: Mode, device: Device) -> float:
    """Modelled energy per inference (millijoules) at the device's batch size."""
    batch = device.protocol.batch_size
    accesses = network_accesses(*supernet.layers_for(mode), batch)
    return energy_pj(accesses, device.energy) / batch * 1e-9


def evaluate_mode(supernet: BaseSupernet, mode: Mode, splits: Splits, device: Device,
                  settings: EvaluationSettings = EvaluationSettings(), with_stored_bn: bool = False,
                  calibration: list[torch.Tensor] | None = None, measure: bool = True,
                  predictor: LatencyPredictor | None = None, meter: Meter | None = None,
                  planner: LatencyPredictor | None = None, book: GraphBook | None = None,
                  reference: Reference | None = None, paired_meter: PairedMeter | None = None,
                  between: float = 1.0, pairing: Pairing = PAIRING) -> Metrics:
    """Cost from the analytical model, accuracy and loss with per-mode BN calibration, energy from
    the device's energy model, and latency: predicted by `predictor` (a lookup table) if given, else
    (if `measure`) measured on the materialized mode with its calibrated BN folded in, by `meter`
    (e.g. on the device's Ray node) or, for a device on this host, here; each of its realizations
    (`realization_candidates`: with `planner`, the device's table, also the per-layer plan it predicts
    fastest) is timed and the fastest kept. With a `book` and the device's `reference` (input-independent
    modes), each realization's figure is its graph's paired ratio against the reference
    (`devices.paired_latency`): identical graphs share one figure, a new window adds to a graph's
    ratios, and `paired_meter` times the window where the device is not this host; `pairing` says how a
    window is timed. The accuracy part holds the
    host's shared compute lock, so it never overlaps a latency measurement on this host."""
    cost = supernet.cost(mode)
    macs, energy_mj, profile = cost.macs, mode_energy_mj(supernet, mode, device), None
    measure_here = measure and predictor is None and (meter is not None or device.location == "host")
    dynamic = supernet.dynamic_cost
    examples = None
    if dynamic and measure_here:
        # latency per sample over real validation images, each run alone (the gates see real data)
        examples = next(iter(splits.batches(splits.val, DYNAMIC_LATENCY_SAMPLES)))[0]
    grouped = supernet.grouped_layers(mode)
    planned = planner.realization(mode)[0] if planner is not None and grouped and measure_here else None
    shuffle = get_runtime(device.protocol.runtime).shuffle
    realizations = realization_candidates(grouped, planned, shuffle) if measure_here else []
    with compute_lock():
        (accuracy, loss), statics, records, calibrated, correct = _accuracy_and_static(
            supernet, mode, splits, settings, calibration, realizations, record_costs=dynamic)
        if dynamic and records is not None:  # input-dependent cost: the evaluated samples' mean
            profile = supernet.cost_profile(records)
            if profile is None:
                raise InputError(f"{type(supernet).__name__} has an input-dependent cost but no cost profile")
            macs = round(profile["mean_macs"])
            energy_mj *= profile["mean_macs"] / profile["plain_macs"]  # accesses scale with the work executed
        stored = None
        if with_stored_bn:
            stored = mode_accuracy(supernet, mode, splits, EvaluationSettings(settings.split, 0,
                                                                               max_eval_batches=settings.max_eval_batches))
    measured_energy = None
    latency: Latency | None = None
    if predictor is not None:
        latency = predictor(mode)
    elif statics and book is not None and reference is not None and examples is None:
        labels = [realization.describe(len(grouped)) for realization in realizations]
        best_label, latency = paired_latency(dict(zip(labels, statics, strict=True)), reference, supernet.input_shape,
                                             device.protocol, book, pairing, meter=paired_meter,
                                             between=between)
        chosen = labels.index(best_label)
        assert latency.paired is not None
        pooled = latency.paired["reference_ms"]
        others = {label: round(figure["ratio"] * pooled, 6) for label, figure in latency.paired["others"].items()}
        # a figure reused from the store was measured on the device's node too (the meter's, if it has one)
        node = latency.node or getattr(getattr(paired_meter, "__self__", None), "node", None)
        latency = replace(latency, realization=realizations[chosen].to_dict(), alternatives_ms=others or None,
                          node=node)
        if device.location == "host" and paired_meter is None:
            measured_energy = rapl_energy_mj(statics[chosen], supernet.input_shape, device.protocol.batch_size)
    elif statics:
        measured = []
        for realization, static in zip(realizations, statics, strict=True):
            label = f"{mode.id} ({realization.describe(len(grouped))})"
            if meter is None:
                measured.append(measure_on_host(static, supernet.input_shape, device.protocol, label, examples=examples))
            else:
                measured.append(meter(static, supernet.input_shape, label, examples))
        best = min(range(len(measured)), key=lambda i: measured[i][0].ms)
        others = {realizations[i].describe(len(grouped)): round(measured[i][0].ms, 6) for i in range(len(measured))
                  if i != best}
        latency = replace(measured[best][0], realization=realizations[best].to_dict(),
                          alternatives_ms=others or None)
        measured_energy = measured[best][1]
    if latency is not None and device.roofline is not None and not dynamic:
        latency = replace(latency, bound_ms=device.roofline.bound_ms(*supernet.layers_for(mode),
                                                                     batch=device.protocol.batch_size))
    return Metrics(mode, device.name, macs, cost.params, accuracy, loss, stored, latency, energy_mj, settings,
                   measured_energy, profile, calibrated, pack_correct(correct), int(correct.numel()))

"""A device's repeatability (`devices.NoiseProfile`), measured with a supernet's reference network and
recorded in the store: what `devices noise`, `devices add` and the report show; and the host device
recorded on first use (`device_or_host`)."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from subnetsearch.devices import (
    Device,
    DeviceError,
    NoiseProfile,
    default_host_device,
    graph_digest,
    host_roofline,
    measure_noise,
    paired_latency,
    reference_for,
)
from subnetsearch.errors import InputError
from subnetsearch.search._cache import CachedEvaluator
from subnetsearch.spaces import Mode
from subnetsearch.storage import StorageError, Store
from subnetsearch.supernets import PLAIN, BaseSupernet, Realization


def record_device_noise(store: Store, device: Device, supernet: BaseSupernet, windows: int = 5) -> NoiseProfile:
    """Measure `device` (on this host) in `windows` separate paired windows of the supernet's full
    network against itself, and store the profile with the device (replacing an older one)."""
    if device.location != "host":
        raise InputError(f"device {device.name} is a {device.location} device: its noise is measured where it runs")
    reference = reference_for(supernet.realize(supernet.full_mode(), PLAIN).cpu(), supernet.input_shape, device.protocol)
    # another graph whose ratio to the reference shows how much the host's state moves ratios themselves:
    # the cheapest mode with its layers as grouped kernels (none where the family has no such mode)
    smallest = supernet.realize(supernet.smallest_mode(), PLAIN).cpu()
    other: nn.Module | None = smallest
    if graph_digest(smallest, supernet.input_shape, device.protocol) == reference.digest:
        other = None
    profile = measure_noise(reference.model, supernet.input_shape, device.protocol, reference.digest, windows,
                            other=other)
    store.set_device_noise(device.name, profile)
    return profile


def refine_front(evaluator: CachedEvaluator, store: Store, windows: int = 4,
                 objectives: str = "accuracy,latency") -> int:
    """Measure the graphs of the stored front's modes (this supernet on this evaluator's device, the
    front before noise is allowed for) in `windows` more paired windows each: their figures then rest
    on several windows (the independent samples, `GraphSamples`), and their intervals narrow to what
    the host really allows, so the noise-aware front separates what it can. A graph shared by several
    members is measured once. Returns how many graphs were measured."""
    if not evaluator.paired:
        return 0
    supernet = evaluator.supernet
    front = store.get_front(evaluator.device.name, objectives, evaluator.supernet_hash, noise_aware=False)
    reference, seen = evaluator.reference, {evaluator.reference.digest}
    measured = 0
    for evaluation in front:
        if evaluation.latency is None or not evaluation.latency.get("paired"):
            continue
        realization = Realization.from_dict(evaluation.latency.get("realization"))
        static = supernet.realize(Mode.from_json(evaluation.mode_json), realization).cpu()
        digest = graph_digest(static, supernet.input_shape, evaluator.device.protocol)
        if digest in seen:
            continue
        seen.add(digest)
        for _ in range(windows):
            paired_latency({"front": static}, reference, supernet.input_shape, evaluator.device.protocol,
                           evaluator.book, meter=evaluator.paired_meter, remeasure=True, between=evaluator.between)
        measured += 1
    return measured


def device_or_host(store: Store, name: str) -> Device:
    """The recorded device `name`; `this-host` (the default host profile, with its roofline measured
    here, ~4 s) is recorded on first use. Any other unknown name is refused (`DeviceError`)."""
    try:
        return store.get_device(name)
    except DeviceError:
        if name != default_host_device().name:
            raise
    device = default_host_device()
    try:
        return store.add_device(replace(device, roofline=host_roofline(device.protocol.threads, device.protocol.runtime)))
    except StorageError:  # recorded by another process at the same moment
        return store.get_device(name)

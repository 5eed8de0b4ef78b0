"""A device's repeatability (`devices.NoiseProfile`), measured with a supernet's reference network and
recorded in the store: what `devices noise`, `devices add` and the report show."""

from __future__ import annotations

from torch import nn

from subnetsearch.devices import Device, NoiseProfile, graph_digest, measure_noise, reference_for
from subnetsearch.storage import Store
from subnetsearch.supernets import PLAIN, BaseSupernet


def record_device_noise(store: Store, device: Device, supernet: BaseSupernet, windows: int = 5) -> NoiseProfile:
    """Measure `device` (on this host) in `windows` separate paired windows of the supernet's full
    network against itself, and store the profile with the device (replacing an older one)."""
    if device.location != "host":
        raise ValueError(f"device {device.name} is a {device.location} device: its noise is measured where it runs")
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

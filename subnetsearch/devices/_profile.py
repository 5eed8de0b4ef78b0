"""Hardware targets as named, recorded profiles."""

from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from subnetsearch.costs import EnergyCoefficients
from subnetsearch.devices._latency import LatencyProtocol
from subnetsearch.devices._roofline import Roofline
from subnetsearch.errors import SubnetsearchError

Location = Literal["host", "ray-node", "imported"]
LOCATIONS: tuple[str, ...] = ("host", "ray-node", "imported")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class DeviceError(SubnetsearchError, ValueError):
    """A device profile that is malformed or cannot be used here."""


@dataclass(frozen=True)
class Device:
    """A hardware target: where modes run, how they are executed and measured, and its energy model.

    `location`: "host" (this machine), "ray-node" (a Ray node advertising the custom resource
    `device:<name>`), or "imported" (latency figures measured elsewhere, no execution here).
    The name is lower-case letters, digits, '.', '_' and '-' (it becomes a Ray resource name and
    part of file names).
    """

    name: str
    location: Location = "host"
    protocol: LatencyProtocol = field(default_factory=LatencyProtocol)
    energy: EnergyCoefficients = field(default_factory=EnergyCoefficients)
    description: str = ""
    roofline: Roofline | None = None  # measured peak MAC rate and bandwidth (host devices; None: unknown)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise DeviceError(f"device name {self.name!r} is not allowed: use 1-63 characters from a-z, 0-9, "
                              "'.', '_', '-', starting with a letter or digit")
        if self.location not in LOCATIONS:
            raise DeviceError(f"device location must be one of {LOCATIONS}, got {self.location!r}")

    @property
    def ray_resource(self) -> str:
        return f"device:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "location": self.location, "protocol": asdict(self.protocol),
                "energy": self.energy.to_dict(), "description": self.description,
                "roofline": None if self.roofline is None else self.roofline.to_dict()}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> Device:
        try:
            return cls(payload["name"], payload.get("location", "host"), LatencyProtocol(**payload.get("protocol", {})),
                       EnergyCoefficients(**payload.get("energy", {})), payload.get("description", ""),
                       Roofline.from_dict(payload.get("roofline")))
        except (KeyError, TypeError, ValueError) as error:
            raise DeviceError(f"not a device profile ({error}): {payload!r}") from error


def host_description() -> str:
    """CPU model and core count of this machine, for a host device's description."""
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.machine()}"


def default_host_device() -> Device:
    """The embedded default target: this host, ONNX Runtime (the fastest runtime measured here for
    grouped modes, see benchmarks/results/realized_speedup.json), batch 1, 2 threads."""
    return Device("this-host", "host", LatencyProtocol(runtime="onnxruntime", batch_size=1, threads=2),
                  description=host_description())

"""The manifest of a multi-mode artifact: which modes it holds (in selector order), each mode's
metrics with their intervals and how they were measured, the device they were measured on, how to
feed the network, and the supernet they come from. Written by `subnetsearch export --front`, read
by `DynamicModel`; plain JSON, so a device without Python can read it too."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from subnetsearch.deploy._select import OBJECTIVES, Candidate
from subnetsearch.errors import SubnetsearchError

MANIFEST_FORMAT = "subnetsearch.front"
MANIFEST_VERSION = 1
# the artifact's form -> the runtime that runs it and where its manifest is
FORMS = {
    "onnx": "one ONNX model; the int64 scalar input `mode` (a mode's index) selects the branch of If nodes that runs",
    "executorch": "one ExecuTorch program with one method per mode, `mode_<index>`",
    "openvino": "one OpenVINO IR (the ONNX form read by OpenVINO: If nodes on the input `mode`)",
    "directory": "a folder of one static file per mode, `mode_<index><suffix>`, of one runtime's format",
}


class DeployError(SubnetsearchError, ValueError):
    """An artifact that cannot be loaded (missing, damaged, a manifest of another version, a runtime
    that is not installed), or a mode or budget it cannot answer."""


@dataclass(frozen=True)
class ModeEntry:
    """One mode of the artifact: `index` is its selector (the ONNX `mode` input, the method or file
    name's number)."""

    index: int
    id: str
    kind: str
    mode: dict
    metrics: dict  # accuracy, latency_ms, macs, params, energy_mj (None where not measured)
    low: dict  # objective -> lower end of its interval (OBJECTIVES' names)
    high: dict  # objective -> upper end
    measurement: dict = field(default_factory=dict)  # how the figures were obtained

    @property
    def candidate(self) -> Candidate:
        values = {name: float(self.metrics[key]) for name, key in _METRIC_OF.items()
                  if self.metrics.get(key) is not None}
        return Candidate(self.id, values, {**values, **self.low}, {**values, **self.high})


_METRIC_OF = {"accuracy": "accuracy", "latency": "latency_ms", "macs": "macs", "energy": "energy_mj"}
assert set(_METRIC_OF) == set(OBJECTIVES)


@dataclass(frozen=True)
class Manifest:
    form: str  # one of FORMS
    runtime: str  # the runtime that runs it (onnxruntime, executorch, openvino)
    suffix: str  # directory form: the per-mode files' suffix
    device: dict  # the device profile the figures were measured on
    supernet_hash: str
    preprocessing: dict  # pixel scale, mean, std, class names: the graph applies them to raw pixels
    input_shape: list[int]  # the shape the figures were measured at (batch first)
    rule: str  # how `select` applies a budget (the same rule as the store's `best`)
    modes: tuple[ModeEntry, ...]
    sharing: dict = field(default_factory=dict)  # what is stored once for several modes
    format: str = MANIFEST_FORMAT
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        document = asdict(self)
        document["modes"] = [asdict(entry) for entry in self.modes]
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "manifest") -> Manifest:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise DeployError(f"{source} is not JSON: {error}") from None
        if not isinstance(document, Mapping) or document.get("format") != MANIFEST_FORMAT:
            raise DeployError(f"{source} is not a subnetsearch front manifest (format {MANIFEST_FORMAT!r})")
        if document.get("version") != MANIFEST_VERSION:
            raise DeployError(f"{source} is manifest version {document.get('version')!r}; this subnetsearch reads "
                              f"version {MANIFEST_VERSION}: export the front again with this version")
        try:
            modes = tuple(ModeEntry(**entry) for entry in document["modes"])
            manifest = cls(**{**document, "modes": modes})
        except (KeyError, TypeError) as error:
            raise DeployError(f"{source} is incomplete or has unknown fields: {error}") from None
        if manifest.form not in FORMS:
            raise DeployError(f"{source}: unknown form {manifest.form!r}; known: {sorted(FORMS)}")
        if [entry.index for entry in modes] != list(range(len(modes))) or not modes:
            raise DeployError(f"{source}: its modes must be indexed 0..n-1 in order, at least one")
        return manifest

    def entry(self, mode_id: str) -> ModeEntry:
        """The mode of this id, or of a unique prefix of it."""
        matches = [entry for entry in self.modes if entry.id == mode_id] or \
                  [entry for entry in self.modes if entry.id.startswith(mode_id)]
        if len(matches) != 1:
            known = ", ".join(entry.id[:12] for entry in self.modes)
            what = "no mode" if not matches else f"{len(matches)} modes"
            raise DeployError(f"{what} of this artifact {'matches' if matches else 'is'} {mode_id!r}; it holds {known}")
        return matches[0]


def manifest_path(artifact: Path) -> Path:
    """Where the manifest of an artifact is: inside a directory; beside a .pte or .xml file, named
    after it (`front.pte` -> `front.pte.manifest.json`: a .pte and an .xml of one name keep their
    own); an ONNX model carries it in its metadata."""
    artifact = Path(artifact)
    return artifact / "manifest.json" if artifact.is_dir() else artifact.with_name(artifact.name + ".manifest.json")


def jsonable(value: Any) -> Any:
    """`value` with tuples as lists, for a manifest that round-trips equal."""
    return json.loads(json.dumps(value))

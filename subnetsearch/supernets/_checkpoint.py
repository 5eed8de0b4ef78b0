"""Checkpoints: weights + architecture config + training recipe + data spec + metrics, with a content
hash. Everything is stored as tensors and JSON strings so `torch.load(weights_only=True)` reads it."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from subnetsearch.data import DataError, DataSpec
from subnetsearch.errors import SubnetsearchError
from subnetsearch.files import write_atomically
from subnetsearch.supernets._base import BaseSupernet
from subnetsearch.supernets._convert import ConversionError
from subnetsearch.supernets._models import load_error_reason
from subnetsearch.supernets._registry import FAMILIES, LEGACY_FAMILIES, ArchError, build_supernet, family_builder

FORMAT = "subnetsearch-checkpoint/1"


class CheckpointError(SubnetsearchError, ValueError):
    """A checkpoint that is missing, damaged, tampered with, or for another architecture."""


def _canonical(payload: Any) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))


def content_hash(state_dict: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> str:
    """sha256 over the canonical metadata and every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256(_canonical(meta).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint. `extra` holds resumable training state (optimizer, RNG), if saved."""

    arch: dict
    recipe: dict
    data: dict
    metrics: dict
    state_dict: dict[str, torch.Tensor]
    hash: str
    extra: dict = field(default_factory=dict)
    source: str = ""  # the file it was read from, for messages

    @property
    def family(self) -> str:
        """The architecture's registered name (a legacy name read as the one it now has)."""
        name = str(self.arch.get("family"))
        return LEGACY_FAMILIES.get(name, name)

    def build(self) -> BaseSupernet:
        """The supernet with these weights (eval mode, full network); a CheckpointError if its
        architecture cannot be built or the weights do not fit it."""
        try:
            supernet = build_supernet(self.arch)
        except (ArchError, ConversionError) as error:
            raise CheckpointError(f"{self.source or 'checkpoint'}: cannot build its supernet: {error}") from error
        load_weights(supernet, self.state_dict, self.source)
        return supernet.eval()


def load_weights(supernet: BaseSupernet, state_dict: Mapping[str, torch.Tensor], source: str = "") -> None:
    expected = supernet.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [k for k in expected if k in state_dict and expected[k].shape != state_dict[k].shape]
    if missing or unexpected or mismatched:
        raise CheckpointError(
            f"{source or 'checkpoint'} does not fit its architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(mismatched)} with other shapes (e.g. {mismatched[:3]})")
    supernet.load_state_dict(state_dict)


def checkpoint_bytes(supernet: BaseSupernet, recipe: Mapping, data: Mapping, metrics: Mapping,
                     extra: Mapping | None = None) -> tuple[bytes, str]:
    """A checkpoint file's bytes and its content hash (for a writer on another machine)."""
    state = {k: v.detach().cpu().clone() for k, v in supernet.state_dict().items()}
    meta = {"arch": supernet.arch, "recipe": dict(recipe), "data": dict(data), "metrics": dict(metrics)}
    digest = content_hash(state, meta)
    payload = {"format": FORMAT, **{k: _canonical(v) for k, v in meta.items()}, "state_dict": state, "hash": digest}
    if extra:
        payload["extra"] = dict(extra)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue(), digest


def save_checkpoint(path: str | Path, supernet: BaseSupernet, recipe: Mapping, data: Mapping,
                    metrics: Mapping, extra: Mapping | None = None) -> str:
    """Write atomically (temp file + rename) and return the content hash."""
    content, digest = checkpoint_bytes(supernet, recipe, data, metrics, extra)
    write_atomically(path, content)
    return digest


def load_checkpoint(path: str | Path, arch: Mapping | None = None) -> Checkpoint:
    """Read and verify a checkpoint. With `arch`, refuse one saved for another architecture."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many kinds for damaged files
        raise CheckpointError(f"cannot read checkpoint {path} (truncated or not a checkpoint): "
                              f"{load_error_reason(error)}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    try:
        meta = {key: json.loads(payload[key]) for key in ("arch", "recipe", "data", "metrics")}
        state = payload["state_dict"]
        stored_hash = payload["hash"]
    except (KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path} is missing or has damaged field: {error}") from error
    _check_content(path, meta, state)
    actual = content_hash(state, meta)
    if actual != stored_hash:
        raise CheckpointError(f"{path}: content hash mismatch (stored {stored_hash[:12]}, actual {actual[:12]}); "
                              "the file was modified or damaged")
    if arch is not None and _canonical(dict(arch)) != _canonical(meta["arch"]):
        raise CheckpointError(f"{path} was saved for architecture {meta['arch']}, not {dict(arch)}")
    extra = payload.get("extra", {})
    if not isinstance(extra, dict):
        raise CheckpointError(f"{path}: field 'extra' must be a mapping, got {type(extra).__name__}")
    return Checkpoint(meta["arch"], meta["recipe"], meta["data"], meta["metrics"], state, stored_hash, extra, str(path))


def _check_content(path: Path, meta: Mapping[str, Any], state: Any) -> None:
    """Well-formed fields of the right kinds: a known family, a valid data spec, tensors by name."""
    for key, value in meta.items():
        if not isinstance(value, dict):
            raise CheckpointError(f"{path}: field {key!r} must be a mapping, got {type(value).__name__}")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: field 'state_dict' must map parameter names to tensors")
    family = meta["arch"].get("family")
    if family_builder(family) is None:
        raise CheckpointError(f"{path}: unknown supernet family {family!r}; known: {sorted(FAMILIES)}")
    try:
        DataSpec.from_dict(meta["data"])
    except DataError as error:
        raise CheckpointError(f"{path}: bad data spec: {error}") from error


def load_supernet(path: str | Path) -> tuple[BaseSupernet, Checkpoint]:
    checkpoint = load_checkpoint(path)
    return checkpoint.build(), checkpoint

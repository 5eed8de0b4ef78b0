"""Knobs, search spaces and modes.

A `SearchSpace` is an ordered set of named knobs with typed domains. A `Mode` is one frozen point of
a space: it carries the id of the space it belongs to, so a mode built for one supernet is refused
by another. Both have a canonical JSON form and a stable id (sha256 of that form).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from subnetsearch.errors import SubnetsearchError

KnobKind = Literal["ordered", "categorical", "float"]


class ModeError(SubnetsearchError, ValueError):
    """A mode does not fit the space or supernet it is used with."""


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Knob:
    """One dimension of a search space.

    `ordered`: a finite, increasing tuple of ints (e.g. allowed group counts), cheapest last for
    group counts. `categorical`: a finite tuple of JSON scalars. `float`: a closed range (low, high).
    `runtime` knobs switch a trained supernet; the others need training.
    """

    name: str
    kind: KnobKind
    values: tuple[Any, ...]
    runtime: bool = True
    log: bool = False  # float knobs: sampled log-uniformly (a penalty weight spanning decades)

    def __post_init__(self) -> None:
        if self.kind == "float":
            if len(self.values) != 2 or not self.values[0] < self.values[1]:
                raise ModeError(f"float knob {self.name!r} needs (low, high) with low < high, got {self.values}")
            if self.log and not self.values[0] > 0:
                raise ModeError(f"log-scaled knob {self.name!r} needs low > 0, got {self.values}")
        elif not self.values:
            raise ModeError(f"knob {self.name!r} has no values")
        if self.kind == "ordered" and (any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in self.values)
                                       or list(self.values) != sorted(set(self.values))):
            raise ModeError(f"ordered knob {self.name!r} needs strictly increasing numbers, got {self.values}")

    def check(self, value: Any) -> None:
        """Refuse a value outside the knob; a boolean is never taken for a number (True == 1 in Python)."""
        if self.kind == "float":
            low, high = self.values
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ModeError(f"knob {self.name!r}: {value!r} is outside [{low}, {high}]")
        elif value not in self.values or (isinstance(value, bool) and not any(v is value for v in self.values)):
            raise ModeError(f"knob {self.name!r}: {value!r} is not one of {list(self.values)}")

    def to_dict(self) -> dict:
        payload = {"name": self.name, "kind": self.kind, "values": list(self.values), "runtime": self.runtime}
        if self.log:  # only when set: the ids of every space without log knobs stay what they were
            payload["log"] = True
        return payload


@dataclass(frozen=True)
class Mode:
    """A frozen point in a search space: knob name -> value, plus the id of its space."""

    values: Mapping[str, Any]
    space_id: str
    _canonical: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frozen = MappingProxyType(dict(sorted(self.values.items())))
        object.__setattr__(self, "values", frozen)
        canonical = json.dumps({"space": self.space_id, "values": dict(frozen)}, sort_keys=True, separators=(",", ":"))
        object.__setattr__(self, "_canonical", canonical)

    def __hash__(self) -> int:
        return hash(self._canonical)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mode) and other._canonical == self._canonical

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces. Equal modes have equal JSON."""
        return self._canonical

    @property
    def id(self) -> str:
        return hashlib.sha256(self._canonical.encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, text: str) -> Mode:
        try:
            payload = json.loads(text)
            return cls(payload["values"], payload["space"])
        except (ValueError, KeyError, TypeError) as error:
            raise ModeError(f"not a mode JSON ({error}): {text[:200]!r}") from error

    def replace(self, **changes: Any) -> Mode:
        return Mode({**self.values, **changes}, self.space_id)


class SearchSpace:
    """An ordered collection of knobs. Immutable after construction.

    `context` (e.g. the supernet's architecture config) enters the id, so that two supernets with
    the same knob names but different architectures do not accept each other's modes.
    """

    def __init__(self, knobs: Iterable[Knob], context: Mapping[str, Any] | None = None) -> None:
        knobs = list(knobs)
        self._knobs = {knob.name: knob for knob in knobs}
        if not self._knobs:
            raise ModeError("a search space needs at least one knob (this supernet has nothing to switch)")
        if len(self._knobs) != len(knobs):
            names = [knob.name for knob in knobs]
            raise ModeError(f"knob names must be unique; repeated: {sorted({n for n in names if names.count(n) > 1})}")
        self.context = dict(context or {})
        self.id = _digest({"knobs": [knob.to_dict() for knob in self._knobs.values()], "context": self.context})

    @property
    def knobs(self) -> tuple[Knob, ...]:
        return tuple(self._knobs.values())

    def __contains__(self, name: str) -> bool:
        return name in self._knobs

    def __getitem__(self, name: str) -> Knob:
        return self._knobs[name]

    def __len__(self) -> int:
        return len(self._knobs)

    @property
    def size(self) -> float:
        """How many distinct modes the space holds (infinite with a float knob)."""
        size = 1.0
        for knob in self._knobs.values():
            size *= math.inf if knob.kind == "float" else len(knob.values)
        return size

    def mode(self, values: Mapping[str, Any]) -> Mode:
        """Build and validate a mode; every knob must be given."""
        mode = Mode(values, self.id)
        self.validate(mode)
        return mode

    def validate(self, mode: Mode) -> None:
        if mode.space_id != self.id:
            raise ModeError(f"mode belongs to space {mode.space_id}, not to this space {self.id} "
                            "(it was built for another supernet)")
        unknown = sorted(set(mode.values) - set(self._knobs))
        if unknown:
            raise ModeError(f"unknown knob(s) {unknown}; this space has {list(self._knobs)[:6]}...")
        missing = [name for name in self._knobs if name not in mode.values]
        if missing:
            raise ModeError(f"mode is missing knob(s) {missing}")
        for name, value in mode.values.items():
            self._knobs[name].check(value)

    def to_dict(self) -> dict:
        return {"id": self.id, "knobs": [knob.to_dict() for knob in self._knobs.values()], "context": self.context}

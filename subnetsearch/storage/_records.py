"""What crosses the store's boundary: frozen value objects (ORM rows never do)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from subnetsearch.deploy import budget_limits
from subnetsearch.errors import InputError
from subnetsearch.storage._fronts import COLUMNS


@dataclass(frozen=True)
class SupernetRecord:
    id: int
    content_hash: str
    family: str
    arch: dict
    recipe: dict
    data: dict
    metrics: dict
    checkpoint_path: str
    preprocessing: dict | None = None


@dataclass(frozen=True)
class StoredEvaluation:
    supernet_hash: str
    device: str
    mode_id: str
    mode_json: str
    settings_key: str
    settings: dict
    accuracy: float
    loss: float
    macs: int
    params: int
    latency_ms: float | None
    latency: dict | None
    energy_mj: float  # the Eq. (6) model
    energy_source: str
    energy_measured_mj: float | None = None  # measured (RAPL package counters) where the host exposes them
    cost_profile: dict | None = None  # input-dependent modes: per-sample MACs distribution (`macs` is its mean)
    accuracy_samples: int | None = None  # images behind `accuracy` (None: stored before it was kept)

    def objective(self, name: str) -> float | None:
        """The value of an objective (accuracy, latency, macs, energy) of this evaluation."""
        value = getattr(self, COLUMNS[name])
        return None if value is None else float(value)


@dataclass(frozen=True)
class SearchRecord:
    name: str
    strategy: str
    supernet_hash: str
    device: str | None  # None: a training-time search
    space: dict
    settings: dict
    status: str
    study_name: str
    summary: dict
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class Budget:
    """Constraints of the best-mode query (None: unconstrained)."""

    max_latency_ms: float | None = None
    max_macs: float | None = None
    max_energy_mj: float | None = None
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_latency_ms", "max_macs", "max_energy_mj"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(f"{name} must be positive, got {value}")
        if self.min_accuracy is not None and not 0.0 <= self.min_accuracy <= 1.0:
            raise InputError(f"min_accuracy must be in [0, 1], got {self.min_accuracy}")

    def limits(self) -> list[tuple[str, str, float]]:
        """(objective, "max" | "min", limit) for every set constraint (as a deployed front reads them)."""
        return budget_limits(self.max_latency_ms, self.max_macs, self.max_energy_mj, self.min_accuracy)

    def violation(self, evaluation: StoredEvaluation) -> float:
        """Sum of relative violations (0 when feasible; inf where a constrained value is unknown)."""
        total = 0.0
        for name, kind, limit in self.limits():
            value = evaluation.objective(name)
            if value is None:
                return float("inf")
            excess = value - limit if kind == "max" else limit - value
            total += max(0.0, excess) / max(abs(limit), 1e-12)
        return total


@dataclass(frozen=True)
class BestMode:
    """The answer to "best mode for device X under budget Y": `best` is None when nothing stored
    satisfies the budget; `closest` then lists the front modes that violate it least."""

    device: str
    objective: str
    budget: Budget
    best: StoredEvaluation | None
    closest: tuple[StoredEvaluation, ...]
    front_size: int | None  # Pareto-optimal modes considered (counted only when nothing satisfies the budget)
    # how the budget was applied (intervals) and how sure the answer is, per constrained objective
    rule: str = ""
    confidence: dict = field(default_factory=dict)

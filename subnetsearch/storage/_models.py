"""The whole schema (SQLAlchemy 2 ORM). ORM rows never leave the storage package: the store API
turns them into frozen value objects. Migrations live in `alembic/versions` beside this module."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON}


class DeviceRow(Base):
    __tablename__ = "ss_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    location: Mapped[str] = mapped_column(String(16))
    protocol: Mapped[dict[str, Any]]
    energy: Mapped[dict[str, Any]]
    description: Mapped[str] = mapped_column(Text, default="")
    roofline: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    noise: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # its measured NoiseProfile
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SupernetRow(Base):
    __tablename__ = "ss_supernets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family: Mapped[str] = mapped_column(String(64))
    arch: Mapped[dict[str, Any]]
    recipe: Mapped[dict[str, Any]]
    data: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any]]
    checkpoint_path: Mapped[str] = mapped_column(Text)
    # what a deployment feeds the network: input shape, pixel scale, channel mean/std, class names
    preprocessing: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class EvaluationRow(Base):
    """One evaluated (supernet, device, mode, settings). The unique key is the evaluator's cache key."""

    __tablename__ = "ss_evaluations"
    __table_args__ = (UniqueConstraint("supernet_id", "device_id", "mode_id", "settings_key", name="uq_evaluation"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    supernet_id: Mapped[int] = mapped_column(ForeignKey("ss_supernets.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("ss_devices.id", ondelete="CASCADE"))
    mode_id: Mapped[str] = mapped_column(String(16))
    mode_json: Mapped[str] = mapped_column(Text)
    settings_key: Mapped[str] = mapped_column(String(64))
    settings: Mapped[dict[str, Any]]
    accuracy: Mapped[float] = mapped_column(Float)
    loss: Mapped[float] = mapped_column(Float)
    macs: Mapped[int] = mapped_column(BigInteger)
    params: Mapped[int] = mapped_column(BigInteger)
    latency_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # protocol + repeats; measured flag
    energy_mj: Mapped[float] = mapped_column(Float)
    energy_source: Mapped[str] = mapped_column(String(16))
    energy_measured_mj: Mapped[float | None] = mapped_column(Float, nullable=True)  # RAPL, where the host has it
    # input-dependent modes (dynamic inference): the distribution of per-sample MACs behind `macs` (their mean)
    cost_profile: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # the BN statistics the mode was calibrated to (export rebuilds the evaluated network from them)
    bn_state: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    # which evaluated images the mode classified correctly (numpy packbits, in split order), and how many
    # images: the standard error of `accuracy`, and paired comparisons between modes on the same images
    correct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    accuracy_samples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SearchRow(Base):
    """One named search (any strategy). Rerunning a search with the same name resumes it."""

    __tablename__ = "ss_searches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    strategy: Mapped[str] = mapped_column(String(64))
    supernet_id: Mapped[int] = mapped_column(ForeignKey("ss_supernets.id", ondelete="CASCADE"))
    # None: a training-time search (its objectives, accuracy and MACs, belong to no device)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("ss_devices.id", ondelete="CASCADE"), nullable=True)
    space: Mapped[dict[str, Any]]
    settings: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16))  # running | finished | failed | interrupted
    study_name: Mapped[str] = mapped_column(String(512))
    summary: Mapped[dict[str, Any]]
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class FrontRow(Base):
    """Membership of an evaluation in the current Pareto front of its (supernet, device, evaluation
    settings) for one objective set ("accuracy,latency", ..., or "all": accuracy and every cost the
    evaluation has). Merged across all searches; maintained on every insert. Validation-split
    evaluations only (the test split never selects).

    Index: the best-mode query filters by device and objective set (and optionally supernet) and
    then only touches front rows: a few hundred, whatever the number of evaluations."""

    __tablename__ = "ss_fronts"
    __table_args__ = (UniqueConstraint("objectives", "evaluation_id", name="uq_front_member"),
                      Index("ix_fronts_lookup", "device_id", "objectives", "supernet_id", "settings_key"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    supernet_id: Mapped[int] = mapped_column(ForeignKey("ss_supernets.id", ondelete="CASCADE"))
    device_id: Mapped[int] = mapped_column(ForeignKey("ss_devices.id", ondelete="CASCADE"))
    settings_key: Mapped[str] = mapped_column(String(64))
    objectives: Mapped[str] = mapped_column(String(64))
    evaluation_id: Mapped[int] = mapped_column(ForeignKey("ss_evaluations.id", ondelete="CASCADE"))


class LatencyTableRow(Base):
    """A latency lookup table of one device for one supernet's layer configurations: measured on
    this host (`source` "measured") or measured elsewhere and imported ("imported")."""

    __tablename__ = "ss_latency_tables"
    __table_args__ = (UniqueConstraint("device_id", "supernet_id", name="uq_latency_table"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("ss_devices.id", ondelete="CASCADE"))
    supernet_id: Mapped[int] = mapped_column(ForeignKey("ss_supernets.id", ondelete="CASCADE"))
    digest: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    table: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class LatencyGraphRow(Base):
    """The paired latency samples of one realized graph (its structural digest) on one device, under
    one protocol's kernel options, against one reference graph (devices._paired). `ratios` get one
    list more with every window that times the graph; the reference's own row (digest == reference) also pools the
    reference's block times of every window, whose median turns ratios into milliseconds."""

    __tablename__ = "ss_latency_graphs"
    __table_args__ = (UniqueConstraint("device_id", "protocol_key", "reference", "digest", name="uq_latency_graph"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("ss_devices.id", ondelete="CASCADE"))
    protocol_key: Mapped[str] = mapped_column(String(64))
    reference: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))
    ratios: Mapped[list[list[float]]] = mapped_column(JSON)  # one list per window
    reference_ms: Mapped[list[float]] = mapped_column(JSON)
    windows: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)

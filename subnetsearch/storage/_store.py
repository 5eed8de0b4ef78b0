"""The store: one SQL URL (SQLite file by default, PostgreSQL for teams), migrated with Alembic on
open. Frozen value objects cross this boundary; ORM rows never do.

Thread safety: a Store may be shared by threads (each `session()` is its own unit of work); across
processes use PostgreSQL (SQLite serializes writers, with WAL and a busy timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from subnetsearch.devices import Device, DeviceError
from subnetsearch.storage._models import DeviceRow, EvaluationRow, SupernetRow

DEFAULT_URL = "sqlite:///subnetsearch.db"
URL_ENVIRONMENT = "SUBNETSEARCH_STORAGE"
_ALEMBIC = Path(__file__).resolve().parent / "alembic"


class StorageError(RuntimeError):
    """The store cannot be reached, or refuses an operation. Messages never contain passwords."""


def storage_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $SUBNETSEARCH_STORAGE, else a SQLite file here."""
    return url or os.environ.get(URL_ENVIRONMENT) or DEFAULT_URL


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable storage URL>"


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


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
    energy_mj: float
    energy_source: str


class Store:
    def __init__(self, url: str | None = None) -> None:
        raw = storage_url(url)
        self.url = safe_url(raw)
        self._password = None
        try:
            parsed = make_url(raw)
        except ArgumentError as error:
            raise StorageError(f"not a database URL: {self.url}") from error
        self._password = parsed.password
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = create_engine(parsed, pool_pre_ping=True)
        except Exception as error:  # missing driver, bad options
            raise StorageError(f"cannot use storage {self.url}: {type(error).__name__}") from error
        if parsed.get_backend_name() == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.upgrade()

    def upgrade(self) -> None:
        """Create or upgrade the schema in place to the newest migration."""
        config = Config()
        config.set_main_option("script_location", str(_ALEMBIC))
        try:
            with self.engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except OperationalError as error:
            reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
            raise StorageError(f"cannot open storage {self.url}: {_redact(reason, self._password)}") from None

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    # ---- devices -----------------------------------------------------------------------------
    def add_device(self, device: Device, replace: bool = False) -> Device:
        with self.session() as session:
            row = session.scalar(select(DeviceRow).where(DeviceRow.name == device.name))
            if row is not None and not replace:
                raise StorageError(f"device {device.name!r} exists already (replace it explicitly)")
            payload = device.to_dict()
            if row is None:
                row = DeviceRow(name=device.name)
                session.add(row)
            row.location, row.protocol, row.energy = payload["location"], payload["protocol"], payload["energy"]
            row.description = payload["description"]
        return device

    def get_device(self, name: str) -> Device:
        with self.session() as session:
            row = session.scalar(select(DeviceRow).where(DeviceRow.name == name))
            if row is None:
                known = session.scalars(select(DeviceRow.name).order_by(DeviceRow.name)).all()
                raise DeviceError(f"unknown device {name!r}; known devices: {list(known) or 'none'} "
                                  "(add one with `subnetsearch devices add`)")
            return _device(row)

    def list_devices(self) -> list[Device]:
        with self.session() as session:
            return [_device(row) for row in session.scalars(select(DeviceRow).order_by(DeviceRow.name))]

    def remove_device(self, name: str) -> None:
        with self.session() as session:
            row = session.scalar(select(DeviceRow).where(DeviceRow.name == name))
            if row is None:
                raise DeviceError(f"unknown device {name!r}")
            session.delete(row)

    # ---- supernets ---------------------------------------------------------------------------
    def register_supernet(self, checkpoint: Any, path: str | Path) -> SupernetRecord:
        """Record a checkpoint (idempotent: keyed by its content hash)."""
        with self.session() as session:
            row = session.scalar(select(SupernetRow).where(SupernetRow.content_hash == checkpoint.hash))
            if row is None:
                row = SupernetRow(content_hash=checkpoint.hash, family=checkpoint.arch["family"], arch=checkpoint.arch,
                                  recipe=checkpoint.recipe, data=checkpoint.data, metrics=checkpoint.metrics,
                                  checkpoint_path=str(path))
                session.add(row)
                try:
                    session.flush()
                except IntegrityError:  # registered concurrently by another process
                    session.rollback()
                    return self.register_supernet(checkpoint, path)
            return SupernetRecord(row.id, row.content_hash, row.family, row.arch, row.recipe, row.data, row.metrics,
                                  row.checkpoint_path)

    # ---- evaluations -------------------------------------------------------------------------
    def get_evaluation(self, supernet_hash: str, device: str, mode_id: str, settings_key: str) -> StoredEvaluation | None:
        with self.session() as session:
            row = session.execute(
                select(EvaluationRow, SupernetRow.content_hash, DeviceRow.name)
                .join(SupernetRow, EvaluationRow.supernet_id == SupernetRow.id)
                .join(DeviceRow, EvaluationRow.device_id == DeviceRow.id)
                .where(SupernetRow.content_hash == supernet_hash, DeviceRow.name == device,
                       EvaluationRow.mode_id == mode_id, EvaluationRow.settings_key == settings_key)).first()
            return None if row is None else _evaluation(*row)

    def put_evaluation(self, evaluation: StoredEvaluation) -> bool:
        """Insert; returns False if the same key was stored already (nothing is duplicated)."""
        with self.session() as session:
            supernet_id = session.scalar(select(SupernetRow.id).where(SupernetRow.content_hash == evaluation.supernet_hash))
            device_id = session.scalar(select(DeviceRow.id).where(DeviceRow.name == evaluation.device))
            if supernet_id is None or device_id is None:
                raise StorageError(f"register supernet {evaluation.supernet_hash[:12]} and device {evaluation.device!r} "
                                   "before storing their evaluations")
            exists = session.scalar(select(EvaluationRow.id).where(
                EvaluationRow.supernet_id == supernet_id, EvaluationRow.device_id == device_id,
                EvaluationRow.mode_id == evaluation.mode_id, EvaluationRow.settings_key == evaluation.settings_key))
            if exists is not None:
                return False
            session.add(EvaluationRow(
                supernet_id=supernet_id, device_id=device_id, mode_id=evaluation.mode_id, mode_json=evaluation.mode_json,
                settings_key=evaluation.settings_key, settings=evaluation.settings, accuracy=evaluation.accuracy,
                loss=evaluation.loss, macs=evaluation.macs, params=evaluation.params, latency_ms=evaluation.latency_ms,
                latency=evaluation.latency, energy_mj=evaluation.energy_mj, energy_source=evaluation.energy_source))
        return True

    def count_evaluations(self) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count(EvaluationRow.id))))


def _device(row: DeviceRow) -> Device:
    return Device.from_dict({"name": row.name, "location": row.location, "protocol": row.protocol,
                             "energy": row.energy, "description": row.description})


def _evaluation(row: EvaluationRow, supernet_hash: str, device: str) -> StoredEvaluation:
    return StoredEvaluation(supernet_hash, device, row.mode_id, row.mode_json, row.settings_key, row.settings,
                            row.accuracy, row.loss, row.macs, row.params, row.latency_ms, row.latency, row.energy_mj,
                            row.energy_source)


def _redact(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def settings_key(payload: dict) -> str:
    """A stable key for evaluation settings (the evaluator's cache key part)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]

"""The store: one SQL URL (SQLite file by default, PostgreSQL for teams), migrated with Alembic on
open. Frozen value objects cross this boundary; ORM rows never do.

Thread safety: a Store may be shared by threads (each `session()` is its own unit of work); across
processes use PostgreSQL (SQLite serializes writers, with WAL and a busy timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import case, create_engine, event, func, inspect, literal, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from subnetsearch.devices import KERNEL_OPTIONS, PAIRING, Device, DeviceError, GraphSamples, LatencyProtocol, NoiseProfile
from subnetsearch.errors import InputError, SubnetsearchError
from subnetsearch.pareto import nondominated
from subnetsearch.storage._fronts import ALL, COLUMNS, add_to_fronts, objective_sets
from subnetsearch.storage._graphs import StoreBook, protocol_key
from subnetsearch.storage._models import (
    DeviceRow,
    EvaluationRow,
    FrontRow,
    LatencyGraphRow,
    LatencyTableRow,
    SearchRow,
    SupernetRow,
)
from subnetsearch.storage._uncertain import Figures, Z, accuracy_interval, noise_front, sign_confidence

DEFAULT_URL = "sqlite:///subnetsearch.db"
URL_ENVIRONMENT = "SUBNETSEARCH_STORAGE"
_ALEMBIC = Path(__file__).resolve().parent / "alembic"


class StorageError(SubnetsearchError, RuntimeError):
    """The store cannot be reached, or refuses an operation. Messages never contain passwords."""


def storage_url(url: str | None = None) -> str:
    """The URL to use: the argument, else $SUBNETSEARCH_STORAGE, else a SQLite file here."""
    return url or os.environ.get(URL_ENVIRONMENT) or DEFAULT_URL


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "<unparseable storage URL>"


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_writer(connection: Any, record: Any) -> None:
    """Writers take SQLite's write lock at BEGIN (BEGIN IMMEDIATE), so a read-then-write unit of work
    (front maintenance) waits for the busy timeout instead of failing with "database is locked"
    when another process wrote in between."""
    _sqlite_pragmas(connection, record)
    connection.isolation_level = None  # SQLAlchemy's "begin" event below emits BEGIN itself


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


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
        """(objective, "max" | "min", limit) for every set constraint."""
        pairs = [("latency", "max", self.max_latency_ms), ("macs", "max", self.max_macs),
                 ("energy", "max", self.max_energy_mj), ("accuracy", "min", self.min_accuracy)]
        return [(name, kind, float(limit)) for name, kind, limit in pairs if limit is not None]

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


class Store:
    def __init__(self, url: str | None = None) -> None:
        if isinstance(url, str) and not url.strip():
            raise StorageError("the storage URL is empty: give a database URL (e.g. sqlite:///subnetsearch.db) or "
                               "leave --storage out for the default")
        raw = storage_url(url)
        self.url = safe_url(raw)
        self._password = None
        try:
            parsed = make_url(raw)
            parsed.port  # noqa: B018 -- parsed lazily: a non-numeric port fails here
        except (ArgumentError, ValueError) as error:
            raise StorageError(f"not a database URL: {self.url} ({error})") from None
        self._password = parsed.password
        uri = str(parsed.query.get("uri", "")).lower() == "true"  # file:...?mode=ro: SQLite reads the path itself
        self._sqlite_file = (Path(parsed.database) if parsed.get_backend_name() == "sqlite" and not uri
                             and parsed.database not in (None, "", ":memory:") else None)
        if self._sqlite_file is not None:
            folder = self._sqlite_file.parent
            if not folder.is_dir():  # a typo in a path should not create directories
                raise StorageError(f"cannot open storage {self.url}: directory {folder} does not exist")
        self.backend = parsed.get_backend_name()
        try:
            self.engine: Engine = create_engine(parsed, pool_pre_ping=True)
            self._write_engine = create_engine(parsed, pool_pre_ping=True) if self.backend == "sqlite" else self.engine
        except Exception as error:  # missing driver, bad options
            raise StorageError(f"cannot use storage {self.url}: {type(error).__name__}") from error
        if self.backend == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self._write_engine, "connect", _sqlite_writer)
            event.listen(self._write_engine, "begin", _begin_immediate)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)
        self.upgrade()
        self._check_optuna_schema()

    def _check_optuna_schema(self) -> None:
        """The studies live in the same database: Optuna tables written by another Optuna version are
        refused here, naming both versions, instead of failing later inside a search or a report."""
        with self.engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            if not {"version_info", "alembic_version"} <= tables:
                return  # no study yet: Optuna creates its tables on first use
            revision = connection.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
            written_by = connection.exec_driver_sql("SELECT library_version FROM version_info").scalar()
        if revision is None or written_by is None:
            # Optuna creates its tables, then its version row, then stamps its revision: a process killed
            # in between leaves a schema that is only incomplete, not another version's. Optuna finishes
            # it (the row, the stamp) the next time a study is opened; nothing to refuse here.
            return
        import optuna
        from alembic.script import ScriptDirectory

        script = ScriptDirectory(str(Path(optuna.storages.__file__).parent / "_rdb" / "alembic"))
        if revision == script.get_current_head():
            return
        if written_by == optuna.__version__:  # the same Optuna, another revision: the tables were changed by hand
            raise StorageError(f"the Optuna studies in {self.url} have revision {revision!r}, which optuna "
                               f"{optuna.__version__} (that wrote them) does not know: the store was modified by "
                               "something else; use another store")
        if revision in {r.revision for r in script.walk_revisions()}:
            raise StorageError(f"the Optuna studies in {self.url} have an older schema (optuna {written_by}) than "
                               f"optuna {optuna.__version__} uses: upgrade it with `optuna storage upgrade --storage "
                               "URL`")
        raise StorageError(f"the Optuna studies in {self.url} were written by a newer optuna ({written_by}) than this "
                           f"one ({optuna.__version__}): upgrade optuna (pip install -U optuna) or use another store")

    def upgrade(self) -> None:
        """Create or upgrade the schema in place to the newest migration."""
        config = Config()
        config.set_main_option("script_location", str(_ALEMBIC))
        try:
            with self._write_engine.begin() as connection:
                if self.backend == "postgresql":  # one migrating process at a time (SQLite: BEGIN IMMEDIATE)
                    connection.exec_driver_sql("SELECT pg_advisory_xact_lock(727274)")
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except DBAPIError as error:  # unreachable, not a database, read-only, ...
            reason = self._reason(error)
            if self._read_only(reason):
                reason += ("; the store or its folder is read-only, and SQLite writes beside the file even to read it "
                           "(its -wal and -shm files): copy it somewhere writable")
            raise StorageError(f"cannot open storage {self.url}: {reason}") from None
        except CommandError as error:  # a revision this version does not know
            raise StorageError(f"storage {self.url} has a schema this version of subnetsearch does not know "
                               f"({error}): it was migrated by a newer version; upgrade subnetsearch") from None

    @contextmanager
    def session(self, write: bool = False) -> Iterator[Session]:
        """One unit of work: committed on success, rolled back on any error. Writers say so (on
        SQLite they take the write lock at the start)."""
        try:
            with (self._write_sessions if write else self._sessions)() as session, session.begin():
                yield session
        except OperationalError as error:  # read-only, disk full, connection lost, ...: say so, no traceback
            raise StorageError(f"storage {self.url}: {self._reason(error)}") from None

    def _reason(self, error: DBAPIError) -> str:
        """The first line of the database's own message, the password masked."""
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        return _redact(reason, self._password)

    def _read_only(self, reason: str) -> bool:
        """Whether a failure to open comes from a read-only store (SQLite: its file or its folder)."""
        if "readonly" in reason.replace("-", "").lower():
            return True
        file = self._sqlite_file
        return file is not None and (not os.access(file.parent, os.W_OK | os.X_OK)
                                     or (file.exists() and not os.access(file, os.W_OK)))

    def dispose(self) -> None:
        self.engine.dispose()
        self._write_engine.dispose()

    # ---- devices -----------------------------------------------------------------------------
    def add_device(self, device: Device, replace: bool = False) -> Device:
        """Record a device; one of that name is refused unless `replace` (also when another process
        adds the same name at the same moment: the unique name decides, and the loser is told)."""
        exists = StorageError(f"device {device.name!r} exists already (replace it explicitly)")
        try:
            with self.session(write=True) as session:
                row = session.scalar(select(DeviceRow).where(DeviceRow.name == device.name))
                if row is not None and not replace:
                    raise exists
                payload = device.to_dict()
                if row is None:
                    row = DeviceRow(name=device.name)
                    session.add(row)
                row.location, row.protocol, row.energy = payload["location"], payload["protocol"], payload["energy"]
                row.description, row.roofline = payload["description"], payload["roofline"]
        except IntegrityError:  # inserted concurrently by another process
            if not replace:
                raise exists from None
            return self.add_device(device, replace=True)
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
        with self.session(write=True) as session:
            row = session.scalar(select(DeviceRow).where(DeviceRow.name == name))
            if row is None:
                raise DeviceError(f"unknown device {name!r}")
            session.delete(row)

    def graph_book(self, device: str, protocol: LatencyProtocol, reference: str) -> StoreBook:
        """The paired latency figures of `device` under `protocol`'s kernel options against the
        reference graph `reference` (a digest), shared by every user of this store."""
        self.get_device(device)
        return StoreBook(self, device, protocol, reference)

    def set_device_noise(self, name: str, noise: NoiseProfile) -> None:
        """Record a device's measured repeatability (replacing the previous one)."""
        with self.session(write=True) as session:
            row = session.scalar(select(DeviceRow).where(DeviceRow.name == name))
            if row is None:
                raise DeviceError(f"unknown device {name!r}")
            row.noise = noise.to_dict()

    def get_device_noise(self, name: str) -> NoiseProfile | None:
        self.get_device(name)
        with self.session() as session:
            return NoiseProfile.from_dict(session.scalar(select(DeviceRow.noise).where(DeviceRow.name == name)))

    # ---- supernets ---------------------------------------------------------------------------
    def register_supernet(self, checkpoint: Any, path: str | Path, preprocessing: dict | None = None) -> SupernetRecord:
        """Record a checkpoint (idempotent: keyed by its content hash), with the input preprocessing
        its data set implies if given (kept once known)."""
        with self.session(write=True) as session:
            row = session.scalar(select(SupernetRow).where(SupernetRow.content_hash == checkpoint.hash))
            if row is None:
                row = SupernetRow(content_hash=checkpoint.hash, family=checkpoint.family, arch=checkpoint.arch,
                                  recipe=checkpoint.recipe, data=checkpoint.data, metrics=checkpoint.metrics,
                                  checkpoint_path=str(path), preprocessing=preprocessing)
                session.add(row)
                try:
                    session.flush()
                except IntegrityError:  # registered concurrently by another process
                    session.rollback()
                    return self.register_supernet(checkpoint, path, preprocessing)
            elif preprocessing is not None and row.preprocessing != preprocessing:
                row.preprocessing = preprocessing
            return _supernet(row)

    # ---- evaluations -------------------------------------------------------------------------
    def get_evaluation(self, supernet_hash: str, device: str, mode_id: str, settings_key: str) -> StoredEvaluation | None:
        with self.session() as session:
            row = session.execute(_evaluations().where(
                SupernetRow.content_hash == supernet_hash, DeviceRow.name == device, EvaluationRow.mode_id == mode_id,
                EvaluationRow.settings_key == settings_key)).first()
            return None if row is None else StoredEvaluation(*row)

    def get_bn_state(self, evaluation: StoredEvaluation) -> bytes | None:
        """The BN statistics an evaluation was calibrated to (None: stored statistics, or an
        evaluation stored before they were kept)."""
        return self._blob(EvaluationRow.bn_state, evaluation)

    def get_correctness(self, evaluation: StoredEvaluation) -> bytes | None:
        """Which evaluated images the evaluation's mode classified correctly (numpy packbits in split
        order; None: stored before it was kept)."""
        return self._blob(EvaluationRow.correct, evaluation)

    def _blob(self, column: Any, evaluation: StoredEvaluation) -> bytes | None:
        """One deferred binary column of a stored evaluation."""
        with self.session() as session:
            return session.scalar(select(column)
                                  .join(SupernetRow, EvaluationRow.supernet_id == SupernetRow.id)
                                  .join(DeviceRow, EvaluationRow.device_id == DeviceRow.id).where(
                SupernetRow.content_hash == evaluation.supernet_hash, DeviceRow.name == evaluation.device,
                EvaluationRow.mode_id == evaluation.mode_id, EvaluationRow.settings_key == evaluation.settings_key))

    def put_evaluation(self, evaluation: StoredEvaluation, bn_state: bytes | None = None,
                       correct: bytes | None = None) -> bool:
        """Insert an evaluation (with the BN statistics it was calibrated to, if any) and update the
        fronts it belongs to, in one transaction. Returns
        False if the same key was stored already (nothing is duplicated). Writers of one supernet
        are serialized (row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite) so that concurrent front
        updates never miss each other."""
        with self.session(write=True) as session:
            supernet_id, device_id = _ids(session, evaluation.supernet_hash, evaluation.device, "storing their evaluations",
                                          lock=True)
            exists = session.scalar(select(EvaluationRow.id).where(
                EvaluationRow.supernet_id == supernet_id, EvaluationRow.device_id == device_id,
                EvaluationRow.mode_id == evaluation.mode_id, EvaluationRow.settings_key == evaluation.settings_key))
            if exists is not None:
                return False
            row = EvaluationRow(
                supernet_id=supernet_id, device_id=device_id, mode_id=evaluation.mode_id, mode_json=evaluation.mode_json,
                settings_key=evaluation.settings_key, settings=evaluation.settings, accuracy=evaluation.accuracy,
                loss=evaluation.loss, macs=evaluation.macs, params=evaluation.params, latency_ms=evaluation.latency_ms,
                latency=evaluation.latency, energy_mj=evaluation.energy_mj, energy_source=evaluation.energy_source,
                energy_measured_mj=evaluation.energy_measured_mj, cost_profile=evaluation.cost_profile,
                bn_state=bn_state, correct=correct, accuracy_samples=evaluation.accuracy_samples)
            session.add(row)
            session.flush()
            add_to_fronts(session.connection(), {
                "id": row.id, "supernet_id": supernet_id, "device_id": device_id, "settings_key": row.settings_key,
                "settings": row.settings, "accuracy": row.accuracy, "latency_ms": row.latency_ms, "latency": row.latency,
                "macs": row.macs,
                "energy_mj": row.energy_mj})
        return True

    def count_evaluations(self) -> int:
        with self.session() as session:
            return int(session.scalar(select(func.count(EvaluationRow.id))) or 0)

    def list_evaluations(self, device: str, supernet_hash: str | None = None) -> list[StoredEvaluation]:
        """Every stored evaluation on a device (optionally of one supernet), oldest first."""
        self.get_device(device)
        query = _evaluations().where(DeviceRow.name == device).order_by(EvaluationRow.id)
        if supernet_hash is not None:
            query = query.where(SupernetRow.content_hash == supernet_hash)
        with self.session() as session:
            return [StoredEvaluation(*row) for row in session.execute(query)]

    def find_evaluations(self, device: str, mode_id: str, supernet_hash: str | None = None) -> list[StoredEvaluation]:
        """Stored evaluations of a mode (id or unique prefix) on a device, front members and
        validation-split ones first, then the newest."""
        self.get_device(device)
        in_front = select(FrontRow.id).where(FrontRow.evaluation_id == EvaluationRow.id).exists()
        query = (_evaluations().add_columns(EvaluationRow.id, in_front)
                 .where(DeviceRow.name == device, EvaluationRow.mode_id.startswith(mode_id, autoescape=True)))
        if supernet_hash is not None:
            query = query.where(SupernetRow.content_hash.startswith(supernet_hash, autoescape=True))
        with self.session() as session:
            rows = session.execute(query).all()
        found = [(StoredEvaluation(*row[:-2]), row[-2], row[-1]) for row in rows]
        if len({evaluation.mode_id for evaluation, _, _ in found}) > 1:
            raise StorageError(f"mode id prefix {mode_id!r} matches several modes on {device}: give more characters")
        found.sort(key=lambda f: (not f[2], f[0].settings.get("split", "val") != "val", -f[1]))
        return [evaluation for evaluation, _, _ in found]

    # ---- latency lookup tables ---------------------------------------------------------------------
    def put_latency_table(self, device: str, supernet_hash: str, table: dict, digest: str, source: str) -> None:
        """Keep (or replace) the lookup table of a device for a supernet ("measured" or "imported")."""
        with self.session(write=True) as session:
            supernet_id, device_id = _ids(session, supernet_hash, device, "storing their table")
            row = session.scalar(select(LatencyTableRow).where(LatencyTableRow.device_id == device_id,
                                                               LatencyTableRow.supernet_id == supernet_id))
            if row is None:
                row = LatencyTableRow(device_id=device_id, supernet_id=supernet_id)
                session.add(row)
            row.table, row.digest, row.source = table, digest, source

    def get_latency_table(self, device: str, supernet_hash: str) -> tuple[dict, str] | None:
        """(table, source) for a device and supernet, or None."""
        with self.session() as session:
            row = session.execute(
                select(LatencyTableRow.table, LatencyTableRow.source)
                .join(DeviceRow, LatencyTableRow.device_id == DeviceRow.id)
                .join(SupernetRow, LatencyTableRow.supernet_id == SupernetRow.id)
                .where(DeviceRow.name == device, SupernetRow.content_hash == supernet_hash)).first()
            return None if row is None else (row[0], row[1])

    # ---- supernets, searches ---------------------------------------------------------------------
    def list_supernets(self) -> list[SupernetRecord]:
        with self.session() as session:
            return [_supernet(row) for row in session.scalars(select(SupernetRow).order_by(SupernetRow.id))]

    def get_supernet(self, content_hash: str) -> SupernetRecord:
        """By full content hash or a unique prefix of it."""
        with self.session() as session:
            prefix = SupernetRow.content_hash.startswith(content_hash, autoescape=True)
            rows = session.scalars(select(SupernetRow).where(prefix).limit(2)).all()
            if len(rows) != 1:
                problem = "no stored supernet" if not rows else "more than one stored supernet"
                raise StorageError(f"{problem} has a content hash starting with {content_hash!r}")
            return _supernet(rows[0])

    def start_search(self, name: str, strategy: str, supernet_hash: str, device: str | None, space: dict,
                     settings: dict, study_name: str) -> tuple[SearchRecord, bool]:
        """Record a new search, or resume the one of that name. Returns (record, resumed). A name
        already used by a different search (other strategy, supernet, device or settings) is refused.
        `device` None: a training-time search (accuracy and MACs; no device)."""
        if not name or len(name) > 200:
            raise StorageError("a search name must have 1 to 200 characters")
        with self.session(write=True) as session:
            if device is None:
                supernet_id = session.scalar(select(SupernetRow.id).where(SupernetRow.content_hash == supernet_hash))
                if supernet_id is None:
                    raise StorageError(f"supernet {supernet_hash[:12]} is not registered; register it before "
                                       "searching it")
                device_id = None
            else:
                supernet_id, device_id = _ids(session, supernet_hash, device, "searching them")
            row = session.scalar(select(SearchRow).where(SearchRow.name == name))
            if row is not None:
                same = (row.strategy, row.supernet_id, row.device_id, row.settings) == \
                       (strategy, supernet_id, device_id, settings)
                if not same:
                    raise StorageError(f"search {name!r} exists already with other settings ({row.strategy}); "
                                       "give this search another --name")
                row.status, row.finished_at = "running", None
                resumed = True
            else:
                row = SearchRow(name=name, strategy=strategy, supernet_id=supernet_id, device_id=device_id, space=space,
                                settings=settings, status="running", study_name=study_name, summary={})
                session.add(row)
                resumed = False
            session.flush()
            return self._search(session, row), resumed

    def finish_search(self, name: str, status: str, summary: dict) -> SearchRecord:
        if status not in ("finished", "failed", "interrupted"):
            raise InputError(f"status must be finished, failed or interrupted, got {status!r}")
        with self.session(write=True) as session:
            row = session.scalar(select(SearchRow).where(SearchRow.name == name))
            if row is None:
                raise StorageError(f"unknown search {name!r}")
            row.status, row.summary, row.finished_at = status, summary, datetime.now(UTC)
            return self._search(session, row)

    def get_search(self, name: str) -> SearchRecord | None:
        with self.session() as session:
            row = session.scalar(select(SearchRow).where(SearchRow.name == name))
            return None if row is None else self._search(session, row)

    def list_searches(self, device: str | None = None) -> list[SearchRecord]:
        with self.session() as session:
            query = select(SearchRow).order_by(SearchRow.id)
            if device is not None:
                query = query.join(DeviceRow, SearchRow.device_id == DeviceRow.id).where(DeviceRow.name == device)
            return [self._search(session, row) for row in session.scalars(query)]

    @staticmethod
    def _search(session: Session, row: SearchRow) -> SearchRecord:
        supernet_hash = session.scalars(select(SupernetRow.content_hash).where(SupernetRow.id == row.supernet_id)).one()
        device = (None if row.device_id is None else
                  session.scalar(select(DeviceRow.name).where(DeviceRow.id == row.device_id)))
        return SearchRecord(row.name, row.strategy, supernet_hash, device, row.space, row.settings, row.status,
                            row.study_name, row.summary, row.started_at, row.finished_at)

    # ---- fronts and the best-mode query -----------------------------------------------------------
    @staticmethod
    def _front_rows(device: str, objectives: str, supernet_hash: str | None, *conditions: Any) -> Any:
        query = (select(*_EVALUATION_COLUMNS)  # joined through the front row: its index is what makes this fast
                 .join(FrontRow, FrontRow.evaluation_id == EvaluationRow.id)
                 .join(SupernetRow, SupernetRow.id == FrontRow.supernet_id)
                 .join(DeviceRow, DeviceRow.id == FrontRow.device_id)
                 .where(DeviceRow.name == device, FrontRow.objectives == objectives, *conditions))
        if supernet_hash is not None:
            query = query.where(SupernetRow.content_hash == supernet_hash)
        return query

    def get_front(self, device: str, objectives: str = "accuracy,latency",
                  supernet_hash: str | None = None, noise_aware: bool = True) -> list[StoredEvaluation]:
        """The stored front of a device for an objective set, merged across supernets and evaluation
        settings (a mode another stored front dominates is left out), sorted by its cost. Noise-aware
        (`_uncertain`): a mode equal to a better one within the figures' intervals is left out, and
        paired latencies are read as the store knows them now (`refresh_latency`)."""
        self.get_device(device)  # unknown device: a clear error
        if objectives not in objective_sets(True):
            raise InputError(f"unknown objective set {objectives!r}; choose from {sorted(objective_sets(True))}")
        with self.session() as session:
            rows = [StoredEvaluation(*row) for row in session.execute(self._front_rows(device, objectives, supernet_hash))]
        if not rows:
            return []
        names = objective_sets(all(r.latency_ms is not None for r in rows))[ALL] if objectives == ALL \
            else tuple(objectives.split(","))
        rows = [r for r in rows if all(r.objective(n) is not None for n in names)]
        mask = nondominated([[float(r.objective(n) or 0.0) for n in names] for r in rows], names)  # none is None here
        merged = [r for r, keep in zip(rows, mask, strict=True) if keep]
        if noise_aware:
            merged = self._noise_front(merged, names)
        return sorted(merged, key=lambda r: tuple(r.objective(n) for n in names[1:]) + (-r.accuracy, r.mode_id))

    # ---- figures with their intervals -------------------------------------------------------------
    def refresh_latency(self, rows: Sequence[StoredEvaluation]) -> list[StoredEvaluation]:
        """The evaluations with their paired latency as the store knows it now: each graph's ratio
        over every window measured for it (later windows narrow it), times the reference's pooled
        median now. Unpaired and predicted figures are returned as stored."""
        wanted: dict[tuple[str, str, str], set[str]] = {}
        for row in rows:
            paired = (row.latency or {}).get("paired")
            if paired:
                key = (row.device, protocol_key(_protocol_of(row.latency or {})), paired["reference"])
                wanted.setdefault(key, set()).update({paired["graph"], paired["reference"]})
        if not wanted:
            return list(rows)
        graphs: dict[tuple[str, str, str, str], LatencyGraphRow] = {}
        with self.session() as session:
            for (device, options, reference), digests in wanted.items():
                query = (select(LatencyGraphRow).join(DeviceRow, DeviceRow.id == LatencyGraphRow.device_id)
                         .where(DeviceRow.name == device, LatencyGraphRow.protocol_key == options,
                                LatencyGraphRow.reference == reference, LatencyGraphRow.digest.in_(digests)))
                for found in session.scalars(query):
                    graphs[(device, options, reference, found.digest)] = found
        between = {}  # each device's between-window factor (its noise profile), widening one-window figures
        for device in {row.device for row in rows}:
            noise = self.get_device_noise(device)
            between[device] = noise.between if noise is not None else 1.0
        refreshed = []
        for row in rows:
            paired = (row.latency or {}).get("paired")
            if not paired:
                refreshed.append(row)
                continue
            key = (row.device, protocol_key(_protocol_of(row.latency or {})), paired["reference"])
            pool = graphs.get((*key, paired["reference"]))
            graph = graphs.get((*key, paired["graph"]))
            if pool is None or not pool.reference_ms:
                refreshed.append(row)
                continue
            pooled = statistics.median(pool.reference_ms)
            confidence = paired.get("pairing", {}).get("confidence", PAIRING.confidence)
            if paired["graph"] == paired["reference"]:
                ratio, low, high, achieved, count, windows = 1.0, 1.0, 1.0, 1.0, paired.get("ratios", 0), 0
            elif graph is not None and graph.ratios:
                samples = GraphSamples(tuple(tuple(window) for window in graph.ratios))
                ratio, low, high, achieved = samples.figure(confidence, between.get(row.device, 1.0))
                count, windows = len(samples.ratios), samples.windows
            else:
                refreshed.append(row)
                continue
            latency = {**(row.latency or {}), "ms": ratio * pooled, "interval_ms": [low * pooled, high * pooled],
                       "paired": {**paired, "ratio": ratio, "low": low, "high": high, "confidence": achieved,
                                  "ratios": count, "windows": windows, "reference_ms": pooled,
                                  "reference_blocks": len(pool.reference_ms)}}
            refreshed.append(replace(row, latency_ms=ratio * pooled, latency=latency))
        return refreshed

    def figures(self, rows: Sequence[StoredEvaluation], correct: Sequence[bytes | None] | None = None) -> list[Figures]:
        """Each evaluation's objective values with their intervals (see `_uncertain`)."""
        figures = []
        for index, row in enumerate(rows):
            values = {name: float(value) for name in COLUMNS if (value := row.objective(name)) is not None}
            low, high = dict(values), dict(values)
            low["accuracy"], high["accuracy"] = accuracy_interval(row.accuracy, row.accuracy_samples)
            interval = (row.latency or {}).get("interval_ms")
            if interval and "latency" in values:
                low["latency"], high["latency"] = float(interval[0]), float(interval[1])
            packed = correct[index] if correct is not None else None
            bits = (np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=row.accuracy_samples).astype(bool)
                    if packed is not None and row.accuracy_samples else None)
            figures.append(Figures(values, low, high, bits))
        return figures

    def _noise_front(self, rows: Sequence[StoredEvaluation], names: Sequence[str]) -> list[StoredEvaluation]:
        rows = self.refresh_latency(rows)
        correct = [self.get_correctness(row) for row in rows]
        mask = noise_front(self.figures(rows, correct), names)
        return [row for row, keep in zip(rows, mask, strict=True) if keep]

    def best_mode(self, device: str, budget: Budget = Budget(), objective: str = "accuracy",
                  supernet_hash: str | None = None, closest: int = 3) -> BestMode:
        """The stored mode that optimizes `objective` among those that meet `budget` on `device` with
        stated confidence (`BUDGET_RULE`), from the device's "all" front (see `_fronts`; figures with
        their intervals, `_uncertain`): one indexed lookup of the front rows, whatever the number of
        evaluations. Ties
        are broken by accuracy, then MACs, then mode id. `confidence` says, per constrained
        objective, how sure the answer is."""
        if objective not in COLUMNS:
            raise InputError(f"unknown objective {objective!r}; choose from {sorted(COLUMNS)}")
        self.get_device(device)  # an unknown device is an error, not an empty answer
        with self.session() as session:
            rows = [StoredEvaluation(*row) for row in session.execute(self._front_rows(device, ALL, supernet_hash))]
        if not rows:
            return BestMode(device, objective, budget, None, (), 0, BUDGET_RULE)
        names = objective_sets(all(r.latency_ms is not None for r in rows))[ALL]
        rows = [r for r in rows if all(r.objective(n) is not None for n in names)]
        mask = nondominated([[float(r.objective(n) or 0.0) for n in names] for r in rows], names)
        # every Pareto-optimal mode is a candidate, not only the noise-aware front's: a mode left off
        # it for one equal within noise may be the one whose interval fits the budget
        front = self.refresh_latency([r for r, keep in zip(rows, mask, strict=True) if keep])
        figures = {id(row): figure for row, figure in zip(front, self.figures(front), strict=True)}

        def meets(row: StoredEvaluation) -> bool:
            figure = figures[id(row)]
            for name, kind, limit in budget.limits():
                if name not in figure.values:
                    return False
                if (kind == "max" and figure.high[name] > limit) or (kind == "min" and figure.low[name] < limit):
                    return False
            return True

        def order(row: StoredEvaluation) -> tuple:
            value = float(row.objective(objective) or 0.0)
            return (-value if objective == "accuracy" else value, -row.accuracy, row.macs, row.mode_id)

        feasible = sorted((row for row in front if meets(row)), key=order)
        if feasible:
            best = feasible[0]
            return BestMode(device, objective, budget, best, (), None, BUDGET_RULE, self._confidence(best, budget))
        nearest = sorted(front, key=lambda r: (budget.violation(r), -r.accuracy, r.macs, r.mode_id))[:closest]
        return BestMode(device, objective, budget, None, tuple(nearest), len(front), BUDGET_RULE)

    def _confidence(self, evaluation: StoredEvaluation, budget: Budget) -> dict:
        """Per constrained objective: how sure it is that the mode meets that limit."""
        answer: dict = {}
        for name, _kind, limit in budget.limits():
            if name in ("macs", "energy"):
                answer[name] = {"confidence": 1.0, "how": "exact (analytical model)"}
            elif name == "accuracy":
                low, _ = accuracy_interval(evaluation.accuracy, evaluation.accuracy_samples)
                answer[name] = {"confidence": 0.975 if evaluation.accuracy_samples else None, "low": low,
                                "how": f"lower end of the 95 % binomial interval over {evaluation.accuracy_samples} "
                                       "validation images" if evaluation.accuracy_samples else "no interval stored"}
            elif name == "latency":
                answer[name] = self._latency_confidence(evaluation, limit)
        return answer

    def _latency_confidence(self, evaluation: StoredEvaluation, limit: float) -> dict:
        latency = evaluation.latency or {}
        paired = latency.get("paired")
        if not paired:
            return {"confidence": None, "how": "unpaired figure (measured alone in its window): no interval"}
        if paired["graph"] == paired["reference"]:
            return {"confidence": 1.0 if paired["reference_ms"] <= limit else 0.0,
                    "how": "the reference graph: its pooled median is the figure"}
        book = StoreBook(self, evaluation.device, _protocol_of(latency), paired["reference"])
        samples = book.get(paired["graph"])
        if samples is None:
            return {"confidence": None, "how": "its graph's samples are not in this store"}
        pooled = paired["reference_ms"]
        # windows are the independent samples (GraphSamples); within a single window, its ratios
        units = samples.window_medians if samples.windows > 1 else samples.ratios
        what = f"{samples.windows} windows' median ratios" if samples.windows > 1 else \
            f"the {len(units)} paired ratios of its one window (the host's between-window drift not included)"
        return {"confidence": sign_confidence([ratio * pooled for ratio in units], limit),
                "interval_ms": latency.get("interval_ms"),
                "how": f"sign test over {what}, times the reference's pooled median {pooled:.4f} ms"}


BUDGET_RULE = ("a mode meets a latency or energy or MACs budget when the upper end of its interval is within it "
               "(paired latency: 95 % order-statistic interval; MACs and energy exact) and an accuracy floor when "
               f"the lower end of its 95 % binomial interval (z = {Z}) is above it")


def _protocol_of(latency: dict) -> LatencyProtocol:
    """The kernel options a stored latency was measured under."""
    return LatencyProtocol(**{key: latency[key] for key in KERNEL_OPTIONS if key in latency})


def _supernet(row: SupernetRow) -> SupernetRecord:
    return SupernetRecord(row.id, row.content_hash, row.family, row.arch, row.recipe, row.data, row.metrics,
                          row.checkpoint_path, row.preprocessing)


def _device(row: DeviceRow) -> Device:
    return Device.from_dict({"name": row.name, "location": row.location, "protocol": row.protocol,
                             "energy": row.energy, "description": row.description, "roofline": row.roofline})


def _violation(column: Any, kind: str, limit: float) -> Any:
    """SQL for the relative violation of one budget (as `Budget.violation`); unknown values violate."""
    excess = column - limit if kind == "max" else limit - column
    return case((column.is_(None), literal(1e9)), (excess > 0, excess / abs(limit or 1e-12)), else_=literal(0.0))


_EVALUATION_COLUMNS = (SupernetRow.content_hash, DeviceRow.name, EvaluationRow.mode_id, EvaluationRow.mode_json,
                       EvaluationRow.settings_key, EvaluationRow.settings, EvaluationRow.accuracy, EvaluationRow.loss,
                       EvaluationRow.macs, EvaluationRow.params, EvaluationRow.latency_ms, EvaluationRow.latency,
                       EvaluationRow.energy_mj, EvaluationRow.energy_source, EvaluationRow.energy_measured_mj,
                       EvaluationRow.cost_profile, EvaluationRow.accuracy_samples)


def _evaluations() -> Any:
    """SELECT of every StoredEvaluation field (in field order) with its supernet and device joined."""
    return (select(*_EVALUATION_COLUMNS).join(SupernetRow, EvaluationRow.supernet_id == SupernetRow.id)
            .join(DeviceRow, EvaluationRow.device_id == DeviceRow.id))


def _ids(session: Session, supernet_hash: str, device: str, purpose: str, lock: bool = False) -> tuple[int, int]:
    """The row ids of a registered supernet and device (`lock`: row-lock the supernet, serializing
    its writers on PostgreSQL)."""
    query = select(SupernetRow.id).where(SupernetRow.content_hash == supernet_hash)
    supernet_id = session.scalar(query.with_for_update() if lock else query)
    device_id = session.scalar(select(DeviceRow.id).where(DeviceRow.name == device))
    if supernet_id is None or device_id is None:
        raise StorageError(f"register supernet {supernet_hash[:12]} and device {device!r} before {purpose}")
    return supernet_id, device_id


def _redact(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text


def settings_key(payload: dict) -> str:
    """A stable key for evaluation settings (the evaluator's cache key part)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]

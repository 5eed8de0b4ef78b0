"""The store's records: devices, supernets, evaluations (with their BN state and correctness
vectors), latency tables and searches, read and written in one session each."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from subnetsearch.devices import Device, DeviceError, LatencyProtocol, NoiseProfile
from subnetsearch.errors import InputError
from subnetsearch.storage._engine import StorageError, StoreEngine
from subnetsearch.storage._fronts import add_to_fronts
from subnetsearch.storage._graphs import StoreBook
from subnetsearch.storage._models import (
    DeviceRow,
    EvaluationRow,
    FrontRow,
    LatencyTableRow,
    SearchRow,
    SupernetRow,
)
from subnetsearch.storage._records import SearchRecord, StoredEvaluation, SupernetRecord


class RecordStore(StoreEngine):
    """A store's records (`Store` adds its fronts and the best-mode query)."""

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
        """Stored evaluations of a mode (id or unique prefix) on a device, the one to show or export
        first: front members, then full-fidelity ones (a cheap first look last), validation-split
        ones, then the most accurate (of one mode, evaluation settings differ in how its BN
        statistics were set: the calibrated ones, not the stored-statistics column of a nested
        supernet, are what the tables and `best` show), then the newest."""
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
        found.sort(key=lambda f: (not f[2], f[0].settings.get("fidelity") == "low",
                                  f[0].settings.get("split", "val") != "val", -f[0].accuracy, -f[1]))
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


def _supernet(row: SupernetRow) -> SupernetRecord:
    return SupernetRecord(row.id, row.content_hash, row.family, row.arch, row.recipe, row.data, row.metrics,
                          row.checkpoint_path, row.preprocessing)


def _device(row: DeviceRow) -> Device:
    return Device.from_dict({"name": row.name, "location": row.location, "protocol": row.protocol,
                             "energy": row.energy, "description": row.description, "roofline": row.roofline})

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

def settings_key(payload: dict) -> str:
    """A stable key for evaluation settings (the evaluator's cache key part)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]

"""The store's graph book: paired latency samples per realized graph (table ss_latency_graphs), shared
by every process and search that uses the store, so a graph measured once is measured for all."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from sqlalchemy import select

from subnetsearch.devices import KERNEL_OPTIONS, GraphBook, GraphSamples, LatencyProtocol, PairedWindow
from subnetsearch.errors import InputError
from subnetsearch.storage._models import DeviceRow, LatencyGraphRow

if TYPE_CHECKING:
    from subnetsearch.storage._store import RecordStore

POOL_LIMIT = 20_000  # reference blocks kept per device and reference (the most recent): ~0.4 MB of JSON


def protocol_key(protocol: LatencyProtocol) -> str:
    """The protocol's kernel options (what runs, not how long it is timed) as a key."""
    options = {key: getattr(protocol, key) for key in KERNEL_OPTIONS}
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:32]


def _samples(row: LatencyGraphRow) -> GraphSamples:
    """A row's ratios: one list per window."""
    return GraphSamples(tuple(tuple(window) for window in row.ratios))


class StoreBook(GraphBook):
    """The figures of one device, protocol and reference graph in a store. Each `add` is one
    transaction that locks the graph's row and the reference's row (PostgreSQL: SELECT FOR UPDATE;
    SQLite: the write lock), so concurrent windows from several workers are all kept."""

    def __init__(self, store: RecordStore, device: str, protocol: LatencyProtocol, reference: str) -> None:
        self.store, self.device, self.reference = store, device, reference
        self.key = protocol_key(protocol)

    def _device_id(self, session: object) -> int:
        device_id = session.scalar(select(DeviceRow.id).where(DeviceRow.name == self.device))  # type: ignore[attr-defined]
        if device_id is None:
            raise InputError(f"unknown device {self.device!r}")
        return int(device_id)

    def _where(self, device_id: int, digest: str) -> object:
        return select(LatencyGraphRow).where(
            LatencyGraphRow.device_id == device_id, LatencyGraphRow.protocol_key == self.key,
            LatencyGraphRow.reference == self.reference, LatencyGraphRow.digest == digest)

    def get(self, digest: str) -> GraphSamples | None:
        with self.store.session() as session:
            row = session.scalar(self._where(self._device_id(session), digest))  # type: ignore[call-overload]
            return None if row is None or not row.ratios else _samples(row)

    def _row(self, session: object, device_id: int, digest: str) -> LatencyGraphRow:
        row = session.scalar(self._where(device_id, digest).with_for_update())  # type: ignore[attr-defined]
        if row is None:
            row = LatencyGraphRow(device_id=device_id, protocol_key=self.key, reference=self.reference, digest=digest,
                                  ratios=[], reference_ms=[], windows=0)
            session.add(row)  # type: ignore[attr-defined]
            session.flush()  # type: ignore[attr-defined]
        return row

    def add(self, digest: str, window: PairedWindow) -> GraphSamples:
        with self.store.session(write=True) as session:
            device_id = self._device_id(session)
            reference = self._row(session, device_id, self.reference)
            row = reference if digest == self.reference else self._row(session, device_id, digest)
            # JSON columns are replaced, not mutated in place (SQLAlchemy tracks assignment)
            row.ratios, row.windows = [*row.ratios, list(window.ratios)], row.windows + 1
            reference.reference_ms = [*reference.reference_ms, *window.reference_ms][-POOL_LIMIT:]
            return _samples(row)

    def reference_ms(self) -> tuple[float, ...]:
        with self.store.session() as session:
            row = session.scalar(self._where(self._device_id(session), self.reference))  # type: ignore[call-overload]
            return () if row is None else tuple(row.reference_ms)

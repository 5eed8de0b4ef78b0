"""Maintenance of the stored Pareto fronts (table ss_fronts), in SQLAlchemy Core so that the same
code serves the store (one new evaluation at a time) and migration 0002 (all stored evaluations).

A front is kept per (supernet, device, evaluation settings) and objective set. "all" is accuracy
plus every cost the evaluations have (latency only where it was measured): the mode that is best
under any budgets on latency / MACs / energy / accuracy, for any of those objectives, is always on
the "all" front, so the best-mode query reads only that front. Test-split evaluations never enter
a front (selection uses validation data only), nor do low-fidelity ones (a multi-fidelity search's
cheap first looks).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from subnetsearch.pareto import OBJECTIVES, nondominated

COLUMNS = {name: objective.column for name, objective in OBJECTIVES.items()}
PAIRS = ("accuracy,latency", "accuracy,macs", "accuracy,energy")
ALL = "all"

# The tables as of revision 0002 (the columns this module reads and writes).
evaluations = sa.table("ss_evaluations", sa.column("id"), sa.column("supernet_id"), sa.column("device_id"),
                       sa.column("settings_key"), sa.column("settings", sa.JSON), sa.column("accuracy"),
                       sa.column("latency_ms"), sa.column("macs"), sa.column("energy_mj"))
# with revision 0001's latency JSON, which `evaluations` (selected whole by migration 0002) leaves out
current = sa.table("ss_evaluations", *(sa.column(c.name, c.type) for c in evaluations.c), sa.column("latency", sa.JSON))
fronts = sa.table("ss_fronts", sa.column("id"), sa.column("supernet_id"), sa.column("device_id"),
                  sa.column("settings_key"), sa.column("objectives"), sa.column("evaluation_id"))


def objective_sets(has_latency: bool) -> dict[str, tuple[str, ...]]:
    """The objective sets a front is kept for, given whether latency was measured."""
    sets = {name: tuple(name.split(",")) for name in PAIRS if has_latency or "latency" not in name}
    sets[ALL] = ("accuracy", "latency", "macs", "energy") if has_latency else ("accuracy", "macs", "energy")
    return sets


def selects(settings: Mapping) -> bool:
    """Whether an evaluation may enter a front: validation data, full fidelity (a multi-fidelity
    search's cheap first looks are kept, never compared with the figures a front rests on)."""
    return settings.get("split", "val") == "val" and settings.get("fidelity", "full") == "full"


def _vector(row: Mapping, objectives: Sequence[str]) -> list[float]:
    """The objective values a front compares. A paired latency is compared by its ratio to the
    device's reference (all members of one front share the reference): its value in ms moves with
    the reference's pooled median as windows are added, its ratio does not."""
    paired = (row.get("latency") or {}).get("paired") if "latency" in row else None
    return [float(paired["ratio"]) if name == "latency" and paired else float(row[COLUMNS[name]])
            for name in objectives]


def add_to_fronts(connection: Connection, evaluation: Mapping) -> list[str]:
    """Insert one new evaluation (a mapping of ss_evaluations columns, with its id) into its fronts:
    a dominated evaluation is not added; one that dominates members evicts them. The caller holds a
    lock that serializes writers of this supernet. Returns the objective sets it joined."""
    if not selects(evaluation["settings"]):
        return []
    key = (fronts.c.supernet_id == evaluation["supernet_id"]) & (fronts.c.device_id == evaluation["device_id"]) & \
          (fronts.c.settings_key == evaluation["settings_key"])
    joined = []
    for name, objectives in objective_sets(evaluation["latency_ms"] is not None).items():
        members = connection.execute(
            sa.select(fronts.c.id, current.c.latency, *(current.c[COLUMNS[o]] for o in objectives))
            .join(current, current.c.id == fronts.c.evaluation_id)
            .where(key, fronts.c.objectives == name)).mappings().all()
        mask = nondominated([_vector(m, objectives) for m in members] + [_vector(evaluation, objectives)], objectives)
        if not mask[-1]:
            continue
        evicted = [m["id"] for m, keep in zip(members, mask[:-1], strict=True) if not keep]
        if evicted:
            connection.execute(sa.delete(fronts).where(fronts.c.id.in_(evicted)))
        connection.execute(sa.insert(fronts).values(
            supernet_id=evaluation["supernet_id"], device_id=evaluation["device_id"],
            settings_key=evaluation["settings_key"], objectives=name, evaluation_id=evaluation["id"]))
        joined.append(name)
    return joined


def rebuild_fronts(connection: Connection, supernet_id: int | None = None, device_id: int | None = None) -> int:
    """Recompute fronts from all stored evaluations (optionally of one supernet / device).
    Returns the number of front rows written."""
    where = []
    if supernet_id is not None:
        where.append(current.c.supernet_id == supernet_id)
    if device_id is not None:
        where.append(current.c.device_id == device_id)
    stale = sa.delete(fronts)
    if supernet_id is not None:
        stale = stale.where(fronts.c.supernet_id == supernet_id)
    if device_id is not None:
        stale = stale.where(fronts.c.device_id == device_id)
    connection.execute(stale)
    groups: dict[tuple, list] = defaultdict(list)
    for row in connection.execute(sa.select(current).where(*where)).mappings():
        if selects(row["settings"]):
            groups[(row["supernet_id"], row["device_id"], row["settings_key"], row["latency_ms"] is not None)].append(row)
    written = 0
    for (supernet, device, key, has_latency), rows in groups.items():
        for name, objectives in objective_sets(has_latency).items():
            mask = nondominated([_vector(r, objectives) for r in rows], objectives)
            members = [{"supernet_id": supernet, "device_id": device, "settings_key": key, "objectives": name,
                        "evaluation_id": r["id"]} for r, keep in zip(rows, mask, strict=True) if keep]
            if members:
                connection.execute(sa.insert(fronts), members)
                written += len(members)
    return written

"""Fronts, searches and the best-mode query, on SQLite and PostgreSQL."""

import random

import numpy as np
import pytest
from sqlalchemy import create_engine, inspect

from subnetsearch.devices import Device, DeviceError
from subnetsearch.pareto import nondominated
from subnetsearch.storage import Budget, StorageError, Store, StoredEvaluation


def evaluation(supernet_hash: str, mode: str, accuracy: float, latency: float | None, macs: int, energy: float,
               device: str = "dev-a", split: str = "val", key: str = "k1") -> StoredEvaluation:
    return StoredEvaluation(supernet_hash, device, mode, f'{{"values":{{"m":"{mode}"}}}}', key, {"split": split},
                            accuracy, 0.5, macs, 1000, latency, None if latency is None else {"measured": True},
                            energy, "model")


def front_ids(store: Store, device: str, objectives: str) -> list[str]:
    return sorted(e.mode_id for e in store.get_front(device, objectives))


def test_a_dominating_mode_evicts_and_a_dominated_one_is_not_added(stored) -> None:
    store, h = stored
    store.put_evaluation(evaluation(h, "a", 0.90, 2.0, 200, 2.0))
    store.put_evaluation(evaluation(h, "b", 0.80, 1.0, 100, 1.0))
    assert front_ids(store, "dev-a", "accuracy,latency") == ["a", "b"]
    store.put_evaluation(evaluation(h, "c", 0.79, 1.5, 150, 1.5))  # dominated by b
    assert front_ids(store, "dev-a", "accuracy,latency") == ["a", "b"]
    store.put_evaluation(evaluation(h, "d", 0.92, 1.8, 300, 3.0))  # dominates a on (accuracy, latency) only
    assert front_ids(store, "dev-a", "accuracy,latency") == ["b", "d"]
    assert front_ids(store, "dev-a", "accuracy,macs") == ["a", "b", "d"]
    assert front_ids(store, "dev-a", "all") == ["a", "b", "d"]
    store.put_evaluation(evaluation(h, "t", 0.99, 0.1, 1, 0.1, split="test"))  # the test split never selects
    assert "t" not in front_ids(store, "dev-a", "all")
    assert store.count_evaluations() == 5


def test_fronts_match_a_rebuild_and_brute_force_after_random_inserts(stored, check_fronts) -> None:
    store, h = stored
    rng = random.Random(1)
    points = {}
    for i in range(60):
        acc, lat = round(rng.uniform(0.5, 0.95), 2), round(rng.uniform(0.5, 3.0), 1)  # rounding makes ties
        points[f"m{i}"] = (acc, lat)
        store.put_evaluation(evaluation(h, f"m{i}", acc, lat, int(lat * 100), lat * 2))
    names = list(points)
    mask = nondominated([points[n] for n in names], ["accuracy", "latency"])
    expected = sorted(n for n, keep in zip(names, mask, strict=True) if keep)
    assert front_ids(store, "dev-a", "accuracy,latency") == expected
    for name in names:  # brute force: nothing on the front is dominated, everything off it is
        dominated = any(points[o][0] >= points[name][0] and points[o][1] <= points[name][1] and points[o] != points[name]
                        for o in names)
        assert (name in expected) == (not dominated)
    check_fronts(store)


def test_devices_without_measured_latency_keep_cost_fronts(stored) -> None:
    store, h = stored
    store.put_evaluation(evaluation(h, "x", 0.9, None, 200, 2.0, device="dev-b"))
    store.put_evaluation(evaluation(h, "y", 0.8, None, 100, 1.0, device="dev-b"))
    assert front_ids(store, "dev-b", "accuracy,macs") == ["x", "y"]
    assert store.get_front("dev-b", "accuracy,latency") == []
    assert store.get_front("dev-a", "accuracy,macs") == []  # fronts are per device
    answer = store.best_mode("dev-b", Budget(max_latency_ms=5.0))
    assert answer.best is None and answer.front_size == 2  # latency unknown there: nothing satisfies a latency budget


def test_best_mode_under_budgets_and_objectives(stored) -> None:
    store, h = stored
    for mode, acc, lat, macs, energy in [("big", 0.93, 3.0, 300, 3.0), ("mid", 0.90, 1.5, 150, 1.6),
                                         ("small", 0.85, 0.8, 60, 0.7), ("tiny", 0.70, 0.5, 20, 0.3)]:
        store.put_evaluation(evaluation(h, mode, acc, lat, macs, energy))
    assert store.best_mode("dev-a").best.mode_id == "big"
    assert store.best_mode("dev-a", Budget(max_latency_ms=2.0)).best.mode_id == "mid"
    assert store.best_mode("dev-a", Budget(max_latency_ms=2.0, max_macs=100)).best.mode_id == "small"
    assert store.best_mode("dev-a", Budget(max_energy_mj=0.5)).best.mode_id == "tiny"
    assert store.best_mode("dev-a", Budget(min_accuracy=0.84), objective="latency").best.mode_id == "small"
    assert store.best_mode("dev-a", objective="macs").best.mode_id == "tiny"
    assert store.best_mode("dev-a", supernet_hash=h).best.mode_id == "big"
    assert store.best_mode("dev-a", supernet_hash="f" * 64).best is None


def test_best_mode_answers_honestly_when_nothing_satisfies(stored) -> None:
    store, h = stored
    for mode, acc, lat in [("big", 0.93, 3.0), ("mid", 0.90, 1.5), ("small", 0.85, 0.8)]:
        store.put_evaluation(evaluation(h, mode, acc, lat, int(lat * 100), lat))
    answer = store.best_mode("dev-a", Budget(max_latency_ms=1.0, min_accuracy=0.9))
    assert answer.best is None and answer.front_size == 3
    # relative violations: small 0.05/0.9 (accuracy), mid 0.5/1.0 (latency), big 2.0/1.0 (latency)
    assert [e.mode_id for e in answer.closest] == ["small", "mid", "big"]
    budget = answer.budget  # the SQL ordering agrees with the Python definition of the violation
    assert [round(budget.violation(e), 4) for e in answer.closest] == [round(0.05 / 0.9, 4), 0.5, 2.0]
    assert store.best_mode("dev-b").best is None  # a device with nothing stored
    with pytest.raises(DeviceError, match="unknown device 'nope'"):
        store.best_mode("nope")
    with pytest.raises(ValueError, match="unknown objective"):
        store.best_mode("dev-a", objective="speed")
    with pytest.raises(ValueError, match="max_latency_ms must be positive"):
        Budget(max_latency_ms=-1)
    with pytest.raises(ValueError, match=r"min_accuracy must be in \[0, 1\]"):
        Budget(min_accuracy=90)


def test_searches_round_trip_resume_and_refuse_a_reused_name(stored) -> None:
    store, h = stored
    record, resumed = store.start_search("s1", "dse-latency", h, "dev-a", {"id": "space"}, {"delta": 0.9}, "study-1")
    assert not resumed and record.status == "running" and record.supernet_hash == h and record.finished_at is None
    finished = store.finish_search("s1", "finished", {"evaluations": 12})
    assert finished.status == "finished" and finished.summary == {"evaluations": 12} and finished.finished_at
    again, resumed = store.start_search("s1", "dse-latency", h, "dev-a", {"id": "space"}, {"delta": 0.9}, "study-1")
    assert resumed and again.status == "running"
    with pytest.raises(StorageError, match="exists already with other settings"):
        store.start_search("s1", "dse-latency", h, "dev-a", {"id": "space"}, {"delta": 0.8}, "study-1")
    with pytest.raises(StorageError, match="register supernet"):
        store.start_search("s2", "optuna-tpe", "0" * 64, "dev-a", {}, {}, "study-2")
    store.start_search("s3", "optuna-tpe", h, "dev-b", {}, {}, "study-3")
    assert [s.name for s in store.list_searches()] == ["s1", "s3"]
    assert [s.name for s in store.list_searches(device="dev-b")] == ["s3"]
    assert store.get_search("nope") is None
    assert store.get_supernet(h[:10]).content_hash == h
    with pytest.raises(StorageError, match="no stored supernet"):
        store.get_supernet("zzzz")
    assert [s.content_hash for s in store.list_supernets()] == [h]


def test_a_database_made_by_the_first_migration_upgrades_in_place(store_url, tmp_path, tiny_supernet,
                                                                  migrated) -> None:
    with migrated(store_url, "0001") as connection:
        assert "ss_fronts" not in inspect(connection).get_table_names()
    # fill the old schema through the old tables only (what a store of revision 0001 could write)
    from datetime import UTC, datetime

    from sqlalchemy import JSON, column, insert, table

    now = datetime.now(UTC)
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(insert(table("ss_devices", column("name"), column("location"), column("protocol", JSON),
                                        column("energy", JSON), column("description"), column("created_at"))),
                           [{"name": "old-dev", "location": "host", "protocol": Device("x").to_dict()["protocol"],
                             "energy": Device("x").to_dict()["energy"], "description": "", "created_at": now}])
        connection.execute(insert(table("ss_supernets", column("content_hash"), column("family"), column("arch", JSON),
                                        column("recipe", JSON), column("data", JSON), column("metrics", JSON),
                                        column("checkpoint_path"), column("created_at"))),
                           [{"content_hash": "h" * 64, "family": "f", "arch": {}, "recipe": {}, "data": {},
                             "metrics": {}, "checkpoint_path": "x", "created_at": now}])
        rows = [{"supernet_id": 1, "device_id": 1, "mode_id": m, "mode_json": "{}", "settings_key": "k",
                 "settings": {"split": "val"}, "accuracy": a, "loss": 0.1, "macs": c, "params": 1, "latency_ms": float(c),
                 "latency": None, "energy_mj": float(c), "energy_source": "model", "created_at": now}
                for m, a, c in [("a", 0.9, 3), ("b", 0.8, 1), ("c", 0.7, 2)]]
        connection.execute(insert(table("ss_evaluations", *(column(k, JSON if k in ("settings", "latency") else None)
                                                            for k in rows[0]))), rows)
    engine.dispose()
    store = Store(store_url)  # upgrades to head and computes the fronts of the old evaluations
    assert {"ss_searches", "ss_fronts"} <= set(inspect(store.engine).get_table_names())
    assert sorted(e.mode_id for e in store.get_front("old-dev", "accuracy,latency")) == ["a", "b"]
    assert store.best_mode("old-dev", Budget(max_latency_ms=2.5)).best.mode_id == "b"
    store.dispose()


def test_hypervolume_and_filter_against_hand_computed_cases() -> None:
    from subnetsearch.pareto import front_indices, hypervolume

    points = [(0.9, 2.0), (0.8, 1.0), (0.7, 3.0), (0.8, 1.0)]
    assert front_indices(points, ["accuracy", "latency"]) == [0, 1, 3]
    # 0.9 x (4 - 2) + 0.8 x (2 - 1) = 2.6 against the reference (accuracy 0, latency 4)
    assert hypervolume(points, ["accuracy", "latency"], [0.0, 4.0]) == pytest.approx(2.6)
    assert hypervolume([(0.9, 5.0)], ["accuracy", "latency"], [0.0, 4.0]) == 0.0
    assert hypervolume([], ["accuracy", "latency"], [0.0, 4.0]) == 0.0
    with pytest.raises(ValueError, match="unknown objective"):
        nondominated(np.zeros((1, 1)), ["speed"])
    with pytest.raises(ValueError, match="reference point has 1 values"):
        hypervolume(points, ["accuracy", "latency"], [0.0])


def test_latency_tables_round_trip_and_are_replaced(stored) -> None:
    store, h = stored
    assert store.get_latency_table("dev-a", h) is None
    store.put_latency_table("dev-a", h, {"entries": {"a": 1.0}}, "d1", "measured")
    store.put_latency_table("dev-a", h, {"entries": {"a": 2.0}}, "d2", "imported")
    assert store.get_latency_table("dev-a", h) == ({"entries": {"a": 2.0}}, "imported")
    assert store.get_latency_table("dev-b", h) is None
    with pytest.raises(StorageError, match="register supernet"):
        store.put_latency_table("nope", h, {}, "d", "measured")


def test_supernets_stored_under_the_legacy_lasso_family_name_are_renamed_and_back(store_url, migrated) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import JSON, column, insert, table

    with migrated(store_url, "0007") as connection:
        supernets = table("ss_supernets", column("content_hash"), column("family"), column("arch", JSON),
                          column("recipe", JSON), column("data", JSON), column("metrics", JSON),
                          column("checkpoint_path"), column("created_at"))
        row = {"recipe": {}, "data": {}, "metrics": {}, "checkpoint_path": "x", "created_at": datetime.now(UTC)}
        connection.execute(insert(supernets), [
            {**row, "content_hash": "a" * 64, "family": "width-cifar-resnet", "arch": {"family": "width-cifar-resnet"}},
            {**row, "content_hash": "b" * 64, "family": "lasso-cifar-resnet", "arch": {"family": "lasso-cifar-resnet"}},
            {**row, "content_hash": "c" * 64, "family": "wenet-cifar-resnet", "arch": {"family": "wenet-cifar-resnet"}}])
    store = Store(store_url)  # upgrades to head
    assert {s.content_hash[0]: s.family for s in store.list_supernets()} == {
        "a": "lasso-cifar-resnet", "b": "lasso-cifar-resnet", "c": "wenet-cifar-resnet"}
    assert store.get_supernet("a" * 64).arch == {"family": "width-cifar-resnet"}  # the architecture is kept
    store.dispose()
    with migrated(store_url, "0007", downgrade=True) as connection:
        families = dict(connection.execute(supernets.select().with_only_columns(
            supernets.c.content_hash, supernets.c.family)).all())
    assert {h[0]: f for h, f in families.items()} == {"a": "width-cifar-resnet", "b": "lasso-cifar-resnet",
                                                      "c": "wenet-cifar-resnet"}


def test_devices_stored_before_rooflines_were_kept_upgrade_and_back(store_url, migrated) -> None:
    from datetime import UTC, datetime

    from sqlalchemy import JSON, column, insert, table

    from subnetsearch.devices import Roofline

    with migrated(store_url, "0008") as connection:
        devices = table("ss_devices", column("name"), column("location"), column("protocol", JSON),
                        column("energy", JSON), column("description"), column("created_at"))
        connection.execute(insert(devices), [{"name": "old-dev", "location": "host",
                                              "protocol": Device("x").to_dict()["protocol"],
                                              "energy": Device("x").to_dict()["energy"], "description": "",
                                              "created_at": datetime.now(UTC)}])
    store = Store(store_url)  # upgrades to head: the old device has no roofline, a new one keeps its own
    assert store.get_device("old-dev").roofline is None
    roofline = Roofline(1e11, ((2**21, 1e11), (None, 3e10)), 2, "measured")
    store.add_device(Device("new-dev", roofline=roofline))
    assert store.get_device("new-dev").roofline == roofline
    store.dispose()
    with migrated(store_url, "0008", downgrade=True) as connection:
        assert "roofline" not in {c["name"] for c in inspect(connection).get_columns("ss_devices")}
        assert sorted(connection.execute(devices.select().with_only_columns(devices.c.name)).scalars()) == [
            "new-dev", "old-dev"]


def test_a_mode_evaluated_several_ways_is_found_as_the_tables_show_it(stored) -> None:
    """`export <id>` and `export --modes` take the first: the calibrated, full-fidelity evaluation of
    a mode, not the stored-BN column nor a cheap first look, whatever was stored last."""
    from dataclasses import replace

    store, h = stored
    calibrated = evaluation(h, "m", 0.90, 1.0, 100, 1.0, key="calibrated")
    stored_bn = evaluation(h, "m", 0.13, 1.0, 100, 1.0, key="stored-bn")
    look = replace(evaluation(h, "m", 0.95, 1.0, 100, 1.0, key="look"), settings={"split": "val", "fidelity": "low"})
    for row in (calibrated, stored_bn, look):
        store.put_evaluation(row)
    assert [e.settings_key for e in store.find_evaluations("dev-a", "m")] == ["calibrated", "stored-bn", "look"]

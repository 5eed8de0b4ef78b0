import pytest
from sqlalchemy import inspect

from subnetsearch.devices import Device, DeviceError, LatencyProtocol
from subnetsearch.storage import StorageError, Store, StoredEvaluation, safe_url
from subnetsearch.supernets import load_checkpoint, save_checkpoint


def test_schema_is_created_by_migration_and_reopening_is_idempotent(store_url) -> None:
    store = Store(store_url)
    tables = set(inspect(store.engine).get_table_names())
    assert {"ss_devices", "ss_supernets", "ss_evaluations", "ss_alembic_version"} <= tables
    Store(store_url)  # upgrade on an up-to-date database changes nothing and does not fail


def test_devices_round_trip_and_errors(store_url) -> None:
    store = Store(store_url)
    device = Device("edge-1", "ray-node", LatencyProtocol(runtime="eager", threads=1))
    store.add_device(device)
    assert store.get_device("edge-1") == device
    with pytest.raises(StorageError, match="exists already"):
        store.add_device(device)
    changed = Device("edge-1", "ray-node", LatencyProtocol(runtime="onnxruntime", threads=4))
    store.add_device(changed, replace=True)
    assert [d.protocol.runtime for d in store.list_devices()] == ["onnxruntime"]
    with pytest.raises(DeviceError, match="unknown device 'nope'.*edge-1"):
        store.get_device("nope")
    store.remove_device("edge-1")
    assert store.list_devices() == []


def _evaluation(supernet_hash: str, device: str, mode_id: str = "m1") -> StoredEvaluation:
    return StoredEvaluation(supernet_hash, device, mode_id, '{"space":"s","values":{}}', "k1", {"split": "val"},
                            0.9, 0.3, 4_100_000_000, 25_000_000, 1.5, {"measured": True}, 2.0, "model")


def test_evaluations_are_stored_once_and_read_back(store_url, tmp_path, tiny_supernet) -> None:
    store = Store(store_url)
    path = tmp_path / "net.pt"
    save_checkpoint(path, tiny_supernet, {}, {"name": "synthetic"}, {})
    checkpoint = load_checkpoint(path)
    record = store.register_supernet(checkpoint, path)
    assert store.register_supernet(checkpoint, path).id == record.id  # idempotent by content hash
    store.add_device(Device("host-a"))
    evaluation = _evaluation(checkpoint.hash, "host-a")
    assert store.put_evaluation(evaluation) is True
    assert store.put_evaluation(evaluation) is False  # no duplicate
    assert store.count_evaluations() == 1
    assert store.get_evaluation(checkpoint.hash, "host-a", "m1", "k1") == evaluation  # big MAC counts survive
    assert store.get_evaluation(checkpoint.hash, "host-a", "m2", "k1") is None
    with pytest.raises(StorageError, match="register supernet"):
        store.put_evaluation(_evaluation("0" * 64, "host-a"))


def test_bad_urls_fail_clearly_without_leaking_passwords(tmp_path) -> None:
    with pytest.raises(StorageError, match="not a database URL"):
        Store("no-scheme-here")
    secret = "s3cr3t-pw"
    url = f"postgresql+psycopg://someone:{secret}@127.0.0.1:1/none"
    with pytest.raises(StorageError) as raised:
        Store(url)
    assert secret not in str(raised.value) and "***" in str(raised.value)
    assert secret not in safe_url(url)


@pytest.mark.parametrize("killed_after", ["tables", "version row"])
def test_a_store_whose_optuna_schema_creation_was_killed_opens_for_every_command(tmp_path, killed_after) -> None:
    """Optuna creates its tables, then its version row, then stamps its revision; a process killed in
    between (a search killed in its first seconds) leaves a schema that is incomplete, not another
    version's: read-only commands open it, and the next study completes it."""
    import optuna
    from optuna.storages._rdb import models
    from sqlalchemy import create_engine, text
    from typer.testing import CliRunner

    from subnetsearch.cli import app

    url = f"sqlite:///{tmp_path / 'store.db'}"
    Store(url).dispose()
    engine = create_engine(url)
    models.BaseModel.metadata.create_all(engine)
    if killed_after == "version row":
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO version_info (version_info_id, schema_version, library_version) "
                                    f"VALUES (1, {models.SCHEMA_VERSION}, '{optuna.__version__}')"))
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
    engine.dispose()
    runner = CliRunner()
    for command in (["searches"], ["devices", "list"], ["supernets"]):
        done = runner.invoke(app, [*command, "--storage", url])
        assert done.exit_code == 0, (command, done.output)
        assert "newer optuna" not in done.output
    optuna.create_study(study_name="after", storage=url)  # Optuna finishes its schema on first use
    Store(url).dispose()  # and the store still opens

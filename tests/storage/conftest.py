"""Storage tests run against every backend: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, create_engine

from subnetsearch.storage._engine import _ALEMBIC


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_store_url")


@pytest.fixture
def check_fronts():
    """A check that the incrementally maintained fronts equal a rebuild from all evaluations."""
    from sqlalchemy import select

    from subnetsearch.storage._fronts import rebuild_fronts
    from subnetsearch.storage._models import FrontRow

    def check(store) -> None:
        with store.session() as session:
            incremental = sorted(session.execute(select(FrontRow.objectives, FrontRow.evaluation_id)).all())
        with store.session(write=True) as session:
            rebuild_fronts(session.connection())
        with store.session() as session:
            assert sorted(session.execute(select(FrontRow.objectives, FrontRow.evaluation_id)).all()) == incremental

    return check


@pytest.fixture
def stored(store_url, tmp_path, tiny_supernet):
    """A store with one registered supernet and two devices."""
    from subnetsearch.devices import Device
    from subnetsearch.storage import Store
    from subnetsearch.supernets._checkpoint import load_checkpoint, save_checkpoint

    store = Store(store_url)
    path = tmp_path / "net.pt"
    save_checkpoint(path, tiny_supernet, {}, {"name": "synthetic"}, {})
    checkpoint = load_checkpoint(path)
    store.register_supernet(checkpoint, path)
    store.add_device(Device("dev-a"))
    store.add_device(Device("dev-b", "ray-node"))
    yield store, checkpoint.hash
    store.dispose()


@pytest.fixture
def migrated():
    """`migrated(url, revision, downgrade=False)`: a connection to the database after upgrading (or
    downgrading) it to `revision`, in one transaction."""
    return _migrated


@contextmanager
def _migrated(store_url: str, revision: str, downgrade: bool = False) -> Iterator[Connection]:
    """A connection to the database after upgrading (or downgrading) it to `revision`, in one transaction."""
    config = Config()
    config.set_main_option("script_location", str(_ALEMBIC))
    engine = create_engine(store_url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            (command.downgrade if downgrade else command.upgrade)(config, revision)
            yield connection
    finally:
        engine.dispose()



"""Storage tests run against every backend: a SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import os
import uuid

import pytest

ADMIN_URL = os.environ.get("SUBNETSEARCH_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_database() -> str:
    """Create a fresh database for this test session; skip (loudly) only outside CI if no server."""
    try:
        import psycopg

        name = f"subnetsearch_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return name
    except Exception as error:  # no driver, no server
        if os.environ.get("CI"):
            raise RuntimeError(f"CI needs PostgreSQL at {ADMIN_URL}: {error}") from error
        pytest.skip(f"NO POSTGRESQL SERVER at {ADMIN_URL} ({error}): PostgreSQL storage tests skipped")


@pytest.fixture(scope="session")
def postgres_url():
    name = _postgres_database()
    base = ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    yield f"{base}/{name}"
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url = request.getfixturevalue("postgres_url")
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as connection:  # every test starts from an empty schema
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return url


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

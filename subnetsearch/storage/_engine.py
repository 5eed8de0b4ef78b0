"""The store's connection: one SQL URL (SQLite file by default, PostgreSQL for teams), migrated with
Alembic on open, its sessions (SQLite: WAL, a busy timeout, writers serialized) and what a
half-created or newer schema means.

Thread safety: a Store may be shared by threads (each `session()` is its own unit of work); across
processes use PostgreSQL (SQLite serializes writers, with WAL and a busy timeout).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from subnetsearch.errors import SubnetsearchError

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



class StoreEngine:
    """The engine, schema and sessions of a store (`Store` adds what it holds)."""

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
        self.read_only = False
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

    def make_read_only(self) -> None:
        """From now on, refuse every write at the database itself (SQLite `PRAGMA query_only`,
        PostgreSQL read-only transactions): for services that only answer queries. The schema was
        brought up to date when the store was opened."""
        statement = "PRAGMA query_only = ON" if self.backend == "sqlite" else \
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"

        def on_connect(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute(statement)
            cursor.close()
            if self.backend != "sqlite":
                connection.commit()  # a SET in a transaction rolled back at check-in would be undone

        for engine in {id(self.engine): self.engine, id(self._write_engine): self._write_engine}.values():
            event.listen(engine, "connect", on_connect)
            engine.dispose()  # pooled connections were opened writable
        self.read_only = True

    def dispose(self) -> None:
        self.engine.dispose()
        self._write_engine.dispose()

    # ---- devices -----------------------------------------------------------------------------

def _redact(text: str, password: str | None) -> str:
    return text.replace(password, "***") if password else text

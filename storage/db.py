"""Engine, sessions, transactions and migrations for one database (SQLite or PostgreSQL).

`Database` wraps an SQLAlchemy engine for any URL. SQLite gets, on every connection:
WAL (readers never block the writer), foreign keys on, synchronous=FULL (a committed vote
survives a power cut) and a 5 s busy timeout; the driver's own transaction handling is
switched off so that write transactions can start with `BEGIN IMMEDIATE` (take the write
lock up front: a deferred transaction that reads and then writes fails with "database is
locked" when another writer got there in between, whatever the busy timeout).
PostgreSQL works through psycopg 3 (`postgresql+psycopg://user@host/db`).

    db = Database.sqlite("pulsemind.db")   # or Database(default_database_url())
    db.upgrade()                           # alembic upgrade head, from any cwd
    with db.transaction() as session:      # one transaction; commits or rolls back
        session.execute(...)

New migration (after changing storage/models.py):
    alembic -c storage/migrations/alembic.ini upgrade head      # a scratch database first
    alembic -c storage/migrations/alembic.ini revision --autogenerate --rev-id 0002 -m "what"
(both against $PULSEMIND_DATABASE_URL), then read and tidy the result; the no-diff test in
tests/test_storage.py fails until the revision matches storage/models.py.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from loguru import logger
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import DatabaseBusy, DatabaseUnavailable, NotFound, StorageError

DATABASE_URL_ENV = "PULSEMIND_DATABASE_URL"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: How long an SQLite writer waits for another writer's lock before giving up (ms). Writes
#: here are single small transactions, so 5 s means something is stuck, not busy.
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Execution option that marks a connection as a writer (SQLite: BEGIN IMMEDIATE).
_WRITE_OPTION = "pulsemind_write"


DATA_DIR_ENV = "PULSEMIND_DATA_DIR"


def default_data_dir() -> Path:
    """`$PULSEMIND_DATA_DIR`, else `pulsemind/` in the user's data folder (XDG)."""
    folder = os.environ.get(DATA_DIR_ENV, "").strip()
    if folder:
        return Path(folder)
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "pulsemind"


def resolve_database_url(url: str | None = None, data_dir: str | Path | None = None) -> str:
    """THE database URL of the app and of every command: the flag (`url`), else
    `$PULSEMIND_DATABASE_URL`, else `pulsemind.db` in `data_dir` (default: `default_data_dir()`,
    created). One resolution, so `pulsemind user add` writes where the app reads."""
    url = (url or os.environ.get(DATABASE_URL_ENV, "")).strip()
    if url:
        return url
    folder = Path(data_dir) if data_dir else default_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite+pysqlite:///{folder / 'pulsemind.db'}"


def default_database_url() -> str:
    """`$PULSEMIND_DATABASE_URL`, else the SQLite file in the data folder (created)."""
    return resolve_database_url()


def _on_sqlite_connect(dbapi_connection: Any, connection_record: Any) -> None:
    # No implicit BEGIN from the driver: `_on_sqlite_begin` emits the right one.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(_WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


#: Driver messages that mean "another writer holds the lock" (SQLite, PostgreSQL lock timeout).
_BUSY_MARKERS = ("database is locked", "database is busy", "lock timeout", "could not obtain lock")


def _fault(exc: OperationalError) -> StorageError:
    """An operational database error as the storage error people see; detail to the log."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    if any(marker in text for marker in _BUSY_MARKERS):
        logger.warning("database busy: {}", text)
        return DatabaseBusy(f"database busy: {text[:200]}")
    logger.error("database unavailable: {}", text)
    return DatabaseUnavailable(f"database unavailable: {text[:200]}")


#: Server databases: connections kept open, and opened beyond that for a burst.
POOL_SIZE = 20
POOL_OVERFLOW = 10


class Database:
    """One database: an engine plus session factories for readers and writers."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if self.url.database in (None, "", ":memory:"):
                raise StorageError(
                    "in-memory SQLite is not supported: each connection would see its own "
                    "empty database; give a file path"
                )
            # The app serves requests from several threads; each checks out its own
            # pooled connection, so sharing across threads is safe.
            kwargs["connect_args"] = {"check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
            # Connections kept open for the app's worker threads: a server (PostgreSQL) makes a
            # new connection in tens of ms, so SQLAlchemy's default (5 kept, 10 more opened and
            # closed on demand) made 50 voters at once wait ~75 ms each (`pulsemind bench
            # compare`); overflow connections still cover bursts beyond these.
            kwargs["pool_size"] = POOL_SIZE
            kwargs["max_overflow"] = POOL_OVERFLOW
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _on_sqlite_connect)
            event.listen(self.engine, "begin", _on_sqlite_begin)
        # SQLite has one writer at a time. Writers of this process queue on this lock, woken the
        # moment it is free, instead of in SQLite's busy handler, which sleeps 1, 2, 5, 10 ... ms
        # between tries (16 clinicians sending at once waited up to ~0.1 s each for nothing).
        self._sqlite_write_lock = threading.RLock() if self.is_sqlite else contextlib.nullcontext()
        self._read_sessions = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            bind=self.engine.execution_options(**{_WRITE_OPTION: True}), expire_on_commit=False
        )

    @classmethod
    def sqlite(cls, path: str | os.PathLike[str], *, echo: bool = False) -> Database:
        """A database in the SQLite file `path` (its folder is created)."""
        path = Path(path).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite+pysqlite:///{path}", echo=echo)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.dispose()

    # --- sessions -----------------------------------------------------------------------

    def session(self, *, write: bool = False) -> Session:
        """A new Session (expire_on_commit=False: objects stay readable after commit)."""
        return (self._write_sessions if write else self._read_sessions)()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session inside one transaction: committed on success, rolled back on error.

        `write=False` for read-only work: on SQLite it does not take the write lock.
        Database faults become storage errors with a message for people (`DatabaseBusy`,
        `DatabaseUnavailable`; an id too large for an SQL integer is `NotFound`); the
        driver's text stays in the log.
        """
        lock = self._sqlite_write_lock if write else contextlib.nullcontext()
        try:
            with lock, self.session(write=write) as session, session.begin():
                yield session
        except OperationalError as exc:
            raise _fault(exc) from exc
        except (DatabaseError, InterfaceError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            logger.error("database error: {}", exc.orig if exc.orig is not None else exc)
            raise DatabaseUnavailable(f"database error: {type(exc.orig).__name__}") from exc
        except OverflowError as exc:  # sqlite3 binding an int beyond 64 bits
            raise NotFound(f"id out of range: {exc}") from exc

    def dispose(self) -> None:
        """Close every pooled connection (call before deleting the file)."""
        self.engine.dispose()

    # --- migrations ---------------------------------------------------------------------

    def _alembic_config(self, connection: Connection) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        # env.py runs on this connection instead of building its own engine.
        config.attributes["connection"] = connection
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Bring the schema to `revision` (default: the newest), in one transaction."""
        self._migrate(lambda config: command.upgrade(config, revision), f"upgrade {revision}")

    def downgrade(self, revision: str = "base") -> None:
        """Take the schema back to `revision` ("base" drops every table)."""
        self._migrate(lambda config: command.downgrade(config, revision), f"downgrade {revision}")

    def current_revision(self) -> str | None:
        """The revision the database is at, or None for an empty database."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def _migrate(self, run: Any, what: str) -> None:
        with self.engine.connect() as connection:
            if self.is_sqlite:
                # Batch migrations copy and drop tables; with foreign keys on, dropping a
                # parent table would cascade. SQLite's documented procedure: keys off
                # (only possible outside a transaction), migrate, check, keys back on.
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
            try:
                with connection.begin():
                    run(self._alembic_config(connection))
                    if self.is_sqlite:
                        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                        if broken:
                            raise StorageError(
                                f"migration ({what}) left {len(broken)} broken foreign keys; "
                                "rolled back"
                            )
            finally:
                if self.is_sqlite:
                    connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
        logger.info("database {}: {} done", self.url.get_backend_name(), what)

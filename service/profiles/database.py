"""`Database`: the directory's SQLAlchemy engine (SQLite file or PostgreSQL), its migrations, and its health.

Every unit of work opens a short session with `begin()`; a database that cannot be reached raises `DatabaseDown`
(503 with Retry-After), whatever the driver said, so no URL or password reaches an error body.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from ..config import ConfigError
from ..errors import UpstreamUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS = str(Path(__file__).with_name("migrations"))
# The migrations this code knows, oldest first, so a worker's health check needs no Alembic in memory;
# tests/test_directory.py checks the list against Alembic's own history.
REVISIONS = ("0001", "0002", "0003")
LOCK_TIMEOUT_MS = 2000  # PostgreSQL: how long a statement waits for a lock (a migration, a stuck admin session)
STATEMENT_TIMEOUT_MS = 5000  # PostgreSQL: the longest any of the directory's statements may run
POOL_SIZE, POOL_OVERFLOW = 5, 10  # PostgreSQL connections per worker: kept open, and opened on demand beyond them
POOL_TIMEOUT_SECONDS = 5  # how long a request waits for a free pooled connection
# SQLite: how long a write waits for another writer. Well inside the 10 s Ayrshare allows a webhook to be answered.
SQLITE_BUSY_TIMEOUT_SECONDS = 5
READ_ONLY = "25006"  # PostgreSQL's read_only_sql_transaction: a standby after a failover, or a database set read-only


class DatabaseDown(UpstreamUnavailable):
    code = "database_unavailable"
    message = "The user directory's database is unreachable. Try again shortly."


class DatabaseReadOnly(DatabaseDown):
    message = "The user directory's database refuses writes (read-only, as after a failover). Try again shortly."


class NotMigrated(UpstreamUnavailable):
    code = "database_not_migrated"
    message = "The user directory's database is not migrated: run `flask --app service db upgrade`."


class Database:
    """The engine and sessions for `DATABASE_URL`, created lazily (connecting only when first used)."""

    def __init__(self, url: str, timeout: float = 2.0):
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            raise ConfigError("DATABASE_URL: not a valid SQLAlchemy URL") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            try:
                if parsed.database:
                    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:  # what the start's check of the folder cannot foresee (/proc, a race)
                raise ConfigError(f"DATABASE_URL: cannot create the SQLite file's folder ({error.strerror})") from None
            # busy_timeout: concurrent writers (gunicorn workers) wait for each other instead of failing at once.
            self.engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            if parsed.drivername == "postgresql":  # the driver we ship and pin
                url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
            self.engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=POOL_SIZE,
                max_overflow=POOL_OVERFLOW,
                pool_timeout=POOL_TIMEOUT_SECONDS,
                connect_args={"connect_timeout": int(timeout)},
            )
            event.listen(self.engine, "connect", _postgres_limits)
            event.listen(self.engine, "handle_error", _drop_read_only_sessions)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def begin(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        try:
            with self.sessions.begin() as session:
                yield session
        except IntegrityError:
            raise  # a constraint said no: the caller decides what that means
        except PoolTimeout:
            log.warning("database unavailable", extra={"error_type": "PoolTimeout"})  # every connection stuck in use
            raise DatabaseDown() from None
        except InternalError as error:
            if not _is_read_only(error.orig):
                raise
            # Reads still work but no write can be stored: an outage for writers (a webhook must not get a 2xx).
            log.warning("database unavailable", extra={"error_type": "ReadOnlySqlTransaction"})
            raise DatabaseReadOnly() from None
        except (OperationalError, InterfaceError, ProgrammingError) as error:
            if _is_missing_table(error):
                raise NotMigrated() from None
            if isinstance(error, ProgrammingError):
                raise  # our bug, not an outage: a 500 with its traceback in the log
            log.warning("database unavailable", extra={"error_type": type(error.orig or error).__name__})
            raise DatabaseDown() from None

    def ping(self) -> str:
        """ "ok", "failing" (unreachable) or "not_migrated" (reachable, schema older than this code)."""
        try:
            with self.engine.connect() as connection:
                current = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        except PoolTimeout:
            return "failing"
        except DBAPIError as error:
            if _is_missing_table(error):
                return "not_migrated"
            return "failing"
        if current == REVISIONS[-1]:
            return "ok"
        # A revision this code does not know is a newer release's: the old pods keep serving during a rollout.
        return "not_migrated" if current is None or current in REVISIONS else "ok"

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config()).get_current_head()

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations (what `flask db upgrade` and `bin/boot` run)."""
        from alembic import command

        with self.engine.begin() as connection:
            if self.dialect == "postgresql":  # a migration may wait for locks and run long; requests may not
                connection.execute(text("SET LOCAL lock_timeout = 0"))
                connection.execute(text("SET LOCAL statement_timeout = 0"))
            config = alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, revision)


def alembic_config() -> Config:
    """Alembic's configuration for the directory's migrations (imported here, not at start: workers never migrate)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    return config


def _postgres_limits(connection, record) -> None:
    # A held lock or a stuck query ends in seconds as a 503, not a request hanging for as long as it lasts. SET on
    # each new connection rather than startup `options`: those would replace the URL's own, and poolers refuse them.
    cursor = connection.cursor()
    cursor.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
    cursor.close()
    connection.commit()


def _drop_read_only_sessions(context) -> None:
    # A session that was read-only stays so: treated as a disconnect, the pool's connections are replaced, and the next
    # request connects afresh (to the new primary, or the database once it takes writes again).
    if _is_read_only(context.original_exception):
        context.is_disconnect = True


def _sqlite_pragmas(connection, record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _is_read_only(driver_error: BaseException) -> bool:
    return getattr(driver_error, "sqlstate", None) == READ_ONLY  # psycopg's errors carry the SQLSTATE


def _is_missing_table(error: DBAPIError) -> bool:
    text_ = str(error.orig).lower()
    return "no such table" in text_ or ("relation" in text_ and "does not exist" in text_)

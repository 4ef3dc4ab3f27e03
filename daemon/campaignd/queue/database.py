"""Connecting: database URLs, engines with the right SQLite pragmas, migrations to head.

SQLite runs in WAL mode with ``synchronous=FULL`` (a committed ``sent`` survives a power cut),
a busy timeout and foreign keys on. SQLAlchemy emits BEGIN itself (the sqlite3 module's own
transaction handling skips it before SELECTs): plain ``BEGIN`` for readers, ``BEGIN IMMEDIATE``
for writers, so a writer takes the lock up front and waits its turn instead of failing halfway
with "database is locked".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..errors import StoreError

log = logging.getLogger("campaignd.store")

MIGRATIONS = Path(__file__).with_name("migrations")
BUSY_TIMEOUT_MS = 30_000
WRITE_OPTION = "campaignd_write"
"""Execution option marking an engine whose transactions write (``BEGIN IMMEDIATE`` on SQLite)."""
_MIGRATION_LOCK = 0x63616D70  # any constant: the PostgreSQL advisory lock id for migrations

SQLITE_DRIVERS = {"sqlite", "sqlite+aiosqlite"}
POSTGRES_DRIVERS = {"postgresql", "postgresql+asyncpg"}


def state_dir(root: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """systemd's StateDirectory= if set, else state/ under the config root."""
    env = environ.get("STATE_DIRECTORY")
    return Path(env.split(":")[0]) if env else root / "state"


def configured_url(database: str, root: Path, environ: Mapping[str, str] = os.environ) -> str:
    """The database the daemon uses: $CAMPAIGND_DATABASE, else ``database:`` (``database``).
    Under systemd the default relative SQLite path ``state/…`` lands in StateDirectory=, since
    the config root is read-only there. The daemon and ``campaignctl plan`` both ask here."""
    url = environ.get("CAMPAIGND_DATABASE") or database
    prefix = "sqlite:///state/"
    if environ.get("STATE_DIRECTORY") and url.startswith(prefix):
        return f"sqlite:///{state_dir(root, environ) / url[len(prefix) :]}"
    return url


def normalize_url(url: str, *, root: Path) -> URL:
    """The async-driver URL for ``url``; a relative SQLite path is taken from ``root``.

    ``sqlite:///state/c.db`` is ``root/state/c.db``, ``sqlite:////var/lib/c.db`` absolute;
    ``postgresql://`` and ``postgresql+asyncpg://`` both mean asyncpg.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(
            f"database URL {url!r} cannot be parsed — use sqlite:///state/campaignd.db "
            "or postgresql+asyncpg://user@host/db"
        ) from None
    if parsed.drivername in SQLITE_DRIVERS:
        db = parsed.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            raise StoreError(
                f"database URL {url!r} names no file — campaignd keeps every message's state "
                "on disk; use sqlite:///state/campaignd.db (relative to the config root)"
            )
        path = Path(db).expanduser()
        if not path.is_absolute():
            path = root / path
        return parsed.set(drivername="sqlite+aiosqlite", database=str(path))
    if parsed.drivername in POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+asyncpg")
    raise StoreError(
        f"database URL {display(parsed)!r} uses {parsed.drivername!r}, which campaignd does not "
        "support — use sqlite:///path or postgresql+asyncpg://user@host/db"
    )


def display(url: URL) -> str:
    """The URL without its password, for messages and logs."""
    return url.render_as_string(hide_password=True)


def create_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        assert url.database is not None
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})
        sa.event.listen(engine.sync_engine, "connect", _sqlite_connect)
        sa.event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Leave BEGIN to _sqlite_begin (sqlite3 would otherwise skip it before SELECTs).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in (
        "journal_mode=WAL",
        "synchronous=FULL",
        f"busy_timeout={BUSY_TIMEOUT_MS}",
        "foreign_keys=ON",
    ):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    write = conn.get_execution_options().get(WRITE_OPTION, False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the package ships no migrations"
    return head


def current_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: sa.Connection) -> str | None:
    """Migrate to head inside the caller's transaction; returns the revision it started from
    (``"base"`` for an empty database), or None when the schema was already current."""
    if connection.dialect.name == "postgresql":
        # Two daemons starting at once must not both create the tables.
        connection.execute(sa.select(sa.func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    current = current_revision(connection)
    if current == head:
        return None
    if current is not None and current not in {s.revision for s in script.walk_revisions()}:
        raise StoreError(
            f"the database schema is at revision {current}, which this campaignd (schema "
            f"{head}) does not know — a newer campaignd wrote it; upgrade campaignd"
        )
    command.upgrade(alembic_config(connection), "head")
    return current or "base"


def insert(conn: AsyncConnection, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
    """``INSERT`` with ``ON CONFLICT`` support for the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)

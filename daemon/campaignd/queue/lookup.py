"""The past as the audience asks for it: suppressions, contact history and other campaigns'
sends, answered synchronously (``plan.audience_history``'s ``History`` and ``Suppressions``)
by an async reader on an event loop in another thread.

One implementation for both users, so ``campaignctl plan`` applies exactly what enrollment
applies: the daemon's enrollment reads the audience in a worker thread and asks its ``Store``
on the daemon's loop; ``campaignctl plan`` reads it in its main thread and asks a
``ReadOnlyDatabase`` on a private loop (``database_history``) — the same queries
(``history``), the same batching, the same ``exclude_campaign`` rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import Collection, Coroutine, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ..errors import StoreError
from . import history
from .database import BUSY_TIMEOUT_MS, current_revision, display, normalize_url
from .rows import normalize_key

__all__ = [
    "HistoryReader",
    "ReadOnlyDatabase",
    "SqliteSuppressions",
    "SyncHistory",
    "database_history",
]

T = TypeVar("T")


class HistoryReader(Protocol):
    """What the audience's questions need of a database (``Store`` has these)."""

    async def suppressed(self, keys: Sequence[str]) -> set[str]: ...

    async def contacted_since(
        self, keys: Sequence[str], since: datetime, *, exclude_campaign: str | None = ...
    ) -> set[str]: ...

    async def received_campaigns(
        self, keys: Sequence[str], campaign_ids: Sequence[str]
    ) -> set[str]: ...


class SyncHistory:
    """``History`` and ``Suppressions`` for the audience of ``campaign_id``, answered by
    ``reader`` on ``loop`` (which must run in another thread). A campaign's own sends never
    count as contact: re-reading its lists must not filter out its own recipients."""

    def __init__(
        self,
        reader: HistoryReader,
        loop: asyncio.AbstractEventLoop,
        campaign_id: str,
        *,
        source: str = "",
    ) -> None:
        self.reader = reader
        self.loop = loop
        self.campaign_id = campaign_id
        self.source = source
        """Where the answers come from, for the operator (``database sqlite:///… (read-only)``)."""

    direct: SqliteSuppressions | None = None
    """Set: the suppression list is read on the calling thread's own connection (SQLite),
    not through the loop — the question asked for every batch of the audience."""

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def suppressed(self, keys: Sequence[str]) -> set[str]:
        if self.direct is not None:
            return self.direct.suppressed(keys)
        return self.call(self.reader.suppressed(keys))

    def contacted_since(self, keys: Sequence[str], since: datetime) -> set[str]:
        return self.call(
            self.reader.contacted_since(keys, since, exclude_campaign=self.campaign_id)
        )

    def received_campaigns(self, keys: Sequence[str], campaign_ids: Sequence[str]) -> set[str]:
        return self.call(self.reader.received_campaigns(keys, campaign_ids))


class SqliteSuppressions:
    """``suppressed`` on a read-only stdlib ``sqlite3`` connection of the thread that asks.

    Enrollment's reader asks once per batch of its audience while the event loop is busy with
    the batches it writes; a hop to the loop and back (and SQLAlchemy compiling a thousand
    parameters) costs many times the look-up itself, which is one statement with the keys as
    one JSON parameter. The connection is opened on first use, on the asking thread."""

    SQL = "SELECT key FROM suppressions WHERE key IN (SELECT value FROM json_each(?))"

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def suppressed(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        if self._conn is None:
            uri = f"file:{quote(str(Path(self.path).resolve()))}?mode=ro"
            # one thread at a time; ``close`` may come from another
            self._conn = sqlite3.connect(
                uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False
            )
            self._conn.execute("PRAGMA query_only=ON")
        # The same matching as ``history.suppressed``: by normalized key, answered with the
        # spellings asked for.
        spellings: dict[str, list[str]] = {}
        for k in keys:
            spellings.setdefault(normalize_key(k), []).append(k)
        rows = self._conn.execute(self.SQL, (json.dumps(list(spellings)),)).fetchall()
        return {k for (key,) in rows for k in spellings[key]}

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ReadOnlyDatabase:
    """The daemon's database opened for reading only: never created, never migrated, never
    written (SQLite ``mode=ro``; PostgreSQL sessions with ``default_transaction_read_only``).
    Open with ``await ReadOnlyDatabase.open(url, root=…)``; errors are ``StoreError``s that
    say what is wrong."""

    def __init__(self, engine: AsyncEngine, shown: str) -> None:
        self.engine = engine
        self.url = shown
        """Without password, for messages."""

    @classmethod
    async def open(cls, url: str, *, root: Path) -> ReadOnlyDatabase:
        target = normalize_url(url, root=root)
        shown = display(target)
        if target.get_backend_name() == "sqlite":
            assert target.database is not None
            path = Path(target.database)
            if not await asyncio.to_thread(path.is_file):
                raise StoreError(
                    f"no database yet at {path} — campaignd creates it when it first starts "
                    "with this config (or $CAMPAIGND_DATABASE / database: point elsewhere)"
                )
            engine = create_async_engine(_read_only_sqlite(path))
            sa.event.listen(engine.sync_engine, "connect", _sqlite_read_only)
        else:
            engine = create_async_engine(
                target,
                pool_size=1,
                connect_args={"server_settings": {"default_transaction_read_only": "on"}},
            )
        db = cls(engine, shown)
        try:
            async with engine.connect() as conn:
                revision = await conn.run_sync(current_revision)
        except Exception as exc:
            await engine.dispose()
            raise StoreError(f"cannot read the database {shown}: {_why(exc)}") from exc
        if revision is None:
            await engine.dispose()
            raise StoreError(
                f"the database {shown} has no campaignd schema yet — campaignd creates it "
                "when it first starts with this config"
            )
        return db

    async def close(self) -> None:
        await self.engine.dispose()

    @contextlib.asynccontextmanager
    async def _read(self) -> Any:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"cannot read the database {self.url}: {_why(exc)}") from exc

    async def suppressed(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        conn: AsyncConnection
        async with self._read() as conn:
            return await history.suppressed(conn, keys)

    async def contacted_since(
        self, keys: Sequence[str], since: datetime, *, exclude_campaign: str | None = None
    ) -> set[str]:
        if not keys:
            return set()
        conn: AsyncConnection
        async with self._read() as conn:
            return await history.contacted_since(
                conn, keys, since, exclude_campaign=exclude_campaign
            )

    async def received_campaigns(
        self, keys: Sequence[str], campaign_ids: Collection[str]
    ) -> set[str]:
        if not keys:
            return set()
        conn: AsyncConnection
        async with self._read() as conn:
            return await history.received_campaigns(conn, keys, campaign_ids)


def _read_only_sqlite(path: Path) -> URL:
    # A URI filename is the only way to ask SQLite for read-only access; ``uri=true`` tells
    # the driver to pass it on as one. The path is percent-encoded (``?``/``#`` in a name).
    return URL.create(
        "sqlite+aiosqlite",
        database=f"file:{quote(str(path.resolve()))}",
        query={"mode": "ro", "uri": "true"},
    )


def _sqlite_read_only(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # The daemon may hold the write lock for a moment: wait as it would, never write.
    for pragma in (f"busy_timeout={BUSY_TIMEOUT_MS}", "query_only=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _why(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).splitlines()[0] if str(orig or exc) else type(exc).__name__


@contextlib.contextmanager
def database_history(url: str, *, root: Path, campaign_id: str) -> Iterator[SyncHistory]:
    """``SyncHistory`` over the database at ``url`` opened read-only, for synchronous callers
    (``campaignctl plan``): a private event loop runs in a thread while the caller reads its
    lists. Raises ``StoreError`` (on entry, or from a question) when it cannot be read."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="history-reader", daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    try:
        db = run(ReadOnlyDatabase.open(url, root=root))
        try:
            yield SyncHistory(db, loop, campaign_id, source=f"database {db.url} (read-only)")
        finally:
            run(db.close())
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

"""Which database errors are weather (retry, reconnect, wait) and which are bugs or bad data.

A lost connection, a PostgreSQL restart or shutdown, ``database is locked``, a disk I/O error or
a full disk say nothing about the operation: the same operation succeeds once the database is
back. A constraint violation, a refused transition or an SQL error would fail again, so it is
raised at once. Classification walks the exception's causes, because each layer (SQLAlchemy,
its asyncpg adapter, asyncpg, the socket) wraps the one below.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from ..errors import StoreError

SQLITE_TRANSIENT = (
    "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL", "SQLITE_READONLY", "SQLITE_NOMEM",
)  # fmt: skip
"""Result codes (and their extended forms) that say the database cannot be used *now*."""
PG_TRANSIENT_CLASSES = ("08", "53", "57", "58")
"""SQLSTATE classes: connection exception, insufficient resources (disk full, out of memory,
too many connections), operator intervention (shutdown, restart), system error (I/O)."""
PG_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03", "55000"})
"""Serialization failure, deadlock, lock not available, object not in prerequisite state."""
PG_DISK_FULL = "53100"


class StoreUnavailable(StoreError):
    """The database cannot be used right now; ``reason`` is what ``Store.health`` shows."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)
        todo.extend([e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None])


def _sqlstate(e: BaseException) -> str:
    state = getattr(e, "sqlstate", None)
    return state if isinstance(state, str) else ""


def transient(exc: BaseException) -> bool:
    for e in _chain(exc):
        if isinstance(e, StoreUnavailable):
            return True
        if isinstance(e, sqlite3.Error):
            name = getattr(e, "sqlite_errorname", "") or ""
            return name.startswith(SQLITE_TRANSIENT)
        if state := _sqlstate(e):
            return state[:2] in PG_TRANSIENT_CLASSES or state in PG_TRANSIENT_STATES
        if isinstance(e, ConnectionError | TimeoutError | OSError):
            return True
        name = type(e).__name__
        # asyncpg's client-side failures (no SQLSTATE): the connection is gone or unusable.
        if name in {"ConnectionDoesNotExistError", "InterfaceError", "InternalClientError"} and (
            "connection" in str(e).lower() or "closed" in str(e).lower()
        ):
            return True
    connection_invalidated = getattr(exc, "connection_invalidated", False)
    return connection_invalidated is True


def describe(exc: BaseException) -> str:
    """The operator's words for a database failure (``Store.health``)."""
    if isinstance(exc, StoreUnavailable):
        return exc.reason
    for e in _chain(exc):
        if _sqlstate(e) == PG_DISK_FULL or getattr(e, "sqlite_errorname", "") == "SQLITE_FULL":
            return "database disk full"
    text = " ".join(str(exc).split()) or type(exc).__name__
    low = text.lower()
    if "disk is full" in low or "no space" in low:
        return "database disk full"
    if "locked" in low or "busy" in low:
        return f"database locked: {text[:200]}"
    return f"database unreachable: {text[:200]}"

"""Which database errors the store waits out, and how it names them for the operator."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from campaignd.queue.faults import StoreUnavailable, describe, transient
from campaignd.queue.states import TransitionError


def _wrapped(orig: BaseException) -> sa.exc.DBAPIError:
    """As SQLAlchemy's asyncpg adapter raises it: a DBAPIError whose cause is asyncpg's."""
    try:
        try:
            raise orig
        except BaseException as exc:
            raise sa.exc.DBAPIError("UPDATE messages …", None, Exception(str(exc))) from exc
    except sa.exc.DBAPIError as outer:
        return outer


def test_a_locked_sqlite_database_is_weather(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError) as info:
        other.execute("BEGIN IMMEDIATE")
    assert transient(info.value)
    assert describe(info.value) == "database locked: database is locked"
    holder.execute("ROLLBACK")


def test_bugs_and_bad_data_are_not_retried(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db")
    with pytest.raises(sqlite3.OperationalError) as syntax:
        conn.execute("SELEKT 1")
    assert not transient(syntax.value)
    conn.execute("CREATE TABLE t (x UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError) as dup:
        conn.execute("INSERT INTO t VALUES (1)")
    assert not transient(dup.value)
    assert not transient(_wrapped(asyncpg.exceptions.UniqueViolationError("dup")))
    assert not transient(TransitionError("outcome", 1, "sent", "failed"))
    assert not transient(ValueError("x"))


@pytest.mark.parametrize(
    ("error", "health"),
    [
        (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator "
                                               "command"), "database unreachable: "),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
         "database unreachable: "),
        (asyncpg.exceptions.DiskFullError("could not extend file"), "database disk full"),
        (asyncpg.exceptions.ConnectionDoesNotExistError(
            "connection was closed in the middle of operation"), "database unreachable: "),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), "database unreachable: "),
        (ConnectionRefusedError(111, "Connect call failed"), "database unreachable: "),
    ],
)  # fmt: skip
def test_postgresql_going_away_is_weather(error: BaseException, health: str) -> None:
    exc = _wrapped(error)
    assert transient(exc)
    assert describe(exc).startswith(health)


def test_sqlite_disk_full_is_named_so() -> None:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorname = "SQLITE_FULL"
    assert transient(exc)
    assert describe(exc) == "database disk full"
    io = sqlite3.OperationalError("disk I/O error")
    io.sqlite_errorname = "SQLITE_IOERR_WRITE"
    assert transient(io) and describe(io) == "database unreachable: disk I/O error"


def test_unavailable_carries_its_reason() -> None:
    exc = StoreUnavailable("database disk full")
    assert transient(exc) and describe(exc) == "database disk full"

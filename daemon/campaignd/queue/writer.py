"""One thread that owns SQLite's write connection and commits a whole group of jobs per hand-off.

The event loop hands a job (``hot.py``) to the thread and awaits a future; the thread takes
every job that is waiting (up to ``max_items``), runs them in one ``BEGIN IMMEDIATE … COMMIT``
and resolves all their futures with one call back into the loop. Sixteen sessions finishing at
once cost one fsync and two thread hops, not sixteen of each, and starts of the next messages
share the commit with outcomes of the last ones.

Failures, off the fast path:

* a job that finds rows elsewhere than expected (``hot.Recheck``) or fails on its data (a
  constraint, a refused transition) makes the group roll back; each job is then run alone, in
  its careful mode, so one bad outcome cannot fail its neighbours;
* the database being unusable (``faults.transient``: locked past the busy timeout, disk
  I/O error, disk full, the file gone) is weather: the connection is dropped, the same jobs
  are retried with a backoff (0.05 s doubling to 2 s) until they commit, and ``health`` says
  why meanwhile. An outcome handed over is therefore committed as soon as the database takes
  writes again; its caller simply waits. Only closing the store ends the wait (after
  ``close_grace`` seconds), failing the jobs that are left with ``StoreUnavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from ..errors import StoreError
from . import hot
from .batcher import BatchStats
from .faults import StoreUnavailable, describe, transient

log = logging.getLogger("campaignd.store")
T = TypeVar("T")
Job = Callable[[sqlite3.Connection, bool], T]

PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON")
DISK_FULL = "database disk full"


@dataclass
class _Request(Generic[T]):
    job: Job[T]
    future: asyncio.Future[T]
    counted: int
    """Outcomes and starts in this request, for ``BatchStats``; 0 for other jobs."""
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Shared:
    health: str = "ok"
    since: float = field(default_factory=time.time)


class SqliteWriter:
    def __init__(
        self,
        path: str,
        *,
        busy_timeout: float,
        max_items: int = 500,
        close_grace: float = 10.0,
        name: str = "store-writer",
    ) -> None:
        self.path = path
        self._busy = busy_timeout
        self._max = max_items
        self._grace = close_grace
        self._name = name
        self._queue: queue.SimpleQueue[_Request[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = threading.Event()
        self._stopped: asyncio.Future[None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._state = _Shared()
        self._wrote = False
        self.stats = BatchStats()

    # ------------------------------------------------------------ event-loop side

    @property
    def health(self) -> str:
        """``ok``, or why writes fail right now."""
        return self._state.health

    @property
    def health_since(self) -> float:
        return self._state.since

    async def run(self, job: Job[T], *, counted: int = 0) -> T:
        """Run ``job`` in a write transaction (shared with whatever else waits); returns its
        result once committed. A cancelled caller does not cancel the job."""
        if self._closing.is_set():
            raise StoreError("the store is closed — outcomes can no longer be recorded")
        if self._thread is None:
            self._start()
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[T] = loop.create_future()
        # The caller may be cancelled meanwhile: mark a failure as seen either way.
        future.add_done_callback(_seen)
        self._queue.put(_Request(job, future, counted))
        # No shield needed: cancelling the caller cancels only this future, which the thread
        # skips when it resolves the group — the job itself still commits.
        return await future

    def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = self._loop.create_future()
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Commit everything handed over so far, then stop the thread and its connection."""
        self._closing.set()
        if self._thread is None or self._stopped is None:
            return
        self._queue.put(None)
        await self._stopped

    # ------------------------------------------------------------ writer thread

    def _main(self) -> None:
        try:
            stopping = False
            while not stopping:
                first = self._queue.get()
                if first is None:
                    break
                group = [first]
                size = max(1, first.counted)
                while size < self._max:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    group.append(nxt)
                    size += max(1, nxt.counted)
                self._execute(group)
        finally:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            left = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    item.error = StoreError("the store writer stopped before this was committed")
                    left.append(item)
            self._post(left, done=True)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._busy, isolation_level=None, check_same_thread=False
        )
        for pragma in PRAGMAS:
            conn.execute(f"PRAGMA {pragma}")
        return conn

    def _execute(self, group: list[_Request[Any]]) -> None:
        try:
            results = self._retrying(group, careful=False)
        except StoreUnavailable as exc:
            for r in group:
                r.error = exc
        except Exception:
            # One job's data failed the group: each alone, carefully, so only it fails.
            for r in group:
                try:
                    [r.result] = self._retrying([r], careful=True)
                except hot.Recheck:
                    r.error = StoreError("rows changed under a write transaction (a bug)")
                except Exception as exc:
                    r.error = _as_sqlalchemy(exc)
        else:
            for r, result in zip(group, results, strict=True):
                r.result = result
            n = sum(r.counted for r in group)
            if n:
                self.stats.transactions += 1
                self.stats.requests += sum(1 for r in group if r.counted)
                self.stats.items += n
                self.stats.largest = max(self.stats.largest, n)
        self._post(group)

    def _retrying(self, group: list[_Request[Any]], *, careful: bool) -> list[Any]:
        delay = 0.05
        gave_up_at: float | None = None
        while True:
            try:
                results = self._transaction(group, careful=careful)
            except sqlite3.Error as exc:
                if not transient(exc):
                    raise
                self._set_health(describe(exc), exc)
                self._drop_connection()
                if self._closing.is_set():
                    now = time.monotonic()
                    gave_up_at = gave_up_at or now + self._grace
                    if now >= gave_up_at:
                        raise StoreUnavailable(self._state.health) from exc
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            # A transaction that wrote nothing needs no free space: it proves a full disk
            # nothing, so only one that changed rows clears "disk full".
            if self._state.health != "ok" and (self._wrote or self._state.health != DISK_FULL):
                log.warning("database %s takes writes again", self.path)
                self._set_health("ok", None)
            return results

    def _transaction(self, group: list[_Request[Any]], *, careful: bool) -> list[Any]:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = [r.job(conn, careful) for r in group]
            conn.execute("COMMIT")
            self._wrote = conn.total_changes > before
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        return results

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None

    def _set_health(self, health: str, exc: BaseException | None) -> None:
        if health != self._state.health:
            if exc is not None:
                log.error("database %s: %s — retrying until it takes writes", self.path, health)
            # One assignment of a fresh object: readers on the loop see old or new, never half.
            self._state = _Shared(health)

    def _post(self, group: list[_Request[Any]], *, done: bool = False) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed under us
            loop.call_soon_threadsafe(_resolve, group, self._stopped if done else None)


def _resolve(group: list[_Request[Any]], stopped: asyncio.Future[None] | None) -> None:
    for r in group:
        if r.future.done():
            continue
        if r.error is not None:
            r.future.set_exception(r.error)
        else:
            r.future.set_result(r.result)
    if stopped is not None and not stopped.done():
        stopped.set_result(None)


def _seen(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _as_sqlalchemy(exc: Exception) -> Exception:
    """The same error the SQLAlchemy path raises (callers catch ``sqlalchemy.exc``)."""
    if isinstance(exc, sqlite3.Error):
        return sa.exc.DBAPIError.instance(None, None, exc, sqlite3.Error)
    return exc

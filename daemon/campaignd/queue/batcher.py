"""Group commit: many concurrent callers, one writer task, one transaction per burst.

Each ``await batcher.submit(items)`` returns once *its* items are committed, so "a sent is
committed before the SMTP session takes its next message" still holds, but sixteen sessions
finishing at once cost one fsync instead of sixteen. Whatever is queued when the writer wakes
(up to ``max_items``) goes into one transaction; while it commits, the next burst gathers.
If a combined transaction fails, each caller's part is retried alone, so one bad outcome
cannot fail its neighbours. A failure the ``transient`` predicate calls weather (the database
restarting, unreachable, its disk full) fails nobody: the same items are retried with a backoff
until they commit — they stay in memory meanwhile — and ``on_fault`` hears of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ..errors import StoreError
from .faults import StoreUnavailable, describe

log = logging.getLogger("campaignd.store")
T = TypeVar("T")


@dataclass
class _Request(Generic[T]):
    items: Sequence[T]
    done: asyncio.Future[None] = field(init=False)

    def __post_init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()
        # The caller may have been cancelled meanwhile: mark a failure as seen either way.
        self.done.add_done_callback(lambda f: f.cancelled() or f.exception())


@dataclass
class BatchStats:
    requests: int = 0
    items: int = 0
    transactions: int = 0
    largest: int = 0
    """Most items committed in one transaction."""


class GroupCommit(Generic[T]):
    def __init__(
        self,
        commit: Callable[[Sequence[T]], Awaitable[None]],
        *,
        max_items: int = 500,
        name: str = "store-writer",
        transient: Callable[[BaseException], bool] | None = None,
        on_fault: Callable[[BaseException | None], None] | None = None,
        close_grace: float = 10.0,
    ) -> None:
        self._commit_once = commit
        self._transient = transient
        self._on_fault = on_fault
        self._grace = close_grace
        self._max = max_items
        self._queue: asyncio.Queue[_Request[T] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._name = name
        self._closed = False
        self.stats = BatchStats()

    async def submit(self, items: Sequence[T]) -> None:
        """Commit ``items`` (in one transaction with whatever else is waiting)."""
        if not items:
            return
        if self._closed:
            raise StoreError("the store is closed — outcomes can no longer be recorded")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=self._name)
        request = _Request(items)
        self._queue.put_nowait(request)
        # A cancelled caller does not cancel the commit: the outcome is still recorded.
        await asyncio.shield(request.done)

    async def close(self) -> None:
        """Commit everything submitted so far, then stop the writer."""
        self._closed = True
        if self._task is None:
            return
        self._queue.put_nowait(None)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        stopping = False
        burst: list[_Request[T]] = []
        try:
            while not stopping:
                first = await self._queue.get()
                if first is None:
                    return
                # One turn of the event loop first: tasks that are ready to submit (other SMTP
                # sessions finishing now) join this transaction instead of waiting for the next
                # — fewer, larger commits for the same latency.
                await asyncio.sleep(0)
                burst = [first]
                size = len(first.items)
                while size < self._max and not self._queue.empty():
                    nxt = self._queue.get_nowait()
                    if nxt is None:
                        stopping = True
                        break
                    burst.append(nxt)
                    size += len(nxt.items)
                await self._write(burst)
                burst = []
        finally:
            # Cancelled (the loop is going away): nobody may wait forever on an unknown outcome.
            gone = StoreError("the store writer stopped before these outcomes were committed")
            for request in burst:
                _settle(request, gone)
            while not self._queue.empty():
                if (left := self._queue.get_nowait()) is not None:
                    _settle(left, gone)

    async def _write(self, burst: list[_Request[T]]) -> None:
        items = [item for request in burst for item in request.items]
        try:
            await self._commit(items)
        except Exception as exc:
            if len(burst) == 1:
                _settle(burst[0], exc)
                return
            log.warning(
                "group commit of %d outcomes failed (%s); retrying one by one", len(items), exc
            )
            for request in burst:
                try:
                    await self._commit(request.items)
                except Exception as single:
                    _settle(request, single)
                else:
                    self._count([request])
                    _settle(request, None)
            return
        self._count(burst)
        for request in burst:
            _settle(request, None)

    async def _commit(self, items: Sequence[T]) -> None:
        delay = 0.05
        give_up: float | None = None
        while True:
            try:
                await self._commit_once(items)
            except Exception as exc:
                if self._transient is None or not self._transient(exc):
                    raise
                if self._on_fault is not None:
                    self._on_fault(exc)
                if self._closed:
                    now = asyncio.get_running_loop().time()
                    give_up = give_up or now + self._grace
                    if now >= give_up:
                        raise StoreUnavailable(describe(exc)) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if self._on_fault is not None:
                self._on_fault(None)
            return

    def _count(self, burst: list[_Request[T]]) -> None:
        n = sum(len(r.items) for r in burst)
        self.stats.transactions += 1
        self.stats.requests += len(burst)
        self.stats.items += n
        self.stats.largest = max(self.stats.largest, n)


def _settle(request: _Request[T], exc: BaseException | None) -> None:
    if request.done.done():
        return
    if exc is None:
        request.done.set_result(None)
    else:
        request.done.set_exception(exc)

"""Rendering off the event loop, with a hard time limit (SPEC §3 "Rendering").

The sandbox's budget (config/templates.py) stops almost every runaway template cooperatively;
what it cannot interrupt (one long C call, a loop with no hook inside) runs in this thread, so
the event loop keeps answering ``/healthz``, sending other campaigns' mail and obeying SIGTERM.
A render past its hard limit is abandoned: its budget is cancelled (it stops at its next hook),
the jobs queued behind it move to a fresh thread, and the message fails with the reason.
Daemon threads, so an abandoned render never holds up the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from ..config.templates import MAX_RENDER_SECONDS, RenderBudget, budgeted
from ..errors import RenderCutOff

T = TypeVar("T")

HARD_LIMIT = MAX_RENDER_SECONDS * 2.5
"""Seconds before a render that ignores its budget is abandoned."""


class _Job(Generic[T]):
    __slots__ = ("budget", "fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[], T],
        budget: RenderBudget,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[T],
    ) -> None:
        self.fn, self.budget, self.loop, self.future = fn, budget, loop, future


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # timed out or cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _serve(jobs: queue.SimpleQueue[_Job[Any] | None]) -> None:
    while (job := jobs.get()) is not None:
        if job.budget.cancelled:
            continue
        result: Any = None
        error: BaseException | None = None
        try:
            with budgeted(job.budget):
                result = job.fn()
        except Exception as exc:  # handed to the awaiting task, which decides
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop closed while we rendered
            job.loop.call_soon_threadsafe(_settle, job.future, result, error)


class RenderThread:
    """One long-lived worker thread for rendering; replaced when a render hangs."""

    def __init__(self, hard_limit: float = HARD_LIMIT) -> None:
        self.hard_limit = hard_limit
        self.abandoned = 0
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._started = False  # on first use: a dispatcher that never sends starts no thread

    def _start(self) -> None:
        threading.Thread(
            target=_serve, args=(self._jobs,), name="campaignd-render", daemon=True
        ).start()

    async def run(self, fn: Callable[[], T], *, what: str) -> T:
        """``fn()`` in the render thread under a fresh budget; ``RenderCutOff`` past the limit."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        budget = RenderBudget()
        if not self._started:
            self._started = True
            self._start()
        self._jobs.put(_Job(fn, budget, loop, future))
        # A timer on the job's own future (not ``wait_for``, which wraps every render in a
        # second future and callbacks): it fails the future if the render is still running.
        timer = loop.call_later(self.hard_limit, self._cut_off, future, budget, what)
        try:
            return await future
        finally:
            timer.cancel()

    def _cut_off(self, future: asyncio.Future[Any], budget: RenderBudget, what: str) -> None:
        if future.done():
            return
        budget.cancel()
        self._replace()
        future.set_exception(
            RenderCutOff(
                f"{what}: rendering cut off after {self.hard_limit:g} s — the template loops "
                "or builds text without bound",
                template=what.removeprefix("template "),
            )
        )

    def _replace(self) -> None:
        """The thread is stuck: later jobs go to a new one; the old one ends after its job."""
        old = self._jobs
        self._jobs = queue.SimpleQueue()
        self.abandoned += 1
        while True:
            try:
                job = old.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._jobs.put(job)
        old.put(None)
        self._start()

    def close(self) -> None:
        self._jobs.put(None)

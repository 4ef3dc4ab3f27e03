"""One supervisor for the daemon's long-running loops: none of them dies silently.

A loop that raises is logged once with its traceback and restarted after a backoff (0.5 s
doubling to 30 s), the way a queue manager's runners are restarted and resume their work; a
loop that returns has finished on purpose (the daemon is stopping). Loops report progress
(``progress(name)``) on every pass, which clears their failure count and feeds ``/healthz``
and the ``campaignd_loop_*`` metrics: a loop that keeps failing, or stops making progress
while it should, makes the daemon unhealthy, and systemd's watchdog then restarts it.

One-shot background jobs (an auto-pause, closing an old pool) go through ``spawn``, so their
exception is logged instead of becoming "Task exception was never retrieved".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final, Literal

log = logging.getLogger("campaignd.supervisor")

LoopState = Literal["running", "backoff", "stopped"]
INITIAL_BACKOFF: Final = 0.5
MAX_BACKOFF: Final = 30.0
FAILING_AFTER: Final = 3
"""Consecutive failures (without progress in between) that make a loop count as failing."""


@dataclass
class Loop:
    name: str
    state: LoopState = "running"
    restarts: int = 0
    failures: int = 0
    """Consecutive failures since the last progress."""
    last_error: str | None = None
    last_progress: float = 0.0
    """Epoch seconds of the last pass (0: none yet)."""
    started_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "restarts": self.restarts,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_progress": self.last_progress or None,
        }


class Supervisor:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        self.clock = clock
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.loops: dict[str, Loop] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._jobs: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ loops

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run()`` as the loop ``name`` until it returns or the supervisor stops."""
        if name in self._tasks and not self._tasks[name].done():
            raise RuntimeError(f"loop {name!r} is already running")
        self.loops[name] = Loop(name, started_at=self.clock())
        self._tasks[name] = asyncio.create_task(self._guard(name, run), name=name)

    def cancel(self, name: str) -> None:
        """Stop loop ``name`` without waiting (a feedback source removed from the config)."""
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()
        self.loops.pop(name, None)

    def progress(self, name: str) -> None:
        loop = self.loops.get(name)
        if loop is not None:
            loop.last_progress = self.clock()
            loop.failures = 0
            loop.state = "running"

    def failing(self) -> list[Loop]:
        return [loop for loop in self.loops.values() if loop.failures >= FAILING_AFTER]

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {name: loop.as_dict() for name, loop in sorted(self.loops.items())}

    async def _guard(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = self.loops[name]
        backoff = self.initial_backoff
        while True:
            loop.state = "running"
            try:
                await run()
            except asyncio.CancelledError:
                loop.state = "stopped"
                raise
            except Exception as exc:
                loop.restarts += 1
                loop.failures += 1
                loop.last_error = f"{type(exc).__name__}: {exc}"
                if loop.failures == 1:
                    backoff = self.initial_backoff  # it made progress since the last failure
                log.error(
                    "%s loop failed (%s); restarting in %.1fs",
                    name,
                    loop.last_error,
                    backoff,
                    exc_info=loop.failures == 1 or loop.failures % 10 == 0,
                )
                loop.state = "backoff"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)
                continue
            loop.state = "stopped"
            return

    # ------------------------------------------------------------ one-shot jobs

    def spawn(self, name: str, job: Coroutine[Any, Any, Any]) -> None:
        """Run ``job`` in the background; an exception is logged, never lost."""
        task = asyncio.create_task(job, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._job_done)

    def _job_done(self, task: asyncio.Task[Any]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("%s failed: %s", task.get_name(), exc, exc_info=exc)

    # ------------------------------------------------------------ stop

    async def stop(
        self,
        names: list[str] | None = None,
        *,
        timeout: float = 5.0,  # noqa: ASYNC109 - a deadline for the cancelled, not a cancel
    ) -> list[str]:
        """Cancel loops (all by default) and wait for them, bounded: a cancellation swallowed
        deep inside a driver must not hang the exit. Returns the names that did not stop."""
        chosen = {n: t for n, t in self._tasks.items() if names is None or n in names}
        for task in chosen.values():
            task.cancel()
        if names is None:
            for job in list(self._jobs):
                job.cancel()
        pending = [t for t in (*chosen.values(), *self._jobs) if not t.done()]
        if not pending:
            return []
        _, stuck = await asyncio.wait(pending, timeout=timeout)
        for task in stuck:
            log.warning("task %s did not stop in time; leaving it", task.get_name())
        with contextlib.suppress(Exception):
            for task in chosen.values():
                if task.done() and not task.cancelled():
                    task.result()
        return [t.get_name() for t in stuck]

    async def wait(self, name: str, timeout: float) -> bool:  # noqa: ASYNC109 - a deadline
        """Wait for loop ``name`` to end by itself; False if it is still running."""
        task = self._tasks.get(name)
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

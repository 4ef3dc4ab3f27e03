"""The clock: APScheduler wakes the conductor at the instants something falls due.

It holds no business state. What is due is a pure function of the campaign file, what the
database remembers, and now (``due``); the conductor calls it on every pass and hands the
clock the next instant per campaign (``Clock.plan``), including the next drip step it found in
the database. The scheduler's jobs are only alarms in memory: a start or a reload derives them
again, so there is no second job store that could disagree with the database, and an alarm
that is lost costs at most the conductor's periodic pass.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

log = logging.getLogger("campaignd.clock")


class Clock:
    """One in-memory APScheduler job per campaign: "look at this campaign at T"."""

    def __init__(self, wake: Callable[[str], None]) -> None:
        self._wake = wake
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            # An alarm that is late (a busy loop, a suspended laptop) still rings, once.
            job_defaults={"coalesce": True, "misfire_grace_time": None, "max_instances": 1},
        )
        self._planned: dict[str, float] = {}

    def start(self) -> None:
        """Needs the running event loop."""
        self._scheduler.start()

    def shutdown(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    @property
    def planned(self) -> dict[str, float]:
        """Alarm key → epoch seconds, for the status page and tests."""
        return dict(self._planned)

    def plan(self, wakes: Mapping[str, float | None]) -> None:
        """Replace the alarms: one per key with a time; keys absent or None have none."""
        for key in [k for k in self._planned if wakes.get(k) is None]:
            del self._planned[key]
            with contextlib.suppress(JobLookupError):  # it may have just rung
                self._scheduler.remove_job(key)
        for key, at in wakes.items():
            if at is None or self._planned.get(key) == at:
                continue
            self._planned[key] = at
            self._scheduler.add_job(
                self._ring,
                DateTrigger(run_date=datetime.fromtimestamp(at, UTC)),
                id=key,
                args=(key, at),
                replace_existing=True,
            )

    async def _ring(self, key: str, at: float) -> None:
        # An async job runs on the event loop itself (a plain function would run in a thread).
        if self._planned.get(key) == at:
            del self._planned[key]
        log.debug("alarm %s for %s", key, datetime.fromtimestamp(at, UTC).isoformat())
        self._wake(key)

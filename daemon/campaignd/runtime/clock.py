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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from ..config.model import Campaign
from ..plan.schedule import EditionDue, edition_due, next_fire

log = logging.getLogger("campaignd.clock")

_TINY = timedelta(microseconds=1)


@dataclass(frozen=True)
class Previous:
    """What the database remembers of a campaign, as far as time is concerned."""

    first_seen: datetime
    """When the daemon first loaded the campaign (its row's ``created_at``)."""
    last_fired: datetime | None = None
    """The firing the latest edition of a recurring campaign was sent for."""


@dataclass(frozen=True)
class Due:
    started: bool
    """``start:`` has come (or there is none)."""
    edition: EditionDue | None
    """A recurring campaign owes this edition now."""
    wake_at: datetime | None
    """The next instant the start or a firing falls due (None: never, as far as time goes)."""


def _aware(at: datetime, zone: ZoneInfo) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=zone)


def due(campaign: Campaign, previous: Previous, now: datetime, zone: ZoneInfo) -> Due:
    """What the campaign's ``start:`` and ``schedule:`` make due at ``now``.

    ``zone`` reads a ``start:`` without offset and the cron line (the daemon's ``timezone``).
    A start in the future waits for it; one in the past means now. A recurring campaign owes
    an edition for the firings after it was first loaded (and after its start) that have no
    edition yet — one edition however many were missed.
    """
    start = _aware(campaign.start, zone) if campaign.start is not None else None
    if start is not None and start > now:
        return Due(started=False, edition=None, wake_at=start)
    if campaign.schedule is None:
        return Due(started=True, edition=None, wake_at=None)
    expr = campaign.schedule.cron
    # A firing at the very instant the campaign starts (or was loaded) belongs to it.
    since = max(previous.first_seen, start) if start is not None else previous.first_seen
    since -= _TINY
    edition = edition_due(expr, zone, last_fired=previous.last_fired, since=since, now=now)
    after = max(now, previous.last_fired or since)
    return Due(started=True, edition=edition, wake_at=next_fire(expr, after, zone))


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

"""Editions of cron campaigns and drip steps: when the next one fires, which were missed
(pure: every instant is an argument).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from ..config.cron import cron_triggers
from .windows import utc_of

HORIZON_DAYS = 400
MISSED_COUNT_LIMIT = 1000
UNLIMITED = 10**15  # stands for "no limit" in integer capacity arithmetic

_MIDNIGHT = time(0, 0)
_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


def _fold_end(ts: datetime, zone: ZoneInfo) -> datetime:
    """The first instant after ``ts`` that is not in the second pass of a repeated hour."""
    lo = math.floor(ts.timestamp())
    hi = lo + 3600
    while datetime.fromtimestamp(hi, zone).fold:
        hi += 3600
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).fold:
            lo = mid
        else:
            hi = mid
    return utc_of(hi)


def _next_after(trigger: CronTrigger, after: datetime, zone: ZoneInfo) -> datetime | None:
    # APScheduler 3.11 gets stuck inside a repeated (fall-back) hour, even answering with
    # earlier times. A wall-clock time fires once, so the repeat is skipped outright.
    probe = after
    for _ in range(64):
        if probe.astimezone(zone).fold:
            probe = _fold_end(probe, zone) - _TINY
        fire: datetime | None = trigger.get_next_fire_time(None, probe + _TINY)
        if fire is None:
            return None
        fire = fire.astimezone(UTC)
        if fire <= probe:
            probe += timedelta(minutes=1)
        elif fire.astimezone(zone).fold:
            probe = fire
        else:
            return fire
    return None


def next_fire(expr: str, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The first firing strictly after ``after`` (UTC), None if it never fires again.

    Raises ValueError (with the reason ``validate_cron`` gives) for a bad line.
    """
    fires = [f for t in cron_triggers(expr, zone) if (f := _next_after(t, after, zone)) is not None]
    return min(fires) if fires else None


def _last_fire(expr: str, since: datetime, now: datetime, zone: ZoneInfo) -> datetime | None:
    """The latest firing in (since, now], found by looking back over doubling spans."""
    span = timedelta(minutes=1)
    while True:
        lo = max(since, now - span)
        fire = next_fire(expr, lo, zone)
        if fire is not None and fire <= now:
            while (later := next_fire(expr, fire, zone)) is not None and later <= now:
                fire = later
            return fire
        if lo == since:
            return None
        span *= 2


def missed_editions(
    expr: str, last_fire: datetime | None, created: datetime, now: datetime, zone: ZoneInfo
) -> tuple[int, datetime | None]:
    """Firings in (last_fire or created, now] and the latest of them.

    The count stops at ``MISSED_COUNT_LIMIT`` (a minutely line left off for a day): it is
    only reported, since the daemon catches up with a single edition, not one per firing.
    """
    since = last_fire or created
    count = 0
    latest: datetime | None = None
    fire = next_fire(expr, since, zone)
    while fire is not None and fire <= now:
        count += 1
        latest = fire
        if count >= MISSED_COUNT_LIMIT:
            return count, _last_fire(expr, fire, now, zone) or fire
        fire = next_fire(expr, fire, zone)
    return count, latest


CATCH_UP_GRACE = timedelta(minutes=5)
"""An edition started later than this after its firing was caught up (the daemon was down)."""


@dataclass(frozen=True)
class EditionDue:
    """A recurring campaign's edition to send now, and what it stands for."""

    fired_at: datetime
    """The firing it is sent for: the latest one due."""
    firings: int
    """Firings since the previous edition (at most ``MISSED_COUNT_LIMIT``)."""
    caught_up: bool
    """Sent late or for several firings at once: the daemon was not running at the firing."""

    @property
    def missed(self) -> int:
        """Firings that get no edition of their own (one catch-up edition stands for all)."""
        return self.firings - 1


def edition_due(
    expr: str,
    zone: ZoneInfo,
    *,
    last_fired: datetime | None,
    since: datetime,
    now: datetime,
    grace: timedelta = CATCH_UP_GRACE,
) -> EditionDue | None:
    """The edition a cron schedule owes at ``now``, None if none.

    Firings are counted in (``last_fired`` or ``since``, ``now``]; any number of them makes one
    edition, for the latest — a daemon that was down for three Tuesdays sends one edition, not
    three.
    """
    count, latest = missed_editions(expr, last_fired, since, now, zone)
    if not count or latest is None:
        return None
    return EditionDue(latest, count, caught_up=count > 1 or now - latest > grace)


def step_due(previous_sent: datetime, after: timedelta) -> datetime:
    return previous_sent + after

"""Send windows: pure time arithmetic shared by ``campaignctl plan`` and the daemon.

Both sides call these same functions so the plan an operator reads is the schedule the daemon
keeps. Nothing here reads a clock or a file: every instant is an argument.

A window's open *period* belongs to the local day it starts on and runs from the first moment
the local clock shows the start time to the last moment it shows the end time. On a
spring-forward day a start or end inside the skipped hour moves to the instant the clock jumps;
on a fall-back day the period covers the repeated hour. Working in periods of real instants
(not wall-clock comparisons) keeps ``in_window``, ``next_window_open`` and ``window_close``
consistent with one another.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..config.model import WEEKDAYS, Window

HORIZON_DAYS = 400
MISSED_COUNT_LIMIT = 1000
UNLIMITED = 10**15  # stands for "no limit" in integer capacity arithmetic

_MIDNIGHT = time(0, 0)
_DAY = timedelta(days=1)
_TINY = timedelta(microseconds=1)


# ---------------------------------------------------------------- windows


@lru_cache(maxsize=1024)
def _zone_or_none(name: str) -> ZoneInfo | None:
    # Cached because a bad recipient zone would otherwise hit the filesystem per message.
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def window_zone(window: Window, recipient_tz: str | None) -> ZoneInfo:
    """The zone a window is read in; a recipient without a valid IANA zone gets the fallback."""
    if window.timezone != "recipient":
        return ZoneInfo(window.timezone)
    zone = _zone_or_none(recipient_tz) if recipient_tz else None
    return zone if zone is not None else ZoneInfo(window.fallback_timezone)


def _exists(naive: datetime, ts: float, zone: ZoneInfo) -> bool:
    return datetime.fromtimestamp(ts, zone).replace(tzinfo=None) == naive


def local_ts(day: date, at: time, zone: ZoneInfo, *, latest: bool) -> float:
    """The instant ``zone``'s clock shows ``day at``: its earliest or latest occurrence.

    A time skipped by a spring-forward jump maps to the instant of the jump.
    """
    naive = datetime.combine(day, at)
    ts = naive.replace(tzinfo=zone, fold=1 if latest else 0).timestamp()
    if _exists(naive, ts, zone):
        return ts
    # In a gap fold=0 reads the time with the old offset (past the jump), fold=1 with the
    # new one (before it); the jump lies between, on a whole second.
    lo = math.floor(naive.replace(tzinfo=zone, fold=1).timestamp())
    hi = math.ceil(naive.replace(tzinfo=zone, fold=0).timestamp())
    offset_after = datetime.fromtimestamp(hi, zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == offset_after:
            hi = mid
        else:
            lo = mid
    return float(hi)


def open_day(window: Window, day: date) -> bool:
    return WEEKDAYS[day.weekday()] in window.days and day not in window.except_dates


def window_period(window: Window, zone: ZoneInfo, day: date) -> tuple[float, float] | None:
    """The open period that starts on local ``day`` as (open, close) timestamps, if any."""
    if not open_day(window, day):
        return None
    hours = window.hours
    if hours is None:
        start, end, end_day = _MIDNIGHT, _MIDNIGHT, day + _DAY
    else:
        start, end = hours.start, hours.end
        end_day = day if end > start else day + _DAY
    opens = local_ts(day, start, zone, latest=False)
    closes = local_ts(end_day, end, zone, latest=True)
    # A range lying wholly inside a skipped hour does not happen that day.
    return (opens, closes) if opens < closes else None


def period_at(window: Window, zone: ZoneInfo, ts: float) -> tuple[date, float, float] | None:
    local = datetime.fromtimestamp(ts, zone).date()
    # A repeated hour at midnight can put the next day's period around ``ts`` too.
    for day in (local - _DAY, local, local + _DAY):
        p = window_period(window, zone, day)
        if p is not None and p[0] <= ts < p[1]:
            return day, p[0], p[1]
    return None


def utc_of(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def in_window(window: Window, at: datetime, zone: ZoneInfo) -> bool:
    return period_at(window, zone, at.timestamp()) is not None


def next_window_open(window: Window, at: datetime, zone: ZoneInfo) -> datetime | None:
    """``at`` if the window is open then, else the instant it next opens (UTC)."""
    ts = at.timestamp()
    if period_at(window, zone, ts) is not None:
        return at
    local = datetime.fromtimestamp(ts, zone).date()
    for i in range(HORIZON_DAYS + 1):
        p = window_period(window, zone, local + timedelta(days=i))
        if p is not None and p[0] > ts:
            return utc_of(p[0])
    return None


def window_close(window: Window, at: datetime, zone: ZoneInfo) -> datetime | None:
    """When the open period around ``at`` ends; ``at`` itself when closed, None if never.

    Periods that touch (all-day windows on consecutive days) count as one.
    """
    ts = at.timestamp()
    found = period_at(window, zone, ts)
    if found is None:
        return at
    day, _, closes = found
    for i in range(1, HORIZON_DAYS + 1):
        p = window_period(window, zone, day + timedelta(days=i))
        if p is None or p[0] > closes:
            return utc_of(closes)
        closes = max(closes, p[1])
    return None

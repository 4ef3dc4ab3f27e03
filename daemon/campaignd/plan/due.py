"""What a campaign's ``start:`` and ``schedule:`` make due at an instant: a pure function of
(campaign file, what the database remembers, now), so tests move a fake clock and a restart
or reload derives the same answer (runtime/clock.py only rings the alarm).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from ..config.model import Campaign
from .cron import EditionDue, edition_due, next_fire

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

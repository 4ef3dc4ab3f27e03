"""Limits shared by every daemon on one PostgreSQL database (issue 13, item 5).

Paces are taken from the database at the SMTP gate (``take``): one row per pace, advanced in
one short transaction. Quotas and the warm-up cap count accepted messages, which the database
holds for every daemon; the limiter counts from a view of them (``refresh``) plus its own
acceptances since and its own transactions in flight. The view is read at most every
``REFRESH`` seconds — and before every permit once a sender is within ``NEAR`` messages of a
quota or cap, so near it only the other daemons' transactions in flight can go past it.

SQLite has one daemon: none of this runs, the limiter keeps everything in process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date
from typing import Protocol

from .limits import Limiter, PaceWant, SharedUse, decide

REFRESH = 1.0
NEAR = 20
# A permit due this soon is booked at once and waited for here, holding the session: the pace
# then keeps its schedule instead of losing a database round trip at every interval.
HORIZON = 0.25


class SharedStore(Protocol):
    """What shared limits need of the store (queue.Store implements it)."""

    async def book_paces(
        self,
        wants: Sequence[PaceWant],
        decide: Callable[..., tuple[float, dict[str, tuple[float, float]]]],
        *,
        horizon: float = 0.0,
    ) -> tuple[bool, float]: ...
    async def accepted_use(
        self,
        *,
        service: str | None = None,
        campaign: str | None = None,
        windows: Sequence[float] = (),
        now: float,
        day: date | None = None,
    ) -> tuple[dict[float, tuple[int, list[float]]], int | None]: ...
    async def first_send_day(self, service: str) -> date | None: ...


class SharedLimits:
    """The dispatcher's gate on PostgreSQL: fresh shared counts, then the shared permit."""

    def __init__(
        self, store: SharedStore, limiter: Limiter, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.limiter = limiter
        self.clock = clock
        limiter.sharing = True
        self._read_at: dict[str, float] = {}

    async def refresh(self, service_id: str, campaign_id: str) -> None:
        """Read every daemon's acceptances of the service and campaign if the view is older
        than REFRESH, or at once near a quota or the warm-up cap."""
        for sender, windows in self.limiter.shared_needs(service_id, campaign_id).items():
            now = self.clock()
            room = self.limiter.shared_room(sender, now)
            fresh = now - self._read_at.get(sender, -1e18) < REFRESH
            if fresh and room is not None and room > NEAR:
                continue
            kind, _, ident = sender.partition(":")
            day = self.limiter.today(now) if kind == "service" else None
            wants_day = kind == "service" and self.limiter.wants_today(ident)
            counts, today = await self.store.accepted_use(
                service=ident if kind == "service" else None,
                campaign=ident if kind == "campaign" else None,
                windows=windows,
                now=now,
                day=day if wants_day else None,
            )
            first = None
            if wants_day and self.limiter.first_day(ident) is None:
                first = await self.store.first_send_day(ident)
            self._read_at[sender] = now
            # Read after ``now``: what committed before it is in; our own later ones the
            # limiter adds (SharedUse.as_of).
            self.limiter.share(
                sender, SharedUse(now, counts, today, day if wants_day else None), first_day=first
            )

    async def refresh_all(self, service_ids: Sequence[str], campaign_ids: Sequence[str]) -> None:
        """Every sender's view, at most every REFRESH: the status page and /metrics show every
        daemon's ``sent_today`` even while this one sends nothing."""
        for sid in service_ids:
            await self.refresh(sid, "")
        for cid in campaign_ids:
            await self.refresh("", cid)

    async def take(self, service_id: str, domain: str, campaign_id: str) -> tuple[bool, float]:
        """The shared permit of every pace the transaction needs, booked if due within
        HORIZON: (True, when to use it) or (False, when to ask again)."""
        wants = self.limiter.pace_wants(service_id, domain, campaign_id, self.clock())
        if not wants:
            return True, self.clock()
        return await self.store.book_paces(wants, decide, horizon=HORIZON)

"""Limits shared by every daemon on one PostgreSQL database (issue 13, item 5).

Paces: each (a service, a shaped or slowed domain, a campaign) is one ``limit_paces`` row
holding its GCRA theoretical arrival time; a permit locks the rows of every pace it needs (in
key order, so two daemons never deadlock), decides with the in-process limiter's arithmetic
(``delivery.limits.decide``) and advances them all in the same transaction — so N daemons
together never exceed a pace.

Quotas and the warm-up cap count accepted messages, which the messages (``sent_at``) and
``service_days`` already hold for every daemon: ``accepted_use`` reads them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .history import sent_on_day
from .tables import limit_paces, messages, metadata

__all__ = [
    "Decide",
    "Want",
    "accepted_use",
    "create_table",
    "db_clock",
    "limit_paces",
    "take",
    "take_now",
]

OLDEST = 64
"""How many of a quota window's oldest acceptances a view keeps: enough to say when the window
frees up for everything in flight, without reading a 50,000/day window's every row."""


class Want(Protocol):
    """One pace a permit needs (``delivery.limits.PaceWant``)."""

    @property
    def key(self) -> str: ...

    @property
    def interval(self) -> float: ...


W = TypeVar("W", bound=Want)
Decide = Callable[
    [Sequence[W], Mapping[str, tuple[float, float]], float, float],
    tuple[float, dict[str, tuple[float, float]]],
]


async def create_table(engine: AsyncEngine) -> None:
    """The table alone, for tests on a bare database (the daemon's come from migrations)."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: metadata.create_all(c, tables=[limit_paces]))


async def _lock(conn: AsyncConnection, ordered: Sequence[W]) -> dict[str, tuple[float, float]]:
    await conn.execute(
        pg_insert(limit_paces)
        .values([{"key": w.key, "tat": -math.inf, "interval": w.interval} for w in ordered])
        .on_conflict_do_nothing()
    )
    rows = await conn.execute(
        sa.select(limit_paces.c.key, limit_paces.c.tat, limit_paces.c.interval)
        .where(limit_paces.c.key.in_([w.key for w in ordered]))
        .order_by(limit_paces.c.key)
        .with_for_update()
    )
    return {row.key: (row.tat, row.interval) for row in rows}


async def _advance(conn: AsyncConnection, after: Mapping[str, tuple[float, float]]) -> None:
    await conn.execute(
        sa.update(limit_paces)
        .where(limit_paces.c.key == sa.bindparam("k"))
        .values(tat=sa.bindparam("t"), interval=sa.bindparam("i")),
        [{"k": k, "t": tat, "i": interval} for k, (tat, interval) in sorted(after.items())],
    )


async def take(
    conn: AsyncConnection, wants: Sequence[W], now: float, decide: Decide[W]
) -> float | None:
    """Take one permit of every pace in ``wants`` at ``now``, all or none, inside the
    caller's transaction; ``decide`` is the limiter's GCRA (``delivery.limits.decide``). None
    if taken; else the earliest time to ask again."""
    if not wants:
        return None
    ordered = sorted(wants, key=lambda w: w.key)
    stored = await _lock(conn, ordered)
    earliest, after = decide(ordered, stored, now, 0.0)
    if earliest > now:
        return earliest
    await _advance(conn, after)
    return None


async def db_clock(conn: AsyncConnection) -> float:
    """The database server's clock, now (epoch seconds)."""
    clock: float | None = await conn.scalar(
        sa.select(sa.func.extract("epoch", sa.func.clock_timestamp()))
    )
    assert clock is not None
    return float(clock)


async def take_now(
    conn: AsyncConnection, wants: Sequence[W], decide: Decide[W], horizon: float = 0.0
) -> tuple[bool, float]:
    """``take`` at the database's clock, read once the rows are locked: daemons on hosts
    whose clocks disagree by a few milliseconds still space their permits by the pace.

    A permit due within ``horizon`` seconds is booked for then. Returns (taken, at) in the
    database's clock: when the booked permit may be used, or when to ask again."""
    # After the lock, not in the locking statement: that one's clock may predate the wait.
    ordered = sorted(wants, key=lambda w: w.key)
    stored = await _lock(conn, ordered) if ordered else {}
    now = await db_clock(conn)
    if not ordered:
        return True, now
    earliest, after = decide(ordered, stored, now, horizon)
    if earliest > now + horizon:
        return False, earliest
    await _advance(conn, after)
    return True, max(now, earliest)


async def accepted_use(
    conn: AsyncConnection,
    *,
    service: str | None = None,
    campaign: str | None = None,
    windows: Sequence[float],
    now: float,
    day: date | None = None,
) -> tuple[dict[float, tuple[int, list[float]]], int | None]:
    """Every daemon's accepted messages of a service or a campaign: per window of ``windows``
    seconds up to ``now``, (how many, the ``OLDEST`` oldest ascending); and, with ``day``, the
    service's count that day (``service_days``, as the warm-up cap reads it)."""
    cond = (
        messages.c.service == service if service is not None else messages.c.campaign_id == campaign
    )
    out: dict[float, tuple[int, list[float]]] = {}
    for per in windows:
        inside = sa.and_(cond, messages.c.sent_at > now - per)
        count = await conn.scalar(sa.select(sa.func.count()).select_from(messages).where(inside))
        oldest = await conn.execute(
            sa.select(messages.c.sent_at).where(inside).order_by(messages.c.sent_at).limit(OLDEST)
        )
        times: list[float] = list(map(float, oldest.scalars()))
        out[per] = (int(count or 0), times)
    today = (
        await sent_on_day(conn, service, day) if service is not None and day is not None else None
    )
    return out, today

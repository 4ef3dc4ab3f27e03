"""Pace permits shared by every daemon on one PostgreSQL database (issue 13, item 5).

Each pace (a service, a shaped domain, a campaign) is one row holding its GCRA theoretical
arrival time; a permit locks the rows of every pace it needs (in key order, so two daemons
never deadlock), decides with the same arithmetic as the in-process limiter (limits.Gcra) and
advances them all in the same transaction — so N daemons together never exceed a pace.

The table lives in its own metadata (``create_table``), not in the queue's migrations yet.
Not wired into the dispatcher yet: see the report of issue 13 for how the worker's gate calls
``take`` on PostgreSQL instead of taking the in-process pace.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .limits import Gcra

metadata = sa.MetaData()
limit_paces = sa.Table(
    "limit_paces",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # "service:relay", "campaign:news", …
    sa.Column("tat", sa.Float(precision=53), nullable=False),
    sa.Column("interval", sa.Float(precision=53), nullable=False),
)


@dataclass(frozen=True, slots=True)
class PaceWant:
    """One pace a permit needs: its key, the interval in force (limits.pace_interval, or the
    slowed one) and its burst."""

    key: str
    interval: float
    burst: int = 1


def decide(
    wants: Sequence[PaceWant], stored: Mapping[str, tuple[float, float]], now: float
) -> tuple[float, dict[str, tuple[float, float]]]:
    """(earliest time every pace admits one more, the rows after taking it now).

    ``stored`` maps a key to its (tat, interval); a missing key is a fresh pace. The rows
    returned are only meaningful when earliest ≤ now.
    """
    earliest = now
    after: dict[str, tuple[float, float]] = {}
    for want in wants:
        g = Gcra()
        g.tat, g.interval = stored.get(want.key, (-math.inf, want.interval))
        earliest = max(earliest, g.earliest(want.interval, want.burst, now))
        # Strict GCRA: no lateness forgiven, since no window of starts is kept here to cap
        # what forgiving would let through (limits.pace_window).
        after[want.key] = (max(g.tat, now) + want.interval, want.interval)
    return earliest, after


async def create_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def take(conn: AsyncConnection, wants: Sequence[PaceWant], now: float) -> float | None:
    """Take one permit of every pace in ``wants`` at ``now``, all or none, inside the
    caller's transaction. None if taken; else the earliest time to ask again."""
    if not wants:
        return None
    ordered = sorted(wants, key=lambda w: w.key)
    keys = [w.key for w in ordered]
    await conn.execute(
        pg_insert(limit_paces)
        .values([{"key": w.key, "tat": -math.inf, "interval": w.interval} for w in ordered])
        .on_conflict_do_nothing()
    )
    rows = await conn.execute(
        sa.select(limit_paces.c.key, limit_paces.c.tat, limit_paces.c.interval)
        .where(limit_paces.c.key.in_(keys))
        .order_by(limit_paces.c.key)
        .with_for_update()
    )
    stored = {row.key: (row.tat, row.interval) for row in rows}
    earliest, after = decide(ordered, stored, now)
    if earliest > now:
        return earliest
    await conn.execute(
        sa.update(limit_paces)
        .where(limit_paces.c.key == sa.bindparam("k"))
        .values(tat=sa.bindparam("t"), interval=sa.bindparam("i")),
        [{"k": k, "t": tat, "i": interval} for k, (tat, interval) in sorted(after.items())],
    )
    return None

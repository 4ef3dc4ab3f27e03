"""Pace permits shared by every daemon on one PostgreSQL database (issue 13, item 5).

Each pace (a service, a shaped domain, a campaign) is one row holding its GCRA theoretical
arrival time; a permit locks the rows of every pace it needs (in key order, so two daemons
never deadlock), decides with the in-process limiter's arithmetic (``delivery.limits.decide``)
and advances them all in the same transaction — so N daemons together never exceed a pace.

The table lives in its own metadata (``create_table``), not in the queue's migrations yet.
Not wired into the dispatcher yet: see the report of issue 13 for how the worker's gate calls
``take`` on PostgreSQL instead of taking the in-process pace.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

metadata = sa.MetaData()
limit_paces = sa.Table(
    "limit_paces",
    metadata,
    sa.Column("key", sa.Text, primary_key=True),  # "service:relay", "campaign:news", …
    sa.Column("tat", sa.Float(precision=53), nullable=False),
    sa.Column("interval", sa.Float(precision=53), nullable=False),
)


class Want(Protocol):
    """One pace a permit needs (``delivery.limits.PaceWant``)."""

    @property
    def key(self) -> str: ...

    @property
    def interval(self) -> float: ...


W = TypeVar("W", bound=Want)
Decide = Callable[
    [Sequence[W], Mapping[str, tuple[float, float]], float],
    tuple[float, dict[str, tuple[float, float]]],
]


async def create_table(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


async def take(
    conn: AsyncConnection, wants: Sequence[W], now: float, decide: Decide[W]
) -> float | None:
    """Take one permit of every pace in ``wants`` at ``now``, all or none, inside the
    caller's transaction; ``decide`` is the limiter's GCRA (``delivery.limits.decide``). None
    if taken; else the earliest time to ask again."""
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

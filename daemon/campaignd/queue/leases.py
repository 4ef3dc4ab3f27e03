"""Leases on message rows: claim due rows, hand them back, and settle the ones a dead worker left.

Every function runs inside the caller's write transaction. On PostgreSQL the claim locks the
rows it picks with ``FOR UPDATE … SKIP LOCKED``, so daemons sharing the queue never pick the same
row; on SQLite the write transaction is ``BEGIN IMMEDIATE``, so only one claim runs at a time.
A row is never deleted or silently re-queued: anything that may have been sent becomes
``uncertain``, which only an operator's ``retry`` sends again.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import states
from .rows import Claimed, normalize_key
from .tables import campaigns, events, messages, recipients, suppressions

m, r = messages, recipients
CHUNK = 1000
"""Ids per statement: far below SQLite's and asyncpg's bound-parameter limits."""
CLAIMABLE = states.sources("claim", "sending")
RELEASABLE = states.sources_any("release")
STARTABLE = states.sources("start", "sending")
SETTLEABLE = states.sources("settle", "uncertain")
RETRYABLE = states.sources("retry", "queued")


def chunks(items: Sequence[int], size: int = CHUNK) -> list[Sequence[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def claim(
    conn: AsyncConnection,
    *,
    worker: str,
    now: float,
    lease: float,
    limit: int,
    campaign_ids: Collection[str],
) -> list[Claimed]:
    if not campaign_ids or limit <= 0:
        return []
    # The database is the truth for pause: only campaigns whose row says `sending` count.
    sending = sa.select(campaigns.c.id).where(
        campaigns.c.state == "sending", campaigns.c.id.in_(list(campaign_ids))
    )
    pick = (
        sa.select(m.c.id)
        .where(
            m.c.status.in_(CLAIMABLE),
            m.c.next_attempt_at <= now,
            m.c.campaign_id.in_(sending.scalar_subquery()),
        )
        .order_by(m.c.next_attempt_at, m.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True, of=m)
    )
    ids: list[int] = list((await conn.execute(pick)).scalars())
    if not ids:
        return []
    # SKIP LOCKED (PostgreSQL) or BEGIN IMMEDIATE (SQLite) keep these rows ours until commit,
    # so the guard only fails if the table and the pick disagree: a bug, not a race.
    claimed = await conn.execute(
        sa.update(m)
        .where(m.c.id.in_(ids), m.c.status.in_(CLAIMABLE))
        .values(
            status="sending",
            service=None,  # set by start(): a row without one never reached an SMTP server
            claimed_by=worker,
            claimed_until=now + lease,
            attempts=m.c.attempts + 1,
            first_attempt_at=sa.func.coalesce(m.c.first_attempt_at, now),
            updated_at=now,
        )
    )
    if claimed.rowcount != len(ids):
        await _refuse(conn, ids, "claim", "sending")
    rows = await conn.execute(
        sa.select(
            m.c.id,
            m.c.campaign_id,
            m.c.edition,
            m.c.step,
            m.c.template,
            m.c.attempts,
            m.c.first_attempt_at,
            m.c.recipient,
            r.c.email,
            r.c.smtp_address,
            r.c.domain,
            r.c.fields,
            r.c.timezone,
        )
        .join(r, sa.and_(r.c.campaign_id == m.c.campaign_id, r.c.key == m.c.recipient))
        .where(m.c.id.in_(ids))
        .order_by(m.c.next_attempt_at, m.c.id)
    )
    picked = rows.all()
    # The suppression list in the claim's own transaction: the dispatcher needs no other
    # round trip before it sends (and sees the list as of the claim, atomically).
    normal = {row.recipient: normalize_key(row.recipient) for row in picked}
    listed: set[str] = set(
        (
            await conn.execute(
                sa.select(suppressions.c.key).where(
                    suppressions.c.key.in_(sorted(set(normal.values())))
                )
            )
        ).scalars()
    )
    return [
        Claimed(
            id=row.id,
            campaign_id=row.campaign_id,
            edition=row.edition,
            step=row.step,
            template=row.template,
            attempts=row.attempts,
            first_attempt_at=row.first_attempt_at,
            recipient=row.recipient,
            email=row.email,
            smtp_address=row.smtp_address,
            domain=row.domain,
            fields=json.loads(row.fields),
            timezone=row.timezone,
            suppressed=normal[row.recipient] in listed,
        )
        for row in picked
    ]


async def release(
    conn: AsyncConnection, ids: Sequence[int], *, next_attempt_at: float, now: float
) -> int:
    """Claimed rows go back, due at ``next_attempt_at``, as if the claim never happened: the
    attempt is not counted, and a row that had been deferred before stays ``deferred``."""
    count = 0
    retried_before = m.c.attempts > 1
    for part in chunks(ids):
        result = await conn.execute(
            sa.update(m)
            .where(m.c.id.in_(part), m.c.status.in_(RELEASABLE))
            .values(
                status=sa.case((retried_before, "deferred"), else_="queued"),
                attempts=m.c.attempts - 1,
                first_attempt_at=sa.case((retried_before, m.c.first_attempt_at), else_=None),
                next_attempt_at=next_attempt_at,
                claimed_by=None,
                claimed_until=None,
                updated_at=now,
            )
        )
        if result.rowcount != len(set(part)):
            await _refuse(conn, part, "release", "queued")
        count += result.rowcount
    return count


async def start(
    conn: AsyncConnection, items: Sequence[tuple[int, str, str | None]], *, now: float
) -> None:
    """The SMTP transaction of these claimed rows is about to begin, through these services:
    from here on a crash makes them ``uncertain`` instead of handing them back. Each item is
    (message, service, the worker that claimed it or None): a row another worker holds now
    raises ``ClaimLost``."""
    by_key: dict[tuple[str, str | None], list[int]] = {}
    for message, service, worker in items:
        by_key.setdefault((service, worker), []).append(message)
    for (service, worker), ids in by_key.items():
        for part in chunks(ids):
            cond = sa.and_(m.c.id.in_(part), m.c.status.in_(STARTABLE))
            if worker is not None:
                cond = sa.and_(cond, m.c.claimed_by == worker)
            result = await conn.execute(
                sa.update(m).where(cond).values(service=service, updated_at=now)
            )
            if result.rowcount != len(set(part)):
                await _refuse(conn, part, "start", "sending")
                rows = await conn.execute(
                    sa.select(m.c.id, m.c.claimed_by).where(m.c.id.in_(list(part)))
                )
                for row in rows:
                    if row.claimed_by != worker:
                        raise states.ClaimLost(row.id, worker or "?", row.claimed_by)


async def _refuse(conn: AsyncConnection, ids: Sequence[int], operation: str, target: str) -> None:
    """Some of ``ids`` were not in a status ``operation`` may leave: raise for the first one
    (the caller's transaction rolls back, so nothing of it is written). Rows that no longer
    exist are not an error here (a campaign deleted while they were in flight)."""
    rows = await conn.execute(sa.select(m.c.id, m.c.status).where(m.c.id.in_(list(ids))))
    found: dict[int, str] = {row.id: row.status for row in rows}
    for i in ids:
        if i in found and not states.allowed(operation, found[i], target):
            raise states.TransitionError(operation, i, found[i], target)


async def settle(
    conn: AsyncConnection, where: sa.ColumnElement[bool], *, now: float, why: str
) -> int:
    """Rows in ``sending`` matching ``where`` whose worker is gone: those that never started an
    SMTP transaction go back to the queue untouched; the others become ``uncertain`` (counted)."""
    return (await settle_counts(conn, where, now=now, why=why))[1]


async def settle_counts(
    conn: AsyncConnection, where: sa.ColumnElement[bool], *, now: float, why: str
) -> tuple[int, int]:
    """``settle``, returning (rows back to the queue, rows made ``uncertain``)."""
    idle = sa.and_(m.c.status.in_(SETTLEABLE), where, m.c.service.is_(None))
    ids: list[int] = list((await conn.execute(sa.select(m.c.id).where(idle))).scalars())
    released = await release(conn, ids, next_attempt_at=now, now=now) if ids else 0
    started = sa.and_(where, m.c.service.is_not(None))
    return released, await mark_uncertain(conn, started, now=now, why=why)


async def mark_uncertain(
    conn: AsyncConnection, where: sa.ColumnElement[bool], *, now: float, why: str
) -> int:
    """Rows in ``sending`` matching ``where`` → ``uncertain``, each with an event naming the
    worker that held it. ``claimed_by`` stays as the record of who that was."""
    cond = sa.and_(m.c.status.in_(SETTLEABLE), where)
    detail = (
        sa.literal(why, sa.Text) + " (claimed by " + sa.func.coalesce(m.c.claimed_by, "?") + ")"
    )
    await conn.execute(
        sa.insert(events).from_select(
            ["message", "campaign_id", "recipient", "kind", "detail", "service", "source", "at"],
            sa.select(
                m.c.id,
                m.c.campaign_id,
                m.c.recipient,
                sa.literal("uncertain", sa.Text),
                detail,
                m.c.service,
                sa.literal("recovery", sa.Text),
                sa.literal(now, events.c.at.type),
            ).where(cond),
        )
    )
    result = await conn.execute(
        sa.update(m)
        .where(cond)
        .values(status="uncertain", last_error=detail, claimed_until=None, updated_at=now)
    )
    return result.rowcount


async def requeue(
    conn: AsyncConnection, campaign_id: str, statuses: Collection[str], *, now: float
) -> int:
    """The operator's decision: these rows get a fresh life (attempts and give-up clock reset)."""
    wrong = set(statuses) - set(RETRYABLE)
    if wrong or not statuses:
        raise ValueError(
            f"cannot re-queue {', '.join(sorted(wrong)) or 'nothing'} — choose from "
            f"{', '.join(RETRYABLE)}"
        )
    cond = sa.and_(m.c.campaign_id == campaign_id, m.c.status.in_(sorted(statuses)))
    await conn.execute(
        sa.insert(events).from_select(
            ["message", "campaign_id", "recipient", "kind", "detail", "source", "at"],
            sa.select(
                m.c.id,
                m.c.campaign_id,
                m.c.recipient,
                sa.literal("retried", sa.Text),
                sa.literal("was ", sa.Text) + m.c.status,
                sa.literal("operator", sa.Text),
                sa.literal(now, events.c.at.type),
            ).where(cond),
        )
    )
    result = await conn.execute(
        sa.update(m)
        .where(cond)
        .values(
            status="queued",
            # The old error said why it stopped ("… so it is not resent"); no longer true.
            last_error=sa.literal("re-queued by the operator (was ", sa.Text) + m.c.status + ")",
            last_code=None,
            last_enhanced=None,
            next_attempt_at=now,
            attempts=0,
            first_attempt_at=None,
            claimed_by=None,
            claimed_until=None,
            updated_at=now,
        )
    )
    return result.rowcount

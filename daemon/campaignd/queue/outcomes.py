"""Applying what happened: delivery outcomes and feedback events, inside one transaction each.

An outcome updates its message row, appends an event, counts a ``sent`` for the service's day
and, for a hard bounce, suppresses the address. An event is applied at most once per dedupe key.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import states
from .database import insert
from .leases import chunks
from .rows import EventIn, Outcome
from .tables import EVENT_COLUMNS, MESSAGE_STATUSES, events, messages, service_days, suppressions

log = logging.getLogger("campaignd.store")
m = messages


def _param(name: str, type_: Any) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=type_)


# One statement for every outcome, run as executemany: NULL parameters keep what the row has.
_UPDATE = (
    sa.update(m)
    .where(m.c.id == _param("o_id", m.c.id.type))
    .values(
        status=_param("o_status", sa.Text),
        service=sa.func.coalesce(_param("o_service", sa.Text), m.c.service),
        message_id=sa.func.coalesce(_param("o_message_id", sa.Text), m.c.message_id),
        last_error=_param("o_error", sa.Text),
        last_code=_param("o_code", sa.Integer),
        last_enhanced=_param("o_enhanced", sa.Text),
        next_attempt_at=_param("o_next", m.c.next_attempt_at.type),
        sent_at=sa.func.coalesce(_param("o_sent", m.c.sent_at.type), m.c.sent_at),
        bounced_at=sa.func.coalesce(_param("o_bounced", m.c.bounced_at.type), m.c.bounced_at),
        claimed_by=None,
        claimed_until=None,
        updated_at=_param("o_at", m.c.updated_at.type),
    )
)


def day_of(at: float, zone: tzinfo) -> date:
    return datetime.fromtimestamp(at, UTC).astimezone(zone).date()


async def apply_outcomes(
    conn: AsyncConnection,
    outcomes: Sequence[Outcome],
    *,
    day_zone: tzinfo,
    owners: Mapping[int, str] | None = None,
) -> None:
    """``owners``: the worker that claimed each message, where known; an outcome for a row
    another worker holds now raises ``ClaimLost``."""
    # Rows are touched in id order so two daemons' writers cannot deadlock on PostgreSQL.
    ordered = sorted(outcomes, key=lambda o: o.id)
    ids = sorted({o.id for o in ordered})
    known: dict[int, tuple[str, str]] = {}
    status: dict[int, str] = {}
    for part in chunks(ids):
        rows = await conn.execute(
            sa.select(m.c.id, m.c.campaign_id, m.c.recipient, m.c.status, m.c.claimed_by)
            .where(m.c.id.in_(part))
            .with_for_update()
        )
        for row in rows:
            known[row.id] = (row.campaign_id, row.recipient)
            status[row.id] = row.status
            worker = (owners or {}).get(row.id)
            if worker is not None and row.claimed_by != worker:
                raise states.ClaimLost(row.id, worker, row.claimed_by)
    for o in ordered:
        # A status outside the schema (only reachable past Outcome's validation) is left to
        # the database's CHECK constraint, which names it.
        if o.id in status and o.status in MESSAGE_STATUSES:
            states.check("outcome", status[o.id], o.status, message=o.id)
    gone = [o.id for o in ordered if o.id not in known]
    if gone:
        # Deleted while in flight (a stopped campaign cleaned up): nothing left to record on.
        log.warning("outcomes for deleted messages %s dropped", ", ".join(map(str, gone[:20])))
    ordered = [o for o in ordered if o.id in known]
    if not ordered:
        return
    await conn.execute(
        _UPDATE,
        [
            {
                "o_id": o.id,
                "o_status": o.status,
                "o_service": o.service,
                "o_message_id": o.message_id,
                "o_error": o.error,
                "o_code": o.code,
                "o_enhanced": o.enhanced,
                "o_next": o.next_attempt_at if o.status == "deferred" else None,
                "o_sent": o.at if o.status == "sent" else None,
                "o_bounced": o.at if o.status == "bounced" else None,
                "o_at": o.at,
            }
            for o in ordered
        ],
    )
    await conn.execute(
        sa.insert(events),
        [
            {
                "message": o.id,
                "campaign_id": known[o.id][0],
                "recipient": known[o.id][1],
                "kind": o.status,
                "detail": o.error or o.reason,
                "code": o.code,
                "enhanced": o.enhanced,
                "service": o.service,
                "source": o.source or o.service or "dispatcher",
                "at": o.at,
            }
            for o in ordered
        ],
    )
    per_day = Counter(
        (o.service, day_of(o.at, day_zone)) for o in ordered if o.status == "sent" and o.service
    )
    for (service, day), n in sorted(per_day.items()):
        stmt = insert(conn, service_days).values(service=service, day=day, sent=n)
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[service_days.c.service, service_days.c.day],
                set_={"sent": service_days.c.sent + stmt.excluded.sent},
            )
        )
    bounced = [o for o in ordered if o.suppress]
    if bounced:
        stmt = insert(conn, suppressions).on_conflict_do_nothing()
        await conn.execute(
            stmt,
            [
                {
                    "key": known[o.id][1],
                    "reason": o.reason or o.error or o.status,
                    "source": o.source or o.service or "dispatcher",
                    "campaign_id": known[o.id][0],
                    "created_at": o.at,
                }
                for o in bounced
            ],
        )


async def stamp(conn: AsyncConnection, message: int, kind: str, at: float) -> bool:
    """Set the message's first-seen time for ``kind``; False if it was already set."""
    column = EVENT_COLUMNS.get(kind)
    if column is None:
        raise ValueError(
            f"event kind {kind!r} leaves no time on a message — one of {', '.join(EVENT_COLUMNS)}"
        )
    result = await conn.execute(
        sa.update(m).where(m.c.id == message, m.c[column].is_(None)).values({column: at})
    )
    return result.rowcount > 0


async def apply_event(conn: AsyncConnection, ev: EventIn) -> bool:
    """Insert the event once; if it is new, apply its effects. False if seen before."""
    campaign_id, recipient = ev.campaign_id, ev.recipient
    if ev.message is not None and (campaign_id is None or recipient is None):
        row = (
            await conn.execute(
                sa.select(m.c.campaign_id, m.c.recipient).where(m.c.id == ev.message)
            )
        ).first()
        if row is not None:
            campaign_id = campaign_id or row.campaign_id
            recipient = recipient or row.recipient
    stmt = (
        insert(conn, events)
        .values(
            message=ev.message,
            campaign_id=campaign_id,
            recipient=recipient,
            kind=ev.kind,
            detail=ev.detail,
            code=ev.code,
            enhanced=ev.enhanced,
            service=ev.service,
            source=ev.source,
            dedupe=ev.dedupe,
            at=ev.at,
        )
        .on_conflict_do_nothing()
        .returning(events.c.id)
    )
    if (await conn.execute(stmt)).first() is None:
        return False
    if ev.message is not None:
        if ev.kind in EVENT_COLUMNS:
            await stamp(conn, ev.message, ev.kind, ev.at)
        if ev.status is not None:
            changed = await conn.execute(
                sa.update(m)
                .where(m.c.id == ev.message, m.c.status.in_(states.sources("feedback", ev.status)))
                .values(
                    status=ev.status,
                    last_error=sa.func.coalesce(ev.detail, m.c.last_error),
                    last_code=sa.func.coalesce(ev.code, m.c.last_code),
                    last_enhanced=sa.func.coalesce(ev.enhanced, m.c.last_enhanced),
                    updated_at=ev.at,
                )
            )
            if changed.rowcount == 0:
                now = await conn.scalar(sa.select(m.c.status).where(m.c.id == ev.message))
                if now is not None:  # a message deleted meanwhile keeps only the event
                    raise states.TransitionError("feedback", ev.message, now, ev.status)
    if ev.suppress and recipient:
        await conn.execute(
            insert(conn, suppressions)
            .values(
                key=recipient.strip().lower(),
                reason=ev.detail or ev.kind,
                source=ev.source,
                campaign_id=campaign_id,
                created_at=ev.at,
            )
            .on_conflict_do_nothing()
        )
    return True

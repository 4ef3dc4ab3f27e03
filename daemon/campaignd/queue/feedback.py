"""Reads the feedback loop needs: which message an event is about, guard rates, feedback tallies.

Writes go through ``outcomes.apply_event`` (one transaction, once per dedupe key); this module
only looks things up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from . import reports
from .rows import MessageRow
from .tables import events, messages

m = messages

# Statuses a message has once a relay took it or refused its recipient: the guard's sample.
SAMPLE_STATUSES = ("sent", "bounced")


@dataclass(frozen=True, slots=True)
class GuardCounts:
    """What a deliverability guard measures, over the messages of one campaign."""

    sample: int
    """Messages sent or bounced (the relay took them, or refused the address)."""
    bounced: int
    complained: int


async def latest_sent_to(conn: AsyncConnection, recipient: str, since: float) -> MessageRow | None:
    """The newest message sent (or bounced) to ``recipient`` at or after ``since``.

    For ESP events that carry the recipient but not our Message-ID; served by the
    (recipient, sent_at) index.
    """
    key = recipient.strip().lower()
    q = (
        reports.MESSAGE_SELECT.where(m.c.recipient == key)
        .where(sa.or_(m.c.sent_at >= since, m.c.bounced_at >= since))
        .order_by(sa.func.coalesce(m.c.sent_at, m.c.bounced_at).desc(), m.c.id.desc())
        .limit(1)
    )
    row = (await conn.execute(q)).first()
    return reports.message_row(row) if row is not None else None


async def guard_counts(conn: AsyncConnection, campaign_id: str) -> GuardCounts:
    # The (campaign_id, status) index narrows this to the sample's rows.
    q = sa.select(
        sa.func.count(),
        sa.func.coalesce(sa.func.sum(sa.case((m.c.status == "bounced", 1), else_=0)), 0),
        sa.func.count(m.c.complained_at),
    ).where(m.c.campaign_id == campaign_id, m.c.status.in_(SAMPLE_STATUSES))
    row: Any = (await conn.execute(q)).one()
    return GuardCounts(sample=int(row[0]), bounced=int(row[1]), complained=int(row[2]))


async def unlinked_event_counts(conn: AsyncConnection) -> dict[str, int]:
    """Events that name no message, by kind (``unmatched``, ``auto_reply``, …).

    Served by the index on ``events.message``: counting by kind over all events would scan one
    row per send.
    """
    rows = await conn.execute(
        sa.select(events.c.kind, sa.func.count())
        .where(events.c.message.is_(None))
        .group_by(events.c.kind)
    )
    found: Sequence[Any] = rows.all()
    return {str(kind): int(n) for kind, n in found}

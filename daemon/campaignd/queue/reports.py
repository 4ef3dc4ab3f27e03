"""Reading campaigns back: counters, pages of messages, single-message lookups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .accounting import exclusion_prefix
from .rows import EVENT_COUNTERS, CampaignCounts, CampaignRow, MessageRow, normalize_key
from .tables import campaigns, events, messages, recipients

m, r = messages, recipients

_FROM_RECIPIENT = {"email": r.c.email, "source": r.c.source}
_MESSAGE_COLUMNS = [
    _FROM_RECIPIENT[name] if name in _FROM_RECIPIENT else m.c[name]
    for name in MessageRow.__dataclass_fields__
]
_FROM = m.outerjoin(r, sa.and_(r.c.campaign_id == m.c.campaign_id, r.c.key == m.c.recipient))
MESSAGE_SELECT = sa.select(*_MESSAGE_COLUMNS).select_from(_FROM)
"""Columns in ``MessageRow`` order, with the address as the list spelled it."""


def message_row(row: Any) -> MessageRow:
    return MessageRow(*row)


def campaign_row(row: Any) -> CampaignRow:
    return CampaignRow(**row._mapping)


async def counts(conn: AsyncConnection, campaign_id: str) -> CampaignCounts:
    stamped = [sa.func.count(m.c[f"{kind}_at"]) for kind in EVENT_COUNTERS]
    # One pass over the campaign's rows gives both the counters and the audience block.
    result = await conn.execute(
        sa.select(m.c.step, m.c.template, m.c.status, m.c.excluded, sa.func.count(), *stamped)
        .where(m.c.campaign_id == campaign_id)
        .group_by(m.c.step, m.c.template, m.c.status, m.c.excluded)
    )
    rows: Sequence[Any] = result.all()
    return CampaignCounts.tally(
        [
            (step, template, status, n, dict(zip(EVENT_COUNTERS, rest, strict=True)))
            for step, template, status, _, n, *rest in rows
        ],
        audience=CampaignCounts.audience_of(
            [(excluded, n) for step, _, _, excluded, n, *_ in rows if step == 1]
        ),
    )


def recipient_filter(address: str) -> sa.ColumnElement[bool]:
    """Messages of ``address``: its own key, and the exclusion keys of the invalid or
    duplicate rows that wrote it (``accounting``)."""
    key = normalize_key(address)
    return sa.or_(
        m.c.recipient == key,
        m.c.recipient.startswith(exclusion_prefix(address), autoescape=True),
    )


async def page(
    conn: AsyncConnection,
    campaign_id: str,
    *,
    status: str | None = None,
    step: int | None = None,
    template: str | None = None,
    service: str | None = None,
    recipient: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> list[MessageRow]:
    """Messages with ids above ``after``, in id order (keyset pagination: stable and cheap at
    any depth, unlike OFFSET)."""
    q = MESSAGE_SELECT.where(m.c.campaign_id == campaign_id)
    if status is not None:
        q = q.where(m.c.status == status)
    if step is not None:
        q = q.where(m.c.step == step)
    if template is not None:
        q = q.where(m.c.template == template)
    if service is not None:
        q = q.where(m.c.service == service)
    if recipient is not None:
        q = q.where(recipient_filter(recipient))
    if after is not None:
        q = q.where(m.c.id > after)
    rows = await conn.execute(q.order_by(m.c.id).limit(max(1, limit)))
    return [message_row(row) for row in rows]


async def get_campaign(conn: AsyncConnection, campaign_id: str) -> CampaignRow | None:
    row = (await conn.execute(sa.select(campaigns).where(campaigns.c.id == campaign_id))).first()
    return campaign_row(row) if row is not None else None


async def events_of(conn: AsyncConnection, ids: Sequence[int]) -> list[dict[str, Any]]:
    """The events of these messages, oldest first, as JSON-ready dicts with ``message``."""
    if not ids:
        return []
    e = events
    rows = await conn.execute(
        sa.select(
            e.c.message,
            e.c.kind,
            e.c.at,
            e.c.detail,
            e.c.code,
            e.c.enhanced,
            e.c.service,
            e.c.source,
        )
        .where(e.c.message.in_(list(ids)))
        .order_by(e.c.at, e.c.id)
    )
    return [dict(row._mapping) for row in rows]


async def recipient_row(conn: AsyncConnection, campaign_id: str, key: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            sa.select(r.c.key, r.c.email, r.c.source, r.c.enrolled_at, r.c.removed_at).where(
                r.c.campaign_id == campaign_id, r.c.key == key
            )
        )
    ).first()
    return dict(row._mapping) if row is not None else None

"""The past, as the audience filters and the limiter need it: suppressions, who was contacted
when, and what each service sent. Key lists are asked in chunks, so any batch size works."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from .leases import CHUNK
from .rows import SuppressionRow, normalize_key
from .tables import messages, service_days, suppressions

m, s = messages, suppressions


def epoch(at: float | datetime) -> float:
    """Epoch seconds; a naive datetime is taken as UTC, like every time the store keeps."""
    if isinstance(at, datetime):
        if at.tzinfo is None:
            return at.replace(tzinfo=UTC).timestamp()
        return at.timestamp()
    return float(at)


def _key_chunks(keys: Sequence[str]) -> list[dict[str, list[str]]]:
    """Chunks of normalized keys, each mapping a normalized key to the spellings asked for."""
    out: list[dict[str, list[str]]] = []
    for i in range(0, len(keys), CHUNK):
        part: dict[str, list[str]] = {}
        for k in keys[i : i + CHUNK]:
            part.setdefault(normalize_key(k), []).append(k)
        out.append(part)
    return out


async def _matching(
    conn: AsyncConnection, keys: Sequence[str], column: sa.Column[str], cond: sa.ColumnElement[bool]
) -> set[str]:
    found: set[str] = set()
    for part in _key_chunks(keys):
        rows = await conn.execute(sa.select(column).distinct().where(column.in_(list(part)), cond))
        for (key,) in rows:
            found.update(part[key])
    return found


async def suppressed(conn: AsyncConnection, keys: Sequence[str]) -> set[str]:
    return await _matching(conn, keys, s.c.key, sa.true())


async def contacted_since(
    conn: AsyncConnection,
    keys: Sequence[str],
    since: float | datetime,
    *,
    exclude_campaign: str | None = None,
) -> set[str]:
    cond = m.c.sent_at >= epoch(since)
    if exclude_campaign is not None:
        cond = sa.and_(cond, m.c.campaign_id != exclude_campaign)
    return await _matching(conn, keys, m.c.recipient, cond)


async def received_campaigns(
    conn: AsyncConnection, keys: Sequence[str], campaign_ids: Collection[str]
) -> set[str]:
    if not campaign_ids:
        return set()
    cond = sa.and_(m.c.campaign_id.in_(list(campaign_ids)), m.c.sent_at.is_not(None))
    return await _matching(conn, keys, m.c.recipient, cond)


async def suppression_rows(conn: AsyncConnection, keys: Sequence[str]) -> dict[str, SuppressionRow]:
    """The suppression-list rows of those of ``keys`` on it, by normalized key."""
    out: dict[str, SuppressionRow] = {}
    for part in _key_chunks(keys):
        for row in await conn.execute(sa.select(s).where(s.c.key.in_(list(part)))):
            out[row.key] = SuppressionRow(**row._mapping)
    return out


async def last_contacts(
    conn: AsyncConnection,
    keys: Sequence[str],
    *,
    since: float | datetime | None = None,
    campaign_ids: Collection[str] | None = None,
    exclude_campaign: str | None = None,
) -> dict[str, tuple[str, float]]:
    """For each of ``keys`` sent a message (since ``since``, of ``campaign_ids``, not of
    ``exclude_campaign``): the campaign of the latest such send and when — the detail an
    ``exclude_contacted_within`` or ``exclude_campaigns`` exclusion records."""
    cond: sa.ColumnElement[bool] = m.c.sent_at.is_not(None)
    if since is not None:
        cond = sa.and_(cond, m.c.sent_at >= epoch(since))
    if campaign_ids is not None:
        cond = sa.and_(cond, m.c.campaign_id.in_(list(campaign_ids)))
    if exclude_campaign is not None:
        cond = sa.and_(cond, m.c.campaign_id != exclude_campaign)
    out: dict[str, tuple[str, float]] = {}
    for part in _key_chunks(keys):
        rows = await conn.execute(
            sa.select(m.c.recipient, m.c.campaign_id, sa.func.max(m.c.sent_at))
            .where(m.c.recipient.in_(list(part)), cond)
            .group_by(m.c.recipient, m.c.campaign_id)
        )
        found: Sequence[Any] = rows.all()
        for key, cid, at in found:
            k, t = str(key), float(at)
            if k not in out or t > out[k][1]:
                out[k] = (str(cid), t)
    return out


async def list_suppressions(
    conn: AsyncConnection, *, after: str | None, limit: int
) -> list[SuppressionRow]:
    q = sa.select(s).order_by(s.c.key).limit(max(1, limit))
    if after is not None:
        q = q.where(s.c.key > after)
    return [SuppressionRow(**row._mapping) for row in await conn.execute(q)]


async def starts(conn: AsyncConnection, cond: sa.ColumnElement[bool], since: float) -> list[float]:
    rows = await conn.execute(
        sa.select(m.c.sent_at).where(cond, m.c.sent_at >= since).order_by(m.c.sent_at)
    )
    return list(rows.scalars())


async def first_send_day(conn: AsyncConnection, service: str) -> date | None:
    day: date | None = await conn.scalar(
        sa.select(sa.func.min(service_days.c.day)).where(
            service_days.c.service == service, service_days.c.sent > 0
        )
    )
    return day


async def sent_on_day(conn: AsyncConnection, service: str, day: date) -> int:
    n: int | None = await conn.scalar(
        sa.select(service_days.c.sent).where(
            service_days.c.service == service, service_days.c.day == day
        )
    )
    return n or 0


@dataclass(frozen=True)
class HistorySnapshot:
    """The suppression list and past sends loaded once, answering the audience's synchronous
    ``History`` and ``Suppressions`` protocols without a database (``campaignctl plan``).

    ``last_sent`` holds sends since the snapshot's ``since`` only; ``received`` only the
    campaigns it was loaded for.
    """

    suppressed_keys: frozenset[str] = frozenset()
    last_sent: dict[str, float] = field(default_factory=dict)
    received: dict[str, frozenset[str]] = field(default_factory=dict)

    def suppressed(self, keys: Sequence[str]) -> set[str]:
        return {k for k in keys if normalize_key(k) in self.suppressed_keys}

    def contacted_since(self, keys: Sequence[str], since: datetime) -> set[str]:
        t = epoch(since)
        return {k for k in keys if self.last_sent.get(normalize_key(k), float("-inf")) >= t}

    def received_campaigns(self, keys: Sequence[str], campaign_ids: Sequence[str]) -> set[str]:
        wanted = set(campaign_ids)
        return {k for k in keys if self.received.get(normalize_key(k), frozenset()) & wanted}


async def snapshot(
    conn: AsyncConnection, *, since: float | datetime | None, campaign_ids: Collection[str]
) -> HistorySnapshot:
    keys: frozenset[str] = frozenset((await conn.execute(sa.select(s.c.key))).scalars())
    last_sent: dict[str, float] = {}
    if since is not None:
        rows = await conn.execute(
            sa.select(m.c.recipient, sa.func.max(m.c.sent_at))
            .where(m.c.sent_at >= epoch(since))
            .group_by(m.c.recipient)
        )
        found: Sequence[Any] = rows.all()
        last_sent = {key: at for key, at in found}
    received: dict[str, set[str]] = {}
    if campaign_ids:
        rows = await conn.execute(
            sa.select(m.c.recipient, m.c.campaign_id)
            .distinct()
            .where(m.c.campaign_id.in_(list(campaign_ids)), m.c.sent_at.is_not(None))
        )
        for key, cid in rows:
            received.setdefault(str(key), set()).add(str(cid))
    return HistorySnapshot(keys, last_sent, {k: frozenset(v) for k, v in received.items()})

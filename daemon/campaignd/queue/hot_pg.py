"""The PostgreSQL write path for starts and outcomes: fixed SQL on the driver, one statement per
kind of write for a whole group commit.

Each statement takes its rows as arrays (``unnest``), so a group of any size is one prepared
statement and one round trip; SQLAlchemy only carries it (``exec_driver_sql``: no compiling,
its transaction and pool as everywhere else). Like ``hot`` on SQLite, the fast path trusts the
caller and checks the row counts: a mismatch raises ``hot.Recheck`` and the store reruns the
group on the careful path (``outcomes.apply_outcomes``, ``leases.start``), which reads the rows
first and names the refused transition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from . import states
from .hot import DayCache, EnrollTexts, Recheck, as_dict, fields_json
from .rows import AudienceRow, ExclusionIn, Outcome
from .tables import MESSAGE_STATUSES


def _guard(row: str, new: str) -> str:
    by_source: dict[str, set[str]] = {}
    for target in sorted(states.targets("outcome")):
        for source in states.sources("outcome", target):
            by_source.setdefault(source, set()).add(target)
    return " OR ".join(
        f"({row} = '{s}' AND {new} IN ({states.sql_in(sorted(t))}))"
        for s, t in sorted(by_source.items())
    )


OUTCOME = f"""
UPDATE messages AS m SET status = o.status,
    service = coalesce(o.service, m.service), message_id = coalesce(o.message_id, m.message_id),
    last_error = o.error, last_code = o.code, last_enhanced = o.enhanced,
    next_attempt_at = o.next, sent_at = coalesce(o.sent, m.sent_at),
    bounced_at = coalesce(o.bounced, m.bounced_at),
    claimed_by = NULL, claimed_until = NULL, updated_at = o.at
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
            $8::float8[], $9::float8[], $10::float8[], $11::float8[], $12::text[])
     AS o(id, status, service, message_id, error, code, enhanced, next, sent, bounced, at,
          worker)
WHERE m.id = o.id AND ({_guard("m.status", "o.status")})
  AND (o.worker IS NULL OR m.claimed_by = o.worker)
RETURNING m.id, m.campaign_id, m.recipient
"""
EVENTS = """
INSERT INTO events (message, campaign_id, recipient, kind, detail, code, enhanced, service,
                    source, at)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[],
                     $7::text[], $8::text[], $9::text[], $10::float8[])
"""
SUPPRESS = """
INSERT INTO suppressions (key, reason, source, campaign_id, created_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
ON CONFLICT DO NOTHING
"""
SERVICE_DAY = """
INSERT INTO service_days (service, day, sent) VALUES ($1, $2, $3)
ON CONFLICT (service, day) DO UPDATE SET sent = service_days.sent + excluded.sent
"""
START = f"""
UPDATE messages AS m SET service = s.service, updated_at = $4
FROM unnest($1::bigint[], $2::text[], $3::text[]) AS s(id, service, worker)
WHERE m.id = s.id AND m.status IN ({states.sql_in(states.sources("start", "sending"))})
  AND (s.worker IS NULL OR m.claimed_by = s.worker)
RETURNING m.id
"""

ADD_RECIPIENTS = """
INSERT INTO recipients (campaign_id, key, email, smtp_address, domain, fields, timezone, source,
                        enrolled_at)
SELECT $1, r.key, r.email, r.smtp, r.domain, r.fields, r.tz, r.source, $9
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
     AS r(key, email, smtp, domain, fields, tz, source)
ON CONFLICT DO NOTHING
"""
ENROLL = """
WITH made AS (
    INSERT INTO messages (campaign_id, edition, step, recipient, template, status, attempts,
                          next_attempt_at, last_error, excluded, created_at, updated_at)
    SELECT $1, $2, 1, u.recipient, u.template, u.status, 0, u.next, u.error, u.excluded, $3, $3
    FROM unnest($4::text[], $5::text[], $6::text[], $7::float8[], $8::text[], $9::text[])
         AS u(recipient, template, status, next, error, excluded)
    ON CONFLICT DO NOTHING
    RETURNING excluded)
SELECT count(*) FILTER (WHERE excluded IS NULL), count(*) FILTER (WHERE excluded IS NOT NULL)
FROM made
"""


async def enroll(
    conn: AsyncConnection,
    *,
    campaign_id: str,
    edition: int,
    due: float,
    now: float,
    accepted: Sequence[tuple[AudienceRow, str]] | EnrollTexts,
    excluded: Sequence[ExclusionIn],
) -> tuple[int, int]:
    """``hot.enroll`` on PostgreSQL: the batch as arrays, two statements, two round trips."""
    # (key, email, smtp_address, domain, fields text, timezone, source) and (key, template)
    people: list[tuple[Any, ...]]
    chosen: list[tuple[str, str]]
    if isinstance(accepted, EnrollTexts):
        rows = json.loads(accepted.recipients) if accepted.count else []
        people = [(*r[:4], fields_json(r[4]), *r[5:7]) for r in rows]
        chosen = [(m[0], m[1]) for m in json.loads(accepted.messages)] if accepted.count else []
    else:
        people = [
            (r.key, r.email, r.smtp_address, r.domain, fields_json(as_dict(r.fields)),
             r.timezone, r.source)
            for r, _ in accepted
        ]  # fmt: skip
        chosen = [(r.key, t) for r, t in accepted]
    for x in excluded:
        r = x.recipient
        people.append(
            (r.key, r.email, r.smtp_address, r.domain, fields_json(as_dict(r.fields)),
             r.timezone, r.source)
        )  # fmt: skip
    if people:
        columns = list(zip(*people, strict=True))
        await conn.exec_driver_sql(ADD_RECIPIENTS, (campaign_id, *(list(c) for c in columns), now))
    n = len(chosen)
    row: Sequence[Any] = (
        await conn.exec_driver_sql(
            ENROLL,
            (
                campaign_id,
                edition,
                now,
                [k for k, _ in chosen] + [x.recipient.key for x in excluded],
                [t for _, t in chosen] + [x.template for x in excluded],
                ["queued"] * n + [x.status for x in excluded],
                [due] * n + [None] * len(excluded),
                [None] * n + [x.reason for x in excluded],
                [None] * n + [x.excluded for x in excluded],
            ),
        )
    ).one()
    return int(row[0]), int(row[1])


async def record(
    conn: AsyncConnection,
    outcomes: Sequence[Outcome],
    *,
    day: DayCache,
    owners: Mapping[int, str],
) -> None:
    # Rows in id order: the same order on every path, so two daemons' writers cannot deadlock.
    ordered = sorted(outcomes, key=lambda o: o.id)
    if len({o.id for o in ordered}) != len(ordered) or any(
        o.status not in MESSAGE_STATUSES for o in ordered
    ):
        raise Recheck
    columns = (
        [o.id for o in ordered],
        [o.status for o in ordered],
        [o.service for o in ordered],
        [o.message_id for o in ordered],
        [o.error for o in ordered],
        [o.code for o in ordered],
        [o.enhanced for o in ordered],
        [o.next_attempt_at if o.status == "deferred" else None for o in ordered],
        [o.at if o.status == "sent" else None for o in ordered],
        [o.at if o.status == "bounced" else None for o in ordered],
        [o.at for o in ordered],
        [owners.get(o.id) for o in ordered],
    )
    result = await conn.exec_driver_sql(OUTCOME, columns)
    rows: Sequence[Any] = result.all()
    owner: dict[int, tuple[str, str]] = {i: (cid, key) for i, cid, key in rows}
    if len(owner) != len(ordered):
        raise Recheck  # refused, or deleted meanwhile: the careful path says which
    await conn.exec_driver_sql(
        EVENTS,
        (
            [o.id for o in ordered],
            [owner[o.id][0] for o in ordered],
            [owner[o.id][1] for o in ordered],
            [o.status for o in ordered],
            [o.error or o.reason for o in ordered],
            [o.code for o in ordered],
            [o.enhanced for o in ordered],
            [o.service for o in ordered],
            [o.source or o.service or "dispatcher" for o in ordered],
            [o.at for o in ordered],
        ),
    )
    per_day: dict[tuple[str, str], int] = {}
    for o in ordered:
        if o.status == "sent" and o.service:
            key = (o.service, day(o.at))
            per_day[key] = per_day.get(key, 0) + 1
    if per_day:
        await conn.exec_driver_sql(
            SERVICE_DAY,
            [(s, date.fromisoformat(d), n) for (s, d), n in sorted(per_day.items())],
        )
    bounced = [o for o in ordered if o.suppress]
    if bounced:
        await conn.exec_driver_sql(
            SUPPRESS,
            (
                [owner[o.id][1] for o in bounced],
                [o.reason or o.error or o.status for o in bounced],
                [o.source or o.service or "dispatcher" for o in bounced],
                [owner[o.id][0] for o in bounced],
                [o.at for o in bounced],
            ),
        )


async def start(
    conn: AsyncConnection, items: Sequence[tuple[int, str, str | None]], *, now: float
) -> None:
    ordered = sorted(items)
    if len({i for i, _, _ in ordered}) != len(ordered):
        raise Recheck
    result = await conn.exec_driver_sql(
        START,
        ([i for i, _, _ in ordered], [s for _, s, _ in ordered], [w for _, _, w in ordered], now),
    )
    if len(result.all()) != len(ordered):
        raise Recheck

"""The SQLite write path, straight on the stdlib driver: claim, start, outcomes, release, enqueue.

These are the statements every message passes through, so they skip SQLAlchemy (its per-call
compile and parameter work cost more than SQLite's own) and run as fixed SQL text that the
``sqlite3`` module prepares once and caches. Each function is a *job*: it runs inside a write
transaction that ``writer.SqliteWriter`` opened on its own thread, possibly together with other
jobs (group commit), and touches only the connection it is given.

Every job has two modes. The fast one trusts the caller (the rows are where the transition
table says they must be) and checks only the row counts; when a count is off it raises
``Recheck`` and the writer rolls back and runs the job alone in the careful mode, which reads
the rows first and says exactly which one is wrong (``TransitionError``) or gone.

The schema is ``tables.py``'s; a test runs these jobs against the migrated database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from . import states
from .rows import AudienceRow, Claimed, ExclusionIn, Outcome, normalize_key
from .tables import MESSAGE_STATUSES

log = logging.getLogger("campaignd.store")


class Recheck(Exception):
    """A fast-mode job found rows that were not where it expected: redo it carefully."""


def _in(values: Sequence[str]) -> str:
    return states.sql_in(values)


_IDS = "SELECT value FROM json_each(?)"
"""A list of ids as one parameter (a JSON array): one prepared statement whatever the count."""

CLAIM = f"""
UPDATE messages SET status = 'sending', service = NULL, claimed_by = ?, claimed_until = ?,
    attempts = attempts + 1, first_attempt_at = coalesce(first_attempt_at, ?), updated_at = ?
WHERE id IN (
    SELECT id FROM messages
    WHERE status IN ({_in(states.sources("claim", "sending"))}) AND next_attempt_at <= ?
      AND campaign_id IN (SELECT id FROM campaigns WHERE state = 'sending' AND id IN ({_IDS}))
    ORDER BY next_attempt_at, id LIMIT ?)
RETURNING id
"""
CLAIMED = f"""
SELECT m.id, m.campaign_id, m.edition, m.step, m.template, m.attempts, m.first_attempt_at,
       m.recipient, r.email, r.smtp_address, r.domain, r.fields, r.timezone
FROM messages m JOIN recipients r ON r.campaign_id = m.campaign_id AND r.key = m.recipient
WHERE m.id IN ({_IDS})
ORDER BY m.next_attempt_at, m.id
"""
SUPPRESSED = f"SELECT key FROM suppressions WHERE key IN ({_IDS})"
"""Which of the claimed recipients (normalized keys, a JSON array) are on the suppression list."""

START = f"""
UPDATE messages SET service = ?, updated_at = ?
WHERE id = ? AND status IN ({_in(states.sources("start", "sending"))})
  AND (? IS NULL OR claimed_by = ?)
"""
HOLDERS = f"SELECT id, status, claimed_by FROM messages WHERE id IN ({_IDS})"
_RELEASED_FROM = states.sources_any("release")
RELEASE = f"""
UPDATE messages SET
    status = CASE WHEN attempts > 1 THEN 'deferred' ELSE 'queued' END,
    attempts = attempts - 1,
    first_attempt_at = CASE WHEN attempts > 1 THEN first_attempt_at ELSE NULL END,
    next_attempt_at = ?, claimed_by = NULL, claimed_until = NULL, updated_at = ?
WHERE id IN ({_IDS}) AND status IN ({_in(_RELEASED_FROM)})
"""


def _outcome_guard() -> str:
    """``WHERE`` terms allowing exactly the table's outcome transitions (by the row's status
    now and the status the outcome sets)."""
    by_source: dict[str, set[str]] = {}
    for target in sorted(states.targets("outcome")):
        for source in states.sources("outcome", target):
            by_source.setdefault(source, set()).add(target)
    return " OR ".join(
        f"(status = '{s}' AND :status IN ({_in(sorted(t))}))" for s, t in sorted(by_source.items())
    )


OUTCOME = f"""
UPDATE messages SET status = :status,
    service = coalesce(:service, service), message_id = coalesce(:message_id, message_id),
    last_error = :error, last_code = :code, last_enhanced = :enhanced,
    next_attempt_at = :next, sent_at = coalesce(:sent, sent_at),
    bounced_at = coalesce(:bounced, bounced_at),
    claimed_by = NULL, claimed_until = NULL, updated_at = :at
WHERE id = :id AND ({_outcome_guard()}) AND (:worker IS NULL OR claimed_by = :worker)
"""
OUTCOME_UNCHECKED = OUTCOME.partition(" AND (")[0]
"""For a status outside the schema (only past ``Outcome``'s validation): the CHECK constraint
rejects it with its own message, as it does on every other path."""
OUTCOME_EVENT = """
INSERT INTO events (message, campaign_id, recipient, kind, detail, code, enhanced, service,
                    source, at)
SELECT id, campaign_id, recipient, :status, :detail, :code, :enhanced, :service, :source, :at
FROM messages WHERE id = :id
"""
OUTCOME_SUPPRESS = """
INSERT INTO suppressions (key, reason, source, campaign_id, created_at)
SELECT recipient, :reason, :source, campaign_id, :at FROM messages WHERE id = :id
ON CONFLICT DO NOTHING
"""
SERVICE_DAY = """
INSERT INTO service_days (service, day, sent) VALUES (?, ?, ?)
ON CONFLICT (service, day) DO UPDATE SET sent = sent + excluded.sent
"""
STATUS_OF = f"SELECT id, status FROM messages WHERE id IN ({_IDS})"
ENQUEUE = """
INSERT INTO messages (campaign_id, edition, step, recipient, template, status, attempts,
                      next_attempt_at, last_error, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""


# Enrollment: a whole batch is two parameters (JSON arrays: the recipient rows, and the step-1
# messages) and two statements, so SQLite reads, checks and indexes the batch in calls that run
# without the interpreter lock — beside whatever reads the next batch — instead of one lock
# round trip per row. The messages get their own short array: SQLite 3.40 parses a row's JSON
# again for every ``->>``, so reading four values from the wide recipient rows cost more than
# the rest of the insert. (``WHERE true`` keeps ``ON CONFLICT`` from parsing as a join
# constraint.)
ADD_RECIPIENTS = """
INSERT INTO recipients (campaign_id, key, email, smtp_address, domain, fields, timezone, source,
                        enrolled_at)
SELECT ?1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value -> 4, value ->> 5,
       value ->> 6, ?2
FROM json_each(?3) WHERE true
ON CONFLICT DO NOTHING
"""
ENROLL = """
INSERT INTO messages (campaign_id, edition, step, recipient, template, status, attempts,
                      next_attempt_at, last_error, excluded, created_at, updated_at)
SELECT ?1, ?2, 1, value ->> 0, value ->> 1, ?4, 0, ?5, value ->> 2, value ->> 3, ?3, ?3
FROM json_each(?6) WHERE true
ON CONFLICT DO NOTHING
"""
"""Step-1 messages: ``[recipient key, template]``, or ``[key, template, reason, exclusion
kind]`` for a recorded exclusion."""
ADD_RECIPIENT_ROW = """
INSERT INTO recipients (campaign_id, key, email, smtp_address, domain, fields, timezone, source,
                        enrolled_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""
ENROLL_ROW = """
INSERT INTO messages (campaign_id, edition, step, recipient, template, status, attempts,
                      next_attempt_at, last_error, excluded, created_at, updated_at)
VALUES (?, ?, 1, ?, ?, ?, 0, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""
_batch_json = json.JSONEncoder(ensure_ascii=False, check_circular=False, allow_nan=False).encode
fields_json = _batch_json
"""A row's fields as the ``recipients.fields`` text (the same encoder for every row:
``json.dumps`` with ``ensure_ascii=False`` builds a new encoder per call)."""


@dataclass(frozen=True, slots=True)
class EnrollTexts:
    """A batch of enrollment rows already in the layout ``ADD_RECIPIENTS`` and ``ENROLL``
    read. The audience reader makes it where it reads (another process, for a large list), so
    the daemon's writer only hands two strings to SQLite."""

    count: int
    recipients: str
    """JSON array of ``[key, email, smtp_address, domain, fields, timezone, source]``."""
    messages: str
    """JSON array of ``ENROLL``'s message rows, in the same order."""

    def __len__(self) -> int:
        return self.count


def enroll_texts(rows: Sequence[tuple[AudienceRow, str]]) -> EnrollTexts:
    """Accepted rows (recipient, step-1 template) as ``EnrollTexts``."""
    people = [
        (r.key, r.email, r.smtp_address, r.domain, as_dict(r.fields), r.timezone, r.source)
        for r, _ in rows
    ]
    messages = [(r.key, template) for r, template in rows]
    return EnrollTexts(len(people), _batch_json(people), _batch_json(messages))


def _exclusion_texts(items: Iterable[ExclusionIn]) -> EnrollTexts:
    people: list[list[Any]] = []
    messages: list[list[Any]] = []
    for x in items:
        r = x.recipient
        people.append(
            [r.key, r.email, r.smtp_address, r.domain, as_dict(r.fields), r.timezone, r.source]
        )
        messages.append([r.key, x.template, x.reason, x.excluded])
    return EnrollTexts(len(people), _batch_json(people), _batch_json(messages))


def as_dict(fields: Mapping[str, str]) -> dict[str, str]:
    """The encoder takes only a dict; the audience's rows already are one (no copy then)."""
    return fields if type(fields) is dict else dict(fields)


def _ids(ids: Collection[int]) -> str:
    return json.dumps(list(ids))


def _statuses(conn: sqlite3.Connection, ids: Collection[int]) -> dict[int, str]:
    return dict(conn.execute(STATUS_OF, (_ids(ids),)).fetchall())


def _refuse(found: dict[int, str], ids: Sequence[int], operation: str, target: str) -> None:
    for i in ids:
        if i in found and not states.allowed(operation, found[i], target):
            raise states.TransitionError(operation, i, found[i], target)


# ------------------------------------------------------------------ jobs


def claim(
    conn: sqlite3.Connection,
    careful: bool,
    *,
    worker: str,
    now: float,
    lease: float,
    limit: int,
    campaign_ids: Collection[str],
) -> list[Claimed]:
    if not campaign_ids or limit <= 0:
        return []
    cids = json.dumps(list(campaign_ids))
    picked = conn.execute(CLAIM, (worker, now + lease, now, now, now, cids, limit)).fetchall()
    if not picked:
        return []
    rows = conn.execute(CLAIMED, (_ids([i for (i,) in picked]),)).fetchall()
    normal = {r[7]: normalize_key(r[7]) for r in rows}
    listed = {k for (k,) in conn.execute(SUPPRESSED, (json.dumps(list(set(normal.values()))),))}
    out = []
    for r in rows:
        # CLAIMED selects the columns in Claimed's field order; only ``fields`` needs decoding.
        i, cid, edition, step, template, attempts, first, key, email, smtp, domain, f, tz = r
        out.append(
            Claimed(
                i,
                cid,
                edition,
                step,
                template,
                attempts,
                first,
                key,
                email,
                smtp,
                domain,
                json.loads(f),
                tz,
                normal[key] in listed,
            )
        )
    return out


def start(
    conn: sqlite3.Connection,
    careful: bool,
    *,
    items: Sequence[tuple[int, str, str | None]],
    now: float,
) -> None:
    """``items``: (message, service, the worker that claimed it or None if unknown)."""
    if careful:
        rows = conn.execute(HOLDERS, (_ids([i for i, _, _ in items]),)).fetchall()
        found = {i: status for i, status, _ in rows}
        _refuse(found, [i for i, _, _ in items], "start", "sending")
        holder = {i: by for i, _, by in rows}
        for i, _, worker in items:
            if worker is not None and i in holder and holder[i] != worker:
                raise states.ClaimLost(i, worker, holder[i])
        items = [item for item in items if item[0] in found]
    params = [(service, now, i, worker, worker) for i, service, worker in items]
    if conn.executemany(START, params).rowcount != len(items):
        raise Recheck


def release(
    conn: sqlite3.Connection, careful: bool, *, ids: Sequence[int], next_at: float, now: float
) -> int:
    unique = sorted(set(ids))
    if careful:
        found = _statuses(conn, unique)
        _refuse(found, unique, "release", "queued")
        unique = [i for i in unique if i in found]
    changed: int = conn.execute(RELEASE, (next_at, now, _ids(unique))).rowcount
    if changed != len(unique):
        raise Recheck
    return changed


class DayCache:
    """The calendar day (in ``zone``) of an epoch time; remembers the current day's bounds so
    the common case costs two comparisons."""

    def __init__(self, zone: tzinfo) -> None:
        self.zone = zone
        self._lo = self._hi = 0.0
        self._day = ""

    def __call__(self, at: float) -> str:
        if not self._lo <= at < self._hi:
            local = datetime.fromtimestamp(at, UTC).astimezone(self.zone)
            day: date = local.date()
            midnight = datetime(day.year, day.month, day.day, tzinfo=self.zone)
            self._lo = midnight.timestamp()
            self._hi = (midnight + timedelta(days=1)).timestamp()
            if not self._lo <= at < self._hi:  # a DST edge: do not cache
                self._lo = self._hi = 0.0
            self._day = day.isoformat()
            return self._day
        return self._day


def record(
    conn: sqlite3.Connection,
    careful: bool,
    *,
    outcomes: Sequence[Outcome],
    day: DayCache,
    owners: Mapping[int, str],
) -> None:
    """``owners``: the worker that claimed each message, where known — an outcome for a row
    another worker holds now is refused (``ClaimLost``), never written over its send."""
    # Rows in id order: the same order on every path, so concurrent writers cannot deadlock.
    ordered = sorted(outcomes, key=lambda o: o.id)
    if careful:
        rows = conn.execute(HOLDERS, (_ids([o.id for o in ordered]),)).fetchall()
        found = {i: status for i, status, _ in rows}
        holder = {i: by for i, _, by in rows}
        for o in ordered:
            if o.id in found and o.status in MESSAGE_STATUSES:
                states.check("outcome", found[o.id], o.status, message=o.id)
            worker = owners.get(o.id)
            if worker is not None and o.id in holder and holder[o.id] != worker:
                raise states.ClaimLost(o.id, worker, holder[o.id])
        gone = [o.id for o in ordered if o.id not in found]
        if gone:
            # Deleted while in flight (a stopped campaign cleaned up): nothing to record on.
            log.warning("outcomes for deleted messages %s dropped", ", ".join(map(str, gone[:20])))
            ordered = [o for o in ordered if o.id in found]
    params = [
        {
            "id": o.id,
            "status": o.status,
            "service": o.service,
            "message_id": o.message_id,
            "error": o.error,
            "code": o.code,
            "enhanced": o.enhanced,
            "next": o.next_attempt_at if o.status == "deferred" else None,
            "sent": o.at if o.status == "sent" else None,
            "bounced": o.at if o.status == "bounced" else None,
            "at": o.at,
            "detail": o.error or o.reason,
            "source": o.source or o.service or "dispatcher",
            "reason": o.reason or o.error or o.status,
            "worker": owners.get(o.id),
        }
        for o in ordered
    ]
    if any(o.status not in MESSAGE_STATUSES for o in ordered):
        conn.executemany(OUTCOME_UNCHECKED, params)  # raises: the CHECK constraint
    if conn.executemany(OUTCOME, params).rowcount != len(params):
        raise Recheck
    conn.executemany(OUTCOME_EVENT, params)
    per_day: dict[tuple[str, str], int] = {}
    for o in ordered:
        if o.status == "sent" and o.service:
            key = (o.service, day(o.at))
            per_day[key] = per_day.get(key, 0) + 1
    if per_day:
        conn.executemany(SERVICE_DAY, [(s, d, n) for (s, d), n in sorted(per_day.items())])
    suppress = [p for p, o in zip(params, ordered, strict=True) if o.suppress]
    if suppress:
        conn.executemany(OUTCOME_SUPPRESS, suppress)


def enqueue(
    conn: sqlite3.Connection,
    careful: bool,
    *,
    rows: Sequence[tuple[str, int, int, str, str, str, float | None, str | None, float, float]],
) -> int:
    """Rows as ``ENQUEUE``'s parameters; returns how many were new."""
    created: int = conn.executemany(ENQUEUE, rows).rowcount
    return created


def enroll(
    conn: sqlite3.Connection,
    careful: bool,
    *,
    campaign_id: str,
    edition: int,
    due: float,
    now: float,
    accepted: Sequence[tuple[AudienceRow, str]] | EnrollTexts,
    excluded: Sequence[ExclusionIn],
) -> tuple[int, int]:
    """One batch of enrollment: the recipient rows, the queued step-1 messages of ``accepted``
    (recipient, template; or already ``EnrollTexts``) and the recorded step-1 messages of
    ``excluded`` — two statements per kind whatever the batch's size. Idempotent (a known key
    keeps its first row, a known message is not made again); returns (new queued messages,
    new exclusion records)."""
    queued = recorded = 0
    if accepted:
        texts = accepted if isinstance(accepted, EnrollTexts) else enroll_texts(accepted)
        queued = _insert(conn, campaign_id, edition, now, "queued", due, texts)
    for status in ("skipped", "suppressed"):
        some = [x for x in excluded if x.status == status]
        if some:
            texts = _exclusion_texts(some)
            recorded += _insert(conn, campaign_id, edition, now, status, None, texts)
    return queued, recorded


def _insert(
    conn: sqlite3.Connection,
    campaign_id: str,
    edition: int,
    now: float,
    status: str,
    due: float | None,
    texts: EnrollTexts,
) -> int:
    """Recipients and step-1 messages of ``texts``; returns how many messages are new."""
    if "\\u0000" not in texts.recipients and "\\u0000" not in texts.messages:
        conn.execute(ADD_RECIPIENTS, (campaign_id, now, texts.recipients))
        made: int = conn.execute(
            ENROLL, (campaign_id, edition, now, status, due, texts.messages)
        ).rowcount
        return made
    # SQLite's JSON functions end a string at an escaped NUL (only a malformed row that
    # enrollment records as invalid can hold one): such a batch goes row by row.
    people, messages = json.loads(texts.recipients), json.loads(texts.messages)
    conn.executemany(
        ADD_RECIPIENT_ROW,
        [(campaign_id, *r[:4], fields_json(r[4]), *r[5:7], now) for r in people],
    )
    made = conn.executemany(
        ENROLL_ROW,
        [
            (campaign_id, edition, m[0], m[1], status, due, *(m[2:] or [None, None]), now, now)
            for m in messages
        ],
    ).rowcount
    return made

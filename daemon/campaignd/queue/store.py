"""The durable store: every message's state, so a crash or restart loses nothing and sends
nothing twice (SPEC §6).

``Store`` is the one object the daemon, the API and campaignctl use; SQL lives in the sibling
modules (``leases``, ``outcomes``, ``reports``, ``history``; on SQLite the per-message path in
``hot`` on the stdlib driver, run by ``writer``'s thread) and dialect differences stay in this
package. Every message-status change follows ``states``. Write transactions are short; reads
never hold a snapshot across awaits of the caller, so WAL checkpoints are not starved.

The database going away is weather (``faults``): calls retry with a backoff, outcomes wait in
memory until they commit, and ``health`` says what is wrong meanwhile.

Times are float epoch seconds; methods that take a time also accept an aware ``datetime``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Sequence,
)
from datetime import UTC, date, datetime, tzinfo
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..errors import StoreError
from . import faults, feedback, history, hot, hot_pg, leases, outcomes, paces, reports, states
from .batcher import BatchStats, GroupCommit
from .database import (
    BUSY_TIMEOUT_MS,
    WRITE_OPTION,
    create_engine,
    display,
    insert,
    normalize_url,
    upgrade,
)
from .faults import StoreUnavailable
from .history import HistorySnapshot, epoch
from .hot import EnrollTexts, enroll_texts
from .lookup import SqliteSuppressions
from .rows import (
    AudienceRow,
    CampaignCounts,
    CampaignRow,
    Claimed,
    EventIn,
    ExclusionIn,
    MessageRow,
    Outcome,
    RecipientIn,
    SuppressionRow,
    normalize_key,
)
from .rows import iso as iso_time
from .tables import (
    CAMPAIGN_STATES,
    DUE_STATUSES,
    EVENT_COLUMNS,
    EXCLUDED_KINDS,
    FINAL_STATES,
    PENDING_STATUSES,
    campaigns,
    daemons,
    editions,
    events,
    messages,
    suppressions,
)
from .tables import recipients as recipients_table
from .writer import SqliteWriter

__all__ = [
    "AudienceRow",
    "CampaignCounts",
    "CampaignRow",
    "Claimed",
    "EnrollTexts",
    "EventIn",
    "ExclusionIn",
    "HistorySnapshot",
    "MessageRow",
    "Outcome",
    "RecipientIn",
    "Store",
    "StoreUnavailable",
    "SuppressionRow",
    "enroll_texts",
]

log = logging.getLogger("campaignd.store")
m = messages
T = TypeVar("T")
P = ParamSpec("P")
Time = float | datetime
RETRY_FOR = 30.0
"""Seconds an ordinary store call keeps retrying a database that is away before it raises
``StoreUnavailable`` (the API answers then, the supervisor restarts a loop). ``claim`` and
``release``, which only the delivery loop calls, and every start and outcome wait until the
database is back or the store closes."""
HEARTBEAT_TIMEOUT = 30.0
"""A daemon whose heartbeat is older than this is taken for dead (heartbeat every ~10 s)."""
ENQUEUE_STATUSES = states.targets("enqueue")
_Done = tuple[Outcome, str | None]
"""An outcome and the worker that claimed its message (None: not claimed through this store)."""
_Start = tuple[int, str, str | None]
"""A start: message, service, the worker that claimed it."""
CLOCK_EVERY = 60.0
"""How often the offset between the database's clock and ours is measured again."""


def _batches(items: Iterable[T], size: int) -> Iterable[list[T]]:
    it = iter(items)
    while batch := list(islice(it, max(1, size))):
        yield batch


def _patient(
    *, forever: bool = False
) -> Callable[
    [Callable[Concatenate[Store, P], Awaitable[T]]],
    Callable[Concatenate[Store, P], Coroutine[Any, Any, T]],
]:
    """Retry the whole call (each is one transaction, or idempotent batches) while the
    database is away; ``forever``: until it is back or the store closes."""

    def wrap(
        fn: Callable[Concatenate[Store, P], Awaitable[T]],
    ) -> Callable[Concatenate[Store, P], Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def call(store: Store, /, *args: P.args, **kwargs: P.kwargs) -> T:
            try:
                result = await fn(store, *args, **kwargs)
            except Exception as exc:  # the only try on the fast path; retries live below
                if not faults.transient(exc):
                    raise
                return await store._retry_call(exc, forever, lambda: fn(store, *args, **kwargs))
            if store._sa_health != "ok":
                store._fault(None)
            return result

        return call

    return wrap


class Store:
    """Open with ``await Store.open(url, root=...)``; ``await store.close()`` when done."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        url: str,
        day_zone: tzinfo = UTC,
        clock: Callable[[], float] = time.time,
        retry_for: float = RETRY_FOR,
    ) -> None:
        self.engine = engine
        self.retry_for = retry_for
        self._closing = False
        self._race_hook: Callable[[str], Awaitable[None]] | None = None
        """Test seam: awaited inside ``retry``'s and ``complete``'s transactions, after the
        campaign row is locked, with the method's name (drives a race deterministically)."""
        self._sa_health = "ok"
        self._sa_health_since = time.time()
        self.url = url
        """Without password, for messages."""
        self.day_zone = day_zone
        self.clock = clock
        self.dialect = engine.dialect.name
        self._writer = engine.execution_options(**{WRITE_OPTION: True})
        # SQLite has one writer at a time anyway; queueing here keeps the order fair and keeps
        # busy-waiting out of the driver threads.
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        # Starts and outcomes share one writer: a transaction commits the outcomes of the
        # messages just sent and the starts of the next ones together (half the commits).
        self._claimed: dict[int, str] = {}
        """Claimed, not yet settled: message → the worker that claimed it, so ``start`` and
        outcomes touch only rows still held by that worker (see ``release_dead``)."""
        self._outcomes: GroupCommit[_Done | _Start] = GroupCommit(
            self._commit_outcomes, transient=faults.transient, on_fault=self._fault
        )
        # SQLite's hot path (claim, start, outcomes, release, enqueue) bypasses SQLAlchemy: one
        # thread with its own connection commits each group of them in one hand-off.
        self._hot: SqliteWriter | None = None
        if self.dialect == "sqlite":
            assert engine.url.database is not None
            self._hot = SqliteWriter(engine.url.database, busy_timeout=BUSY_TIMEOUT_MS / 1000)
        self._day = hot.DayCache(day_zone)
        self._offset: float | None = None  # the database's clock minus ours (shared paces)
        self._offset_at = -float("inf")

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        root: Path,
        day_zone: tzinfo = UTC,
        clock: Callable[[], float] = time.time,
        retry_for: float = RETRY_FOR,
    ) -> Store:
        """Connect, migrate the schema to head and configure the connection.

        ``sqlite:///relative/path`` is relative to ``root`` (its directory is created);
        ``day_zone`` is where a service's sending day starts and ends (warm-up, daily caps);
        ``retry_for`` how long an ordinary call waits for a database that went away.
        """
        target = normalize_url(url, root=root)
        shown = display(target)
        engine: AsyncEngine | None = None
        try:
            engine = create_engine(target)
            store = cls(engine, url=shown, day_zone=day_zone, clock=clock, retry_for=retry_for)
            async with store._tx() as conn:
                started_from = await conn.run_sync(upgrade)
        except BaseException as exc:
            if engine is not None:
                await engine.dispose()
            if not isinstance(exc, OSError | sa.exc.SQLAlchemyError):
                raise  # a StoreError already says what to do
            raise StoreError(
                f"cannot open the database {shown}: {exc} — check the URL in campaignd.yaml "
                "(database:) or $CAMPAIGND_DATABASE, that the server runs and the user may log "
                "in, and that the directory is writable"
            ) from exc
        if started_from is not None:
            log.info("database %s migrated from %s to the current schema", shown, started_from)
        return store

    async def close(self) -> None:
        """Commit outcomes still queued, then release every connection."""
        self._closing = True
        try:
            if self._hot is not None:
                await self._hot.close()
            await self._outcomes.close()
        finally:
            await self.engine.dispose()

    # ------------------------------------------------------------ health

    @property
    def health(self) -> str:
        """``ok``, or why the database cannot be used right now: ``database unreachable: …``,
        ``database locked: …``, ``database disk full``. Set by the calls that fail and cleared
        by the next one that succeeds (the delivery loop calls several times a second), so it
        is current while the daemon works; ``await check()`` probes on demand."""
        writer = self._hot.health if self._hot is not None else "ok"
        return writer if writer != "ok" else self._sa_health

    @property
    def healthy(self) -> bool:
        return self.health == "ok"

    @property
    def health_since(self) -> float:
        """When ``health`` last changed (epoch seconds)."""
        if self._hot is not None and self._hot.health != "ok":
            return self._hot.health_since
        return self._sa_health_since

    async def check(self) -> str:
        """Probe the database now with one read and return ``health``. A read cannot see a
        full disk: that shows (and clears) through the writes themselves, which the delivery
        loop makes continuously while it has work."""
        try:
            async with self._read() as conn:
                await conn.execute(sa.select(sa.literal(1)))
        except Exception as exc:
            if not faults.transient(exc):
                raise
            self._fault(exc)
        else:
            self._fault(None)
        return self.health

    def _fault(self, exc: BaseException | None) -> None:
        health = "ok" if exc is None else faults.describe(exc)
        if health == self._sa_health:
            return
        if exc is None:
            log.warning("database %s is usable again", self.url)
        else:
            log.error("database %s: %s — retrying", self.url, health)
        self._sa_health, self._sa_health_since = health, time.time()

    async def _retry_call(
        self, exc: BaseException, forever: bool, call: Callable[[], Awaitable[T]]
    ) -> T:
        """Off the fast path: back off (0.05 s doubling to 2 s) and call again while the
        database is away. A pool hands out only live connections (pre-ping on PostgreSQL), so
        each try reconnects if the server restarted."""
        delay = 0.05
        deadline = time.monotonic() + self.retry_for
        while True:
            self._fault(exc)
            if self._closing or (not forever and time.monotonic() >= deadline):
                raise StoreUnavailable(self.health) from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            try:
                result = await call()
            except Exception as again:
                if not faults.transient(again):
                    raise
                exc = again
                continue
            self._fault(None)
            return result

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite)."""
        lock = self._write_lock or contextlib.nullcontext()
        async with lock, self._writer.begin() as conn:
            yield conn

    def _read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.connect()

    # ------------------------------------------------------------ campaigns

    @_patient()
    async def ensure_campaign(self, campaign_id: str, *, state: str) -> CampaignRow:
        """Insert the campaign in ``state`` if absent; returns the row as it is now."""
        _check_state(state)
        # Called on every conductor pass: answer from a read while the row exists.
        if (found := await self.get_campaign(campaign_id)) is not None:
            return found
        now = self.clock()
        async with self._tx() as conn:
            await conn.execute(
                insert(conn, campaigns)
                .values(
                    id=campaign_id,
                    state=state,
                    created_at=now,
                    updated_at=now,
                    started_at=now if state == "sending" else None,
                )
                .on_conflict_do_nothing()
            )
            row = await reports.get_campaign(conn, campaign_id)
        assert row is not None
        return row

    @_patient()
    async def get_campaign(self, campaign_id: str) -> CampaignRow | None:
        async with self._read() as conn:
            return await reports.get_campaign(conn, campaign_id)

    @_patient()
    async def list_campaigns(self) -> list[CampaignRow]:
        async with self._read() as conn:
            rows = await conn.execute(sa.select(campaigns).order_by(campaigns.c.id))
            return [reports.campaign_row(row) for row in rows]

    @_patient()
    async def set_campaign_state(
        self,
        campaign_id: str,
        state: str,
        reason: str | None = None,
        *,
        only_from: Collection[str] | None = None,
    ) -> CampaignRow:
        """Move the campaign to ``state`` and return the row as it is now.

        Nothing changes (and the current row is returned) when the campaign is ``stopped`` —
        stop is final — or when ``only_from`` is given and the current state is not in it.
        Entering ``sending`` the first time sets ``started_at``; entering a final state sets
        ``finished_at``, leaving it clears it.
        """
        _check_state(state)
        now = self.clock()
        async with self._tx() as conn:
            row = (
                await conn.execute(
                    sa.select(campaigns).where(campaigns.c.id == campaign_id).with_for_update()
                )
            ).first()
            if row is None:
                raise StoreError(
                    f"no campaign {campaign_id!r} in the database {self.url} — "
                    "it has not started yet or its records were deleted"
                )
            current = reports.campaign_row(row)
            if current.state == "stopped" and state != "stopped":
                return current
            if only_from is not None and current.state not in only_from:
                return current
            if current.state == state and current.reason == reason:
                return current
            values: dict[str, object] = {"state": state, "reason": reason, "updated_at": now}
            if state == "sending" and current.started_at is None:
                values["started_at"] = now
            if state in FINAL_STATES:
                values["finished_at"] = current.finished_at or now
            else:
                values["finished_at"] = None
            await conn.execute(
                sa.update(campaigns).where(campaigns.c.id == campaign_id).values(values)
            )
            updated = await reports.get_campaign(conn, campaign_id)
        assert updated is not None
        return updated

    @_patient()
    async def ensure_edition(
        self, campaign_id: str, edition: int, *, fired_at: Time, caught_up: bool = False
    ) -> bool:
        """Record an edition (a firing of a recurring campaign; 0 for a one-off one). True if
        it is new. The conductor writes it once the edition's enrollment is complete."""
        fired = epoch(fired_at)
        async with self._tx() as conn:
            created = (
                await conn.execute(
                    insert(conn, editions)
                    .values(
                        campaign_id=campaign_id,
                        edition=edition,
                        fired_at=fired,
                        caught_up=caught_up,
                        created_at=self.clock(),
                    )
                    .on_conflict_do_nothing()
                    .returning(editions.c.edition)
                )
            ).first() is not None
            if created:
                await conn.execute(
                    sa.update(campaigns)
                    .where(
                        campaigns.c.id == campaign_id,
                        sa.or_(
                            campaigns.c.last_edition.is_(None), campaigns.c.last_edition < edition
                        ),
                    )
                    .values(last_edition=edition, last_fired_at=fired)
                )
        return created

    @_patient()
    async def has_edition(self, campaign_id: str, edition: int) -> bool:
        async with self._read() as conn:
            found = await conn.scalar(
                sa.select(sa.literal(1)).where(
                    editions.c.campaign_id == campaign_id, editions.c.edition == edition
                )
            )
        return found is not None

    @_patient()
    async def delete_campaign(self, campaign_id: str) -> int:
        """Delete a stopped, completed or failed campaign's records; returns the messages
        deleted. Suppressions and the services' daily counts stay."""
        async with self._tx() as conn:
            row = await reports.get_campaign(conn, campaign_id)
            if row is None:
                raise StoreError(f"no campaign {campaign_id!r} in the database {self.url}")
            if row.state not in FINAL_STATES:
                raise StoreError(
                    f"campaign {campaign_id!r} is {row.state} — stop it first "
                    f"(campaignctl stop {campaign_id}), then delete its records"
                )
            await conn.execute(sa.delete(events).where(events.c.campaign_id == campaign_id))
            deleted = (
                await conn.execute(sa.delete(m).where(m.c.campaign_id == campaign_id))
            ).rowcount
            for table in (recipients_table, editions):
                await conn.execute(sa.delete(table).where(table.c.campaign_id == campaign_id))
            await conn.execute(sa.delete(campaigns).where(campaigns.c.id == campaign_id))
        return deleted

    # ------------------------------------------------------------ enrollment

    @_patient()
    async def add_recipients(
        self, campaign_id: str, recipients: Iterable[RecipientIn], *, batch: int = 1000
    ) -> int:
        """Store audience rows (idempotent: a known key keeps its first row); returns how many
        are new. Each batch is its own short transaction."""
        created = 0
        for part in _batches(recipients, batch):
            now = self.clock()
            async with self._tx() as conn:
                table = recipients_table
                stmt = insert(conn, table).on_conflict_do_nothing().returning(table.c.key)
                rows = await conn.execute(
                    stmt,
                    [
                        {
                            "campaign_id": campaign_id,
                            "key": rc.key,
                            "email": rc.email,
                            "smtp_address": rc.smtp_address,
                            "domain": rc.domain,
                            "fields": json.dumps(dict(rc.fields), ensure_ascii=False),
                            "timezone": rc.timezone,
                            "source": rc.source,
                            "enrolled_at": now,
                        }
                        for rc in part
                    ],
                )
                created += len(rows.all())
        return created

    @_patient()
    async def record_exclusions(
        self, campaign_id: str, edition: int, items: Sequence[ExclusionIn]
    ) -> int:
        """Record list rows enrollment did not enroll: each one's recipient row and a step-1
        message in its final status (``skipped``/``suppressed``) with ``excluded`` and the
        reason, in one transaction. Idempotent like ``enqueue``; returns how many are new."""
        _check_exclusions(items)
        if not items:
            return 0
        now = self.clock()
        async with self._tx() as conn:
            rt = recipients_table
            await conn.execute(
                insert(conn, rt).on_conflict_do_nothing(),
                [
                    {
                        "campaign_id": campaign_id,
                        "key": x.recipient.key,
                        "email": x.recipient.email,
                        "smtp_address": x.recipient.smtp_address,
                        "domain": x.recipient.domain,
                        "fields": json.dumps(dict(x.recipient.fields), ensure_ascii=False),
                        "timezone": x.recipient.timezone,
                        "source": x.recipient.source,
                        "enrolled_at": now,
                    }
                    for x in items
                ],
            )
            rows = await conn.execute(
                insert(conn, m).on_conflict_do_nothing().returning(m.c.id),
                [
                    {
                        "campaign_id": campaign_id,
                        "edition": edition,
                        "step": 1,
                        "recipient": x.recipient.key,
                        "template": x.template,
                        "status": x.status,
                        "attempts": 0,
                        "next_attempt_at": None,
                        "last_error": x.reason,
                        "excluded": x.excluded,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for x in items
                ],
            )
            return len(rows.all())

    @_patient()
    async def enroll_batch(
        self,
        campaign_id: str,
        edition: int,
        accepted: Sequence[tuple[AudienceRow, str]] | EnrollTexts,
        excluded: Sequence[ExclusionIn] = (),
        *,
        due: Time,
    ) -> tuple[int, int]:
        """One batch of enrollment in one transaction: the recipient rows, a queued step-1
        message (due at ``due``) for each of ``accepted`` (recipient, template — or the same
        already encoded by ``enroll_texts``), and the records of ``excluded`` (as
        ``record_exclusions``). Idempotent: a re-run creates only what is new. Returns (new
        queued messages, new exclusion records).

        The batch is a few fixed statements with all its rows (JSON parameters on the SQLite
        writer's thread, arrays on PostgreSQL), so a batch of thousands costs about what the
        database itself spends on it."""
        _check_exclusions(excluded)
        if not accepted and not excluded:
            return 0, 0
        batch: dict[str, Any] = dict(
            campaign_id=campaign_id,
            edition=edition,
            due=epoch(due),
            now=self.clock(),
            accepted=accepted,
            excluded=excluded,
        )
        if self._hot is not None:
            return await self._hot.run(partial(hot.enroll, **batch))
        async with self._tx() as conn:
            return await hot_pg.enroll(conn, **batch)

    def suppression_reader(self) -> SqliteSuppressions | None:
        """For a thread reading an audience on SQLite: suppression look-ups on its own
        read-only connection (``close()`` it when done), no hop to the event loop. None on
        PostgreSQL, where ``suppressed`` is the way."""
        return SqliteSuppressions(self._hot.path) if self._hot is not None else None

    @_patient()
    async def first_sources(self, campaign_id: str, keys: Sequence[str]) -> dict[str, str]:
        """Where each of ``keys`` was first read for this campaign (its recipient row's
        ``file:line``): what a duplicate row duplicates."""
        found: dict[str, str] = {}
        rt = recipients_table
        async with self._read() as conn:
            for part in _batches(keys, leases.CHUNK):
                rows = await conn.execute(
                    sa.select(rt.c.key, rt.c.source).where(
                        rt.c.campaign_id == campaign_id, rt.c.key.in_(part)
                    )
                )
                found.update((str(k), str(src)) for k, src in rows)
        return found

    @_patient()
    async def remove_recipients(self, campaign_id: str, keys: Sequence[str], *, at: Time) -> int:
        """Continuous enrollment: these rows left the lists. Their later drip steps are not
        created; messages already queued stay (pause or stop the campaign to hold them)."""
        n = 0
        async with self._tx() as conn:
            for part in _batches(keys, leases.CHUNK):
                n += (
                    await conn.execute(
                        sa.update(recipients_table)
                        .where(
                            recipients_table.c.campaign_id == campaign_id,
                            recipients_table.c.key.in_(part),
                            recipients_table.c.removed_at.is_(None),
                        )
                        .values(removed_at=epoch(at))
                    )
                ).rowcount
        return n

    @_patient()
    async def enqueue(
        self,
        campaign_id: str,
        edition: int,
        step: int,
        items: Iterable[tuple[str, str]],
        *,
        due: Time,
        batch: int = 1000,
        status: str = "queued",
        reason: str | None = None,
    ) -> int:
        """Create message rows for (recipient key, template) pairs; returns how many are new.

        Re-running creates nothing: (campaign, edition, step, recipient) is unique. The
        recipients must have been added first. ``status="skipped"`` (with a ``reason``)
        records a drip step that an ``unless`` condition cancelled, so the chain ends there.
        """
        if status not in ENQUEUE_STATUSES:
            raise ValueError(f"enqueue status {status!r}: use one of {sorted(ENQUEUE_STATUSES)}")
        at = epoch(due)
        next_at = at if status == "queued" else None
        created = 0
        if self._hot is not None:
            for part in _batches(items, batch):
                now = self.clock()
                rows = [
                    (campaign_id, edition, step, key, template, status, next_at, reason, now, now)
                    for key, template in part
                ]
                created += await self._hot.run(partial(hot.enqueue, rows=rows))
            return created
        for part in _batches(items, batch):
            now = self.clock()
            async with self._tx() as conn:
                stmt = insert(conn, m).on_conflict_do_nothing().returning(m.c.id)
                rows = await conn.execute(
                    stmt,
                    [
                        {
                            "campaign_id": campaign_id,
                            "edition": edition,
                            "step": step,
                            "recipient": key,
                            "template": template,
                            "status": status,
                            "attempts": 0,
                            "next_attempt_at": next_at,
                            "last_error": reason,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for key, template in part
                    ],
                )
                created += len(rows.all())
        return created

    # ------------------------------------------------------------ delivery

    @_patient(forever=True)
    async def claim(
        self,
        *,
        worker: str,
        now: Time,
        lease: float,
        limit: int,
        campaign_ids: Collection[str],
    ) -> list[Claimed]:
        """Lease up to ``limit`` due rows of those campaigns whose database state is
        ``sending``, oldest due first: status ``sending``, ``attempts`` + 1, held by ``worker``
        until ``now + lease``."""
        t = epoch(now)
        if self._hot is not None:
            job = partial(
                hot.claim,
                worker=worker,
                now=t,
                lease=lease,
                limit=limit,
                campaign_ids=list(campaign_ids),
            )
            claimed = await self._hot.run(job)
        else:
            async with self._tx() as conn:
                claimed = await leases.claim(
                    conn, worker=worker, now=t, lease=lease, limit=limit, campaign_ids=campaign_ids
                )
        for c in claimed:
            self._claimed[c.id] = worker
        return claimed

    @_patient(forever=True)
    @_patient()
    async def wake_parked(self, campaign_id: str, *, now: Time) -> int:
        """Queued messages of the campaign waiting for a later time (a closed window, a limit)
        are due now: a reload changed its window, and they may go sooner than they were parked
        for. Status is unchanged (queued stays queued); returns how many were woken."""
        t = epoch(now)
        async with self._tx() as conn:
            result = await conn.execute(
                sa.update(m)
                .where(
                    m.c.campaign_id == campaign_id,
                    m.c.status == "queued",
                    m.c.claimed_by.is_(None),
                    m.c.next_attempt_at > t,
                )
                .values(next_attempt_at=t)
            )
            return int(result.rowcount or 0)

    async def release(self, ids: Sequence[int], *, next_attempt_at: Time) -> None:
        """Hand claimed rows back, due at ``next_attempt_at``, without counting an attempt
        (a limit says wait, the window is closed, the campaign was paused meanwhile)."""
        if not ids:
            return
        for i in ids:
            self._claimed.pop(i, None)
        if self._hot is not None:
            job = partial(
                hot.release, ids=list(ids), next_at=epoch(next_attempt_at), now=self.clock()
            )
            await self._hot.run(job)
            return
        async with self._tx() as conn:
            await leases.release(
                conn, list(ids), next_attempt_at=epoch(next_attempt_at), now=self.clock()
            )

    async def start(self, message: int, service: str) -> None:
        """Mark a claimed row as entering its SMTP transaction; returns once committed (group
        commit, like ``record``). Until then a crash hands the row back instead of making it
        ``uncertain`` — so at most the messages really in flight can be uncertain."""
        item = (message, service, self._claimed.get(message))
        if self._hot is not None:
            await self._hot.run(partial(hot.start, items=[item], now=self.clock()), counted=1)
            return
        await self._outcomes.submit([item])

    async def record(self, outcomes_: Sequence[Outcome]) -> None:
        """Apply outcomes; returns once they are committed. Concurrent calls share one
        transaction (group commit), each still waiting for its own outcomes."""
        owners: dict[int, str] = {}
        if self._claimed:
            for o in outcomes_:
                if (worker := self._claimed.pop(o.id, None)) is not None:
                    owners[o.id] = worker
        if self._hot is not None:
            if outcomes_:
                job = partial(hot.record, outcomes=list(outcomes_), day=self._day, owners=owners)
                await self._hot.run(job, counted=len(outcomes_))
            return
        await self._outcomes.submit([(o, owners.get(o.id)) for o in outcomes_])

    @property
    def commit_stats(self) -> BatchStats:
        """Group-commit counters of starts and outcomes: requests, items, transactions, largest."""
        return self._hot.stats if self._hot is not None else self._outcomes.stats

    async def _commit_outcomes(self, items: Sequence[_Done | _Start]) -> None:
        pairs = [i for i in items if len(i) == 2]
        starts = [i for i in items if len(i) == 3]
        done = [o for o, _ in pairs]
        owners = {o.id: w for o, w in pairs if w is not None}
        if self.dialect == "postgresql":
            try:
                async with self._tx() as conn:
                    if done:
                        await hot_pg.record(conn, done, day=self._day, owners=owners)
                    if starts:
                        await hot_pg.start(conn, starts, now=self.clock())
                return
            except hot.Recheck:
                pass  # rolled back: the careful path below names what was refused
        async with self._tx() as conn:
            if done:
                await outcomes.apply_outcomes(conn, done, day_zone=self.day_zone, owners=owners)
            if starts:
                await leases.start(conn, starts, now=self.clock())

    @_patient()
    async def recover(self, *, now: Time, worker: str | None = None) -> int:
        """At start-up: rows a previous process left in ``sending`` become ``uncertain`` (they
        may have been delivered; only an operator's retry sends them again). Returns the count.

        Without ``worker`` this daemon is the only one on the database: every ``sending`` row
        is settled (always so on SQLite). With ``worker`` (``host:pid``) on PostgreSQL, only
        rows of dead processes: expired leases, and processes of this host that no longer run
        (another live daemon on the same host keeps its claims).
        """
        t = epoch(now)
        where: sa.ColumnElement[bool] = sa.true()
        if worker is not None and self.dialect != "sqlite":
            host = worker.rpartition(":")[0]
            async with self._read() as conn:
                owners: list[str] = list(
                    (
                        await conn.execute(
                            sa.select(m.c.claimed_by)
                            .where(m.c.status == "sending")
                            .where(m.c.claimed_by.startswith(f"{host}:", autoescape=True))
                            .distinct()
                        )
                    ).scalars()
                )
                dead = [o for o in owners if o != worker and not _process_alive(o)]
            where = sa.or_(m.c.claimed_until < t, m.c.claimed_by.in_(dead))
        why = "interrupted while sending: it may have been delivered, so it is not resent"
        async with self._tx() as conn:
            return await leases.settle(conn, where, now=t, why=why)

    @_patient()
    async def reclaim_expired(self, *, now: Time) -> int:
        """Rows whose lease ran out (their daemon died while sharing the database) →
        ``uncertain``."""
        t = epoch(now)
        why = "lease expired while sending: it may have been delivered, so it is not resent"
        async with self._tx() as conn:
            return await leases.settle(conn, m.c.claimed_until < t, now=t, why=why)

    @_patient()
    async def release_claims(self, *, worker: str, now: Time) -> int:
        """At shutdown, after draining: rows ``worker`` still holds were in an SMTP transaction
        that did not finish in time → ``uncertain``. (Rows it had claimed but not started were
        handed back by the dispatcher itself.)"""
        t = epoch(now)
        why = "still being sent when the daemon stopped: it may have been delivered"
        async with self._tx() as conn:
            return await leases.settle(conn, m.c.claimed_by == worker, now=t, why=why)

    @_patient()
    async def retry(self, campaign_id: str, statuses: Collection[str], *, now: Time) -> int:
        """The operator's decision: rows in ``statuses`` (failed, uncertain, deferred) are
        queued again, due now, with their attempts and give-up clock reset and a ``last_error``
        saying the operator re-queued them.

        Atomic against ``complete``: the campaign row is locked first, and a ``completed`` or
        ``waiting`` campaign goes back to ``sending`` in the same transaction, so re-queued rows
        can never sit in a completed campaign."""
        t = epoch(now)
        async with self._tx() as conn:
            row = await self._lock_campaign(conn, campaign_id)
            count = await leases.requeue(conn, campaign_id, statuses, now=t)
            if self._race_hook is not None:
                await self._race_hook("retry")
            if count and row is not None and row.state in ("completed", "waiting"):
                await conn.execute(
                    sa.update(campaigns)
                    .where(campaigns.c.id == campaign_id)
                    .values(state="sending", reason=None, finished_at=None, updated_at=t)
                )
            return count

    @_patient()
    async def complete(self, campaign_id: str, reason: str | None = None) -> CampaignRow:
        """Mark the campaign ``completed`` only if no message of it is pending (queued, sending,
        deferred) — decided in the same transaction, so a concurrent ``retry`` either lands
        first (and the campaign stays open) or re-opens it. Returns the row as it is now;
        a stopped or failed campaign is left as it is. The conductor's way to complete."""
        now = self.clock()
        async with self._tx() as conn:
            row = await self._lock_campaign(conn, campaign_id)
            if row is None:
                raise StoreError(f"no campaign {campaign_id!r} in the database {self.url}")
            if self._race_hook is not None:
                await self._race_hook("complete")
            pending = sa.exists().where(
                m.c.campaign_id == campaign_id, m.c.status.in_(PENDING_STATUSES)
            )
            await conn.execute(
                sa.update(campaigns)
                .where(
                    campaigns.c.id == campaign_id,
                    campaigns.c.state.not_in(sorted(FINAL_STATES)),
                    ~pending,
                )
                .values(
                    state="completed",
                    reason=reason,
                    finished_at=sa.func.coalesce(campaigns.c.finished_at, now),
                    updated_at=now,
                )
            )
            updated = await reports.get_campaign(conn, campaign_id)
        assert updated is not None
        return updated

    async def _lock_campaign(self, conn: AsyncConnection, campaign_id: str) -> CampaignRow | None:
        """Read the campaign row and hold it until the transaction ends (PostgreSQL; SQLite's
        BEGIN IMMEDIATE holds the whole database already). Later statements of the
        transaction take a fresh snapshot, so they see what the previous holder committed."""
        row = (
            await conn.execute(
                sa.select(campaigns).where(campaigns.c.id == campaign_id).with_for_update()
            )
        ).first()
        return reports.campaign_row(row) if row is not None else None

    # ------------------------------------------------------------ heartbeats

    @_patient()
    async def heartbeat(
        self, worker: str, *, now: Time | None = None, lease: float | None = None
    ) -> None:
        """This daemon (``host:pid``, its ``claimed_by``) is alive. Call every ~10 s, before
        the first claim and then for as long as it runs; ``keep_alive`` does it. With ``lease``
        the claims it holds are renewed to ``now + lease`` in the same transaction, so a short
        claim lease does not run out under a batch that waits for its limits."""
        t = self.clock() if now is None else epoch(now)
        async with self._tx() as conn:
            if lease is not None:
                await conn.execute(
                    sa.update(m)
                    .where(m.c.status == "sending", m.c.claimed_by == worker)
                    .values(claimed_until=t + lease)
                )
            stmt = insert(conn, daemons).values(worker=worker, started_at=t, heartbeat_at=t)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[daemons.c.worker],
                    set_={"heartbeat_at": stmt.excluded.heartbeat_at},
                )
            )

    @_patient()
    async def release_dead(
        self, worker: str, *, now: Time | None = None, stale_after: float = HEARTBEAT_TIMEOUT
    ) -> int:
        """Settle the claims of daemons whose heartbeat is older than ``stale_after`` (they died
        without ``release_claims``): rows they had not started go back to the queue, started
        ones become ``uncertain``; their heartbeat rows are removed. ``worker`` (this daemon)
        is never taken for dead. Returns how many rows were settled either way."""
        t = self.clock() if now is None else epoch(now)
        async with self._tx() as conn:
            dead: list[str] = list(
                (
                    await conn.execute(
                        sa.select(daemons.c.worker)
                        .where(daemons.c.heartbeat_at < t - stale_after, daemons.c.worker != worker)
                        .with_for_update(skip_locked=True)
                    )
                ).scalars()
            )
            if not dead:
                return 0
            held = m.c.claimed_by.in_(dead)
            why = "its daemon stopped sending heartbeats while sending: it may have been delivered"
            released, uncertain = await leases.settle_counts(conn, held, now=t, why=why)
            await conn.execute(sa.delete(daemons).where(daemons.c.worker.in_(dead)))
        if released or uncertain:
            log.warning(
                "daemons %s stopped sending heartbeats: %d of their messages back to the queue, "
                "%d uncertain",
                ", ".join(dead),
                released,
                uncertain,
            )
        return released + uncertain

    @_patient()
    async def retire(self, worker: str) -> None:
        """At a clean shutdown, after ``release_claims``: remove this daemon's heartbeat row."""
        async with self._tx() as conn:
            await conn.execute(sa.delete(daemons).where(daemons.c.worker == worker))

    async def keep_alive(
        self,
        worker: str,
        *,
        every: float = 10.0,
        stale_after: float = HEARTBEAT_TIMEOUT,
        lease: float | None = None,
        on_settled: Callable[[int], object] | None = None,
    ) -> None:
        """Run for the daemon's life (under its supervisor): heartbeat every ``every`` seconds
        (renewing its claims to ``lease`` if given) and settle the claims of daemons that
        stopped theirs — ``on_settled`` is told how many rows that was, so the caller's claim
        loop looks at once instead of at its next poll. Raises ``StoreUnavailable`` if the
        database stays away longer than ``retry_for``; the supervisor restarts it."""
        while not self._closing:
            await self.heartbeat(worker, lease=lease)
            settled = await self.release_dead(worker, stale_after=stale_after)
            if settled and on_settled is not None:
                on_settled(settled)
            await asyncio.sleep(every)

    @_patient()
    async def next_due(self, campaign_ids: Collection[str]) -> float | None:
        """The earliest ``next_attempt_at`` of queued or deferred rows of those campaigns."""
        if not campaign_ids:
            return None
        async with self._read() as conn:
            due: float | None = await conn.scalar(
                sa.select(sa.func.min(m.c.next_attempt_at)).where(
                    m.c.status.in_(DUE_STATUSES), m.c.campaign_id.in_(list(campaign_ids))
                )
            )
        return due

    @_patient()
    async def pending(self, campaign_id: str) -> int:
        """Rows not settled yet (queued, sending, deferred)."""
        async with self._read() as conn:
            n: int | None = await conn.scalar(
                sa.select(sa.func.count()).where(
                    m.c.campaign_id == campaign_id, m.c.status.in_(PENDING_STATUSES)
                )
            )
        return n or 0

    @_patient()
    async def has_pending(self, campaign_id: str) -> bool:
        """Whether any row is not settled yet (queued, sending, deferred): ``pending`` without
        the count, which walks every waiting row (10 ms for 200k) where one is enough."""
        async with self._read() as conn:
            found = await conn.scalar(
                sa.select(sa.literal(1))
                .where(m.c.campaign_id == campaign_id, m.c.status.in_(PENDING_STATUSES))
                .limit(1)
            )
        return found is not None

    # ------------------------------------------------------------ drip

    @_patient()
    async def sent_steps(
        self,
        campaign_id: str,
        edition: int,
        step: int,
        *,
        sent_before: Time,
        limit: int | None = None,
    ) -> list[tuple[str, float]]:
        """(recipient, sent_at) of ``step`` rows sent before ``sent_before`` whose step + 1 row
        does not exist yet and whose recipient is still enrolled, in id order.

        Enqueueing step + 1 removes a recipient from the answer, so a caller may take
        ``limit`` at a time until the answer is empty.
        """
        nxt, r = m.alias("nxt"), recipients_table
        q = (
            sa.select(m.c.recipient, m.c.sent_at)
            .join(
                r,
                sa.and_(r.c.campaign_id == m.c.campaign_id, r.c.key == m.c.recipient),
            )
            .where(
                m.c.campaign_id == campaign_id,
                m.c.edition == edition,
                m.c.step == step,
                m.c.status == "sent",
                r.c.removed_at.is_(None),
                ~sa.exists().where(
                    nxt.c.campaign_id == m.c.campaign_id,
                    nxt.c.edition == m.c.edition,
                    nxt.c.step == m.c.step + 1,
                    nxt.c.recipient == m.c.recipient,
                ),
            )
            .order_by(m.c.id)
        )
        before = epoch(sent_before)
        if before != float("inf"):
            q = q.where(m.c.sent_at < before)
        if limit is not None:
            q = q.limit(limit)
        async with self._read() as conn:
            rows: Sequence[Any] = (await conn.execute(q)).all()
        return [(key, at) for key, at in rows]

    @_patient()
    async def engaged(
        self, campaign_id: str, edition: int, keys: Sequence[str], kinds: Collection[str]
    ) -> set[str]:
        """Those of ``keys`` with any of ``kinds`` (opened, clicked, replied, unsubscribed,
        bounced, complained) on any message of this edition — for a step's ``unless``."""
        columns = []
        for kind in kinds:
            if kind not in EVENT_COLUMNS:
                raise ValueError(f"unless: {kind!r} is not one of {', '.join(EVENT_COLUMNS)}")
            columns.append(m.c[EVENT_COLUMNS[kind]].is_not(None))
        if not columns or not keys:
            return set()
        cond = sa.and_(m.c.campaign_id == campaign_id, m.c.edition == edition, sa.or_(*columns))
        async with self._read() as conn:
            found: set[str] = set()
            for part in _batches(keys, leases.CHUNK):
                rows = await conn.execute(
                    sa.select(m.c.recipient).distinct().where(cond, m.c.recipient.in_(part))
                )
                found.update(rows.scalars())
        return found

    # ------------------------------------------------------------ reporting

    @_patient()
    async def counts(self, campaign_id: str) -> CampaignCounts:
        async with self._read() as conn:
            return await reports.counts(conn, campaign_id)

    @_patient()
    async def messages_page(
        self,
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
        """Up to ``limit`` messages with ids above ``after`` (pass the last id for the next
        page), filtered."""
        async with self._read() as conn:
            return await reports.page(
                conn,
                campaign_id,
                status=status,
                step=step,
                template=template,
                service=service,
                recipient=recipient,
                after=after,
                limit=limit,
            )

    async def iter_messages(
        self, campaign_id: str, *, status: str | None = None, batch: int = 1000
    ) -> AsyncIterator[MessageRow]:
        """Every message of the campaign in id order, ``batch`` rows per query, each query its
        own short read: constant memory, and no snapshot held while the consumer is slow."""
        after: int | None = None
        while True:
            rows = await self.messages_page(campaign_id, status=status, after=after, limit=batch)
            for row in rows:
                yield row
            if len(rows) < batch:
                return
            after = rows[-1].id

    @_patient()
    async def story(self, campaign_id: str, address: str, *, limit: int = 1000) -> dict[str, Any]:
        """Everything the campaign holds about ``address`` (``campaignctl why``): its
        recipient rows (its own and those of invalid or duplicate rows that wrote it), every
        message of every edition and step with its events, and its suppression. JSON-ready."""
        key = normalize_key(address)
        async with self._read() as conn:
            rows = await reports.page(conn, campaign_id, recipient=address, limit=limit)
            events_ = await reports.events_of(conn, [r.id for r in rows])
            recipient = await reports.recipient_row(conn, campaign_id, key)
            suppression = (await history.suppression_rows(conn, [key])).get(key)
        by_message: dict[int, list[dict[str, Any]]] = {}
        for ev in events_:
            by_message.setdefault(ev.pop("message"), []).append({**ev, "at": iso_time(ev["at"])})
        return {
            "campaign": campaign_id,
            "address": address,
            "key": key,
            "recipient": (
                {
                    **recipient,
                    "enrolled_at": iso_time(recipient["enrolled_at"]),
                    "removed_at": iso_time(recipient["removed_at"]),
                }
                if recipient is not None
                else None
            ),
            "suppression": suppression.as_dict() if suppression is not None else None,
            "messages": [
                {**r.as_dict(), "events": by_message.get(r.id, [])}
                for r in sorted(rows, key=lambda r: (r.edition, r.step, r.id))
            ],
        }

    @_patient()
    async def get_message(self, message: int) -> MessageRow | None:
        async with self._read() as conn:
            row = (await conn.execute(reports.MESSAGE_SELECT.where(m.c.id == message))).first()
        return reports.message_row(row) if row is not None else None

    @_patient()
    async def find_by_message_id(self, message_id: str) -> MessageRow | None:
        """The message sent with this RFC 5322 Message-ID (with or without angle brackets)."""
        bare = message_id.strip().strip("<>")
        if not bare:
            return None
        q = reports.MESSAGE_SELECT.where(m.c.message_id.in_([bare, f"<{bare}>"])).order_by(m.c.id)
        async with self._read() as conn:
            row = (await conn.execute(q.limit(1))).first()
        return reports.message_row(row) if row is not None else None

    # ------------------------------------------------------------ events

    @_patient()
    async def add_event(self, ev: EventIn) -> bool:
        """Apply a piece of feedback once: False (and nothing changes) if an event with the
        same ``dedupe`` key was applied before. See ``EventIn`` for the effects."""
        async with self._tx() as conn:
            return await outcomes.apply_event(conn, ev)

    @_patient()
    async def mark_event(self, message: int, kind: str, at: Time) -> bool:
        """Set the message's ``<kind>_at`` if not set yet; True if this call set it."""
        async with self._tx() as conn:
            return await outcomes.stamp(conn, message, kind, epoch(at))

    # ------------------------------------------------------------ suppressions and history

    async def suppress(
        self,
        key: str,
        *,
        reason: str,
        source: str,
        campaign_id: str | None = None,
        at: Time | None = None,
    ) -> bool:
        """Add the address to the global suppression list; False if it was already there."""
        created = await self.import_suppressions(
            [key], reason=reason, source=source, campaign_id=campaign_id, at=at
        )
        return created > 0

    @_patient()
    async def import_suppressions(
        self,
        keys: Iterable[str],
        *,
        reason: str,
        source: str,
        campaign_id: str | None = None,
        at: Time | None = None,
        batch: int = 1000,
    ) -> int:
        """Suppress many addresses (``campaignctl suppress import``); returns how many are new."""
        t = self.clock() if at is None else epoch(at)
        created = 0
        for part in _batches(keys, batch):
            rows = [
                {
                    "key": k,
                    "reason": reason,
                    "source": source,
                    "campaign_id": campaign_id,
                    "created_at": t,
                }
                for k in dict.fromkeys(normalize_key(k) for k in part)
                if k
            ]
            if not rows:
                continue
            async with self._tx() as conn:
                stmt = insert(conn, suppressions).on_conflict_do_nothing()
                result = await conn.execute(stmt.returning(suppressions.c.key), rows)
                created += len(result.all())
        return created

    @_patient()
    async def unsuppress(self, key: str) -> bool:
        async with self._tx() as conn:
            result = await conn.execute(
                sa.delete(suppressions).where(suppressions.c.key == normalize_key(key))
            )
        return result.rowcount > 0

    @_patient()
    async def suppressed(self, keys: Sequence[str]) -> set[str]:
        """Those of ``keys`` on the suppression list (compared case-insensitively)."""
        if not keys:
            return set()
        async with self._read() as conn:
            return await history.suppressed(conn, keys)

    @_patient()
    async def suppression_rows(self, keys: Sequence[str]) -> dict[str, SuppressionRow]:
        """The suppression-list rows of those of ``keys`` on it (by normalized key)."""
        if not keys:
            return {}
        async with self._read() as conn:
            return await history.suppression_rows(conn, keys)

    @_patient()
    async def last_contacts(
        self,
        keys: Sequence[str],
        *,
        since: Time | None = None,
        campaign_ids: Collection[str] | None = None,
        exclude_campaign: str | None = None,
    ) -> dict[str, tuple[str, float]]:
        """key → (campaign, sent at) of its latest send matching the arguments."""
        if not keys:
            return {}
        async with self._read() as conn:
            return await history.last_contacts(
                conn,
                keys,
                since=since,
                campaign_ids=campaign_ids,
                exclude_campaign=exclude_campaign,
            )

    @_patient()
    async def list_suppressions(
        self, *, after: str | None = None, limit: int = 1000
    ) -> list[SuppressionRow]:
        """In key order; pass the last key as ``after`` for the next page."""
        async with self._read() as conn:
            return await history.list_suppressions(conn, after=after, limit=limit)

    @_patient()
    async def contacted_since(
        self, keys: Sequence[str], since: Time, *, exclude_campaign: str | None = None
    ) -> set[str]:
        """Those of ``keys`` any campaign (but ``exclude_campaign``) sent to at or after
        ``since``."""
        if not keys:
            return set()
        async with self._read() as conn:
            return await history.contacted_since(
                conn, keys, since, exclude_campaign=exclude_campaign
            )

    @_patient()
    async def received_campaigns(
        self, keys: Sequence[str], campaign_ids: Collection[str]
    ) -> set[str]:
        """Those of ``keys`` that were sent a message of any of ``campaign_ids``."""
        if not keys:
            return set()
        async with self._read() as conn:
            return await history.received_campaigns(conn, keys, campaign_ids)

    @_patient()
    async def history_snapshot(
        self, *, since: Time | None, campaign_ids: Collection[str] = ()
    ) -> HistorySnapshot:
        """Suppressions and past sends in memory, as the audience's synchronous ``History`` and
        ``Suppressions`` (for ``campaignctl plan``): sends since ``since`` (None: none), and
        who received any of ``campaign_ids``."""
        async with self._read() as conn:
            return await history.snapshot(conn, since=since, campaign_ids=campaign_ids)

    # ------------------------------------------------------------ limiter rebuild

    @_patient()
    async def sent_starts(self, service: str, since: Time) -> list[float]:
        """When the service sent each message since ``since``, oldest first."""
        async with self._read() as conn:
            return await history.starts(conn, m.c.service == service, epoch(since))

    @_patient()
    async def campaign_starts(self, campaign_id: str, since: Time) -> list[float]:
        async with self._read() as conn:
            return await history.starts(conn, m.c.campaign_id == campaign_id, epoch(since))

    @_patient()
    async def first_send_day(self, service: str) -> date | None:
        """The first day (in the store's day zone) the service sent anything: warm-up day 1."""
        async with self._read() as conn:
            return await history.first_send_day(conn, service)

    @_patient()
    async def sent_on_day(self, service: str, day: date) -> int:
        async with self._read() as conn:
            return await history.sent_on_day(conn, service, day)

    # ------------------------------------------------------------ limits shared (PostgreSQL)

    @property
    def shares_limits(self) -> bool:
        """Whether several daemons may send from this database (PostgreSQL), so paces, quotas
        and the warm-up cap must be taken from it rather than kept in process alone."""
        return self.dialect == "postgresql"

    async def take_paces(
        self, wants: Sequence[paces.W], decide: paces.Decide[paces.W]
    ) -> float | None:
        """One permit of every pace in ``wants`` (``delivery.limits.PaceWant``), all or none,
        now; ``decide`` is the limiter's GCRA. None if taken, else the time (this process's
        clock) to ask again. PostgreSQL only."""
        taken, at = await self.book_paces(wants, decide)
        return None if taken else at

    @_patient()
    async def book_paces(
        self, wants: Sequence[paces.W], decide: paces.Decide[paces.W], *, horizon: float = 0.0
    ) -> tuple[bool, float]:
        """One permit of every pace in ``wants``, all or none, in one short transaction at the
        database's clock; a permit due within ``horizon`` seconds is booked for then.
        (taken, at): taken — use it at ``at``; not — ask again at ``at`` (this process's
        clock). PostgreSQL only."""
        if not self.shares_limits:
            raise StoreError("shared paces need PostgreSQL; SQLite keeps them in process")
        if not wants:
            return True, self.clock()
        offset = await self._clock_offset()
        async with self.engine.begin() as conn:
            taken, at = await paces.take_now(conn, wants, decide, horizon)
        return taken, at - offset

    async def _clock_offset(self) -> float:
        """The database's clock minus ours, measured over the quickest of three round trips and
        again every CLOCK_EVERY s: a slot converted with it does not move by how long its
        transaction took to commit (which would bunch permits at the relay)."""
        now = self.clock()
        if self._offset is not None and now - self._offset_at < CLOCK_EVERY:
            return self._offset
        best: tuple[float, float] | None = None
        async with self.engine.connect() as conn:
            for _ in range(3):
                t0 = self.clock()
                db = await paces.db_clock(conn)
                t1 = self.clock()
                if best is None or t1 - t0 < best[0]:
                    best = (t1 - t0, db - (t0 + t1) / 2)
        assert best is not None
        self._offset, self._offset_at = best[1], now
        return best[1]

    @_patient()
    async def accepted_use(
        self,
        *,
        service: str | None = None,
        campaign: str | None = None,
        windows: Sequence[float] = (),
        now: Time,
        day: date | None = None,
    ) -> tuple[dict[float, tuple[int, list[float]]], int | None]:
        """Every daemon's accepted messages of a service or a campaign (``paces.accepted_use``):
        per quota window, (count, oldest times); with ``day``, the service's count that day."""
        if (service is None) == (campaign is None):
            raise ValueError("accepted_use: name a service or a campaign")
        async with self._read() as conn:
            return await paces.accepted_use(
                conn, service=service, campaign=campaign, windows=windows, now=epoch(now), day=day
            )

    # ------------------------------------------------------------ feedback (events.py, guards)

    @_patient()
    async def latest_sent_to(self, recipient: str, *, since: Time) -> MessageRow | None:
        """The newest message sent or bounced to ``recipient`` since ``since``, or None."""
        async with self._read() as conn:
            return await feedback.latest_sent_to(conn, recipient, epoch(since))

    @_patient()
    async def guard_counts(self, campaign_id: str) -> feedback.GuardCounts:
        """Sample, bounced and complained messages of the campaign, for its guard."""
        async with self._read() as conn:
            return await feedback.guard_counts(conn, campaign_id)

    @_patient()
    async def unlinked_event_counts(self) -> dict[str, int]:
        """Events naming no message, by kind: ``unmatched`` feedback, ``auto_reply``, …"""
        async with self._read() as conn:
            return await feedback.unlinked_event_counts(conn)


def _process_alive(worker: str) -> bool:
    """Whether ``host:pid`` (of this host) still runs; unparseable ids count as alive."""
    pid = worker.rpartition(":")[2]
    if not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_exclusions(items: Iterable[ExclusionIn]) -> None:
    for item in items:
        if item.status not in ENQUEUE_STATUSES - {"queued"} or item.excluded not in (
            EXCLUDED_KINDS
        ):
            raise ValueError(
                f"exclusion of {item.recipient.source}: status {item.status!r}, kind "
                f"{item.excluded!r} — use skipped/suppressed and one of {EXCLUDED_KINDS}"
            )


def _check_state(state: str) -> None:
    if state not in CAMPAIGN_STATES:
        raise ValueError(f"campaign state {state!r} is not one of {', '.join(CAMPAIGN_STATES)}")

"""Enrollment: the campaign's audience, read from its files, becomes message rows.

Reading and validating a large list is CPU work, so it runs beside the daemon (``enroll_read``:
a child process for a large list, a thread for a small one) and streams batches, already
encoded for the database, to the store on the event loop. Re-running it is harmless: the
store inserts idempotently, so ``enroll: continuous`` simply runs it again when a list changes
and only new rows get messages.
``removed_keys`` finds the enrolled recipients a list no longer names.

Every row of the lists ends in one visible state: the rows not enrolled (invalid, duplicate,
filtered, suppressed) are recorded in the same batches, each as a step-1 message that says
why (``queue.accounting``), so the summary counts them and ``campaignctl why`` explains them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import threading
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from ..config.model import Campaign, Config, Filters, as_path
from ..errors import AudienceError
from ..plan.audience import (
    AudienceReport,
    Excluded,
    NoHistory,
    NoSuppressions,
    Recipient,
    build_audience,
)
from ..plan.campaign import required_fields
from ..queue.accounting import contact_reason, exclusion_key, filter_reason, suppression_reason
from ..queue.lookup import SqliteSuppressions
from ..queue.store import (
    AudienceRow,
    EnrollTexts,
    ExclusionIn,
    MessageRow,
    RecipientIn,
    SuppressionRow,
)
from ..render.templates import choose_template
from .enroll_read import ReadJob, run, run_in_process

log = logging.getLogger("campaignd.enroll")
BATCH = 1000
"""Rows per page when reading enrolled messages back (``removed_keys``)."""
ENROLL_BATCH = 5000
"""Audience rows per store transaction: large enough that the per-batch costs (a commit, a
thread hand-off, the duplicate and suppression look-ups) vanish, small enough that a batch
holds the single SQLite writer for a few tens of milliseconds only."""
HISTORY_FILTERS = ("exclude_contacted_within", "exclude_campaigns")
PROCESS_BYTES = 4 << 20
"""Lists of this many bytes or more (about 50,000 rows) are read in a child process: starting
one costs a few tenths of a second, reading such a list in the daemon's own interpreter costs
the writer, the API and the sends that long and more."""


class EnrollStore(Protocol):
    async def enroll_batch(
        self,
        campaign_id: str,
        edition: int,
        accepted: Sequence[tuple[AudienceRow, str]] | EnrollTexts,
        excluded: Sequence[ExclusionIn] = ...,
        *,
        due: float,
    ) -> tuple[int, int]: ...
    async def suppressed(self, keys: Sequence[str]) -> set[str]: ...
    async def contacted_since(
        self, keys: Sequence[str], since: datetime, *, exclude_campaign: str | None = ...
    ) -> set[str]: ...
    async def received_campaigns(
        self, keys: Sequence[str], campaign_ids: Sequence[str]
    ) -> set[str]: ...
    async def first_sources(self, campaign_id: str, keys: Sequence[str]) -> dict[str, str]: ...
    def suppression_reader(self) -> SqliteSuppressions | None: ...
    async def suppression_rows(self, keys: Sequence[str]) -> dict[str, SuppressionRow]: ...
    async def last_contacts(
        self,
        keys: Sequence[str],
        *,
        since: datetime | None = ...,
        campaign_ids: Collection[str] | None = ...,
        exclude_campaign: str | None = ...,
    ) -> dict[str, tuple[str, float]]: ...


class EnrolledStore(Protocol):
    async def messages_page(
        self, campaign_id: str, *, step: int | None = ..., after: int | None = ..., limit: int = ...
    ) -> list[MessageRow]: ...


@dataclass
class EnrollResult:
    report: AudienceReport
    created: int
    excluded: int = 0
    """Exclusion rows recorded by this run (new ones only: a re-run records nothing again)."""


def to_row(r: Recipient) -> RecipientIn:
    return RecipientIn(
        key=r.key,
        email=r.email,
        smtp_address=r.smtp_address,
        domain=r.domain,
        fields=r.fields,  # not copied: neither side mutates it
        timezone=r.timezone,
        source=r.source,
    )


async def enroll(
    store: EnrollStore,
    config: Config,
    campaign_id: str,
    *,
    edition: int,
    now: datetime,
    due: float,
    batch_size: int = ENROLL_BATCH,
    reader: Literal["auto", "process", "thread"] = "auto",
) -> EnrollResult:
    """Enroll the campaign's current audience into step 1 of ``edition``.

    A pipeline of two stages: the reader (``enroll_read``: a child process for a list of
    ``PROCESS_BYTES`` or more, else a thread; ``reader`` forces one) reads and validates the
    lists and turns each batch of ``batch_size`` rows into store rows, while the store writes
    the previous batch (SQLite does its part with the interpreter lock released). Batches are
    written in list order, one at a time, so a duplicate's look-up of where its key came first
    sees every earlier batch.
    """
    campaign = config.campaigns[campaign_id]
    job = ReadJob(
        campaign=campaign,
        campaign_id=campaign_id,
        root=config.root,
        now=now,
        required_fields=tuple(required_fields(config, campaign, campaign_id)),
        batch_size=batch_size,
        suppressions=store.suppression_reader(),
    )
    created = excluded = 0
    writing: asyncio.Task[tuple[int, int]] | None = None
    """The batch the store is writing while the reader prepares the next one."""

    async def write(
        texts: EnrollTexts, dropped: list[Excluded], firsts: dict[str, str]
    ) -> tuple[int, int]:
        rows: list[ExclusionIn] = []
        if dropped:
            rows = await exclusion_rows(store, campaign, campaign_id, dropped, firsts, now=now)
        return await store.enroll_batch(campaign_id, edition, texts, rows, due=due)

    async def settle() -> None:
        """Wait for the batch being written; its failure stops the reader here."""
        nonlocal writing, created, excluded
        if writing is not None:
            task, writing = writing, None
            n, x = await task
            created, excluded = created + n, excluded + x

    async def answer(method: str, *args: Any) -> set[str]:
        if method == "suppressed":
            return await store.suppressed(*args)
        if method == "contacted_since":
            return await store.contacted_since(*args, exclude_campaign=campaign_id)
        if method == "received_campaigns":
            return await store.received_campaigns(*args)
        raise ValueError(f"the audience reader asked {method!r}")

    if reader == "process" or (reader == "auto" and _list_bytes(config, campaign) >= PROCESS_BYTES):
        source: _Reader = _ProcessReader(job, answer)
    else:
        source = _ThreadReader(job, answer)
    try:
        await source.start()
        while True:
            message = await source.receive()
            if message[0] == "batch":
                _, texts, dropped, firsts = message
                await settle()
                writing = asyncio.create_task(
                    write(texts, dropped, firsts), name=f"enroll-{campaign_id}"
                )
            elif message[0] == "done":
                report: AudienceReport = message[1]
                break
            else:
                raise message[1]
    finally:
        # The reader stops first (a failed write ends it at once), then the last batch (or,
        # when reading failed, the one already handed over) is written.
        await source.stop()
        await settle()
    log.info(
        "campaign %s: enrolled %d new messages (audience %d, invalid %d, duplicates %d, "
        "filtered %d, suppressed %d; %d new exclusion records)",
        campaign_id,
        created,
        report.accepted,
        report.invalid,
        report.duplicates,
        report.filtered,
        report.suppressed,
        excluded,
    )
    return EnrollResult(report=report, created=created, excluded=excluded)


def _list_bytes(config: Config, campaign: Campaign) -> int:
    """The size of the campaign's lists (a missing one counts nothing: the reader says so)."""
    total = 0
    for name in campaign.audience:
        with contextlib.suppress(OSError):
            total += as_path(config.root, name).stat().st_size
    return total


Answer = Callable[..., Coroutine[Any, Any, set[str]]]


class _Reader(Protocol):
    async def start(self) -> None: ...
    async def receive(self) -> tuple[Any, ...]: ...
    async def stop(self) -> None: ...


class _ProcessReader:
    """``enroll_read`` in a child process (spawned: the daemon has threads, so no fork),
    over a pipe. Backpressure is the pipe: the child blocks sending its next batch until the
    daemon takes it, so at most about two batches are in flight."""

    def __init__(self, job: ReadJob, answer: Answer) -> None:
        self.answer = answer
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=run_in_process,
            args=(child, job),
            name=f"campaignd-enroll-{job.campaign_id}",
            daemon=True,
        )
        self._child = child
        self.finished = False
        """The child sent its last message and is exiting by itself."""

    async def start(self) -> None:
        await asyncio.to_thread(self.process.start)
        self._child.close()  # the child's end lives in the child only: its exit is our EOF

    async def receive(self) -> tuple[Any, ...]:
        while True:
            try:
                message: tuple[Any, ...] = await asyncio.to_thread(self.conn.recv)
            except EOFError:
                raise AudienceError(
                    f"the audience reader process stopped unexpectedly "
                    f"(exit code {self.process.exitcode})"
                ) from None
            if message[0] != "ask":
                self.finished = message[0] in ("done", "failed")
                return message
            self.conn.send(await self.answer(*message[1:]))

    async def stop(self) -> None:
        # Done: it exits by itself; failed or cancelled: it is killed (it commits nothing).
        process = self.process
        if process.pid is None:
            return
        if self.finished and process.is_alive():
            await asyncio.to_thread(process.join, 1.0)
        if process.is_alive():
            process.kill()
            await asyncio.shield(asyncio.to_thread(process.join))
        self.conn.close()


class _ThreadReader:
    """``enroll_read`` in a thread of the daemon: a queue of one batch in place of the pipe,
    questions answered on the loop."""

    def __init__(self, job: ReadJob, answer: Answer) -> None:
        self.job = job
        self.answer = answer
        self.queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue(maxsize=1)
        self.stopping = threading.Event()
        self.thread: asyncio.Future[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        stopping, queue, answer = self.stopping, self.queue, self.answer

        class Bridge:
            def send(self, message: tuple[Any, ...]) -> None:
                if stopping.is_set():
                    raise _Stopped
                asyncio.run_coroutine_threadsafe(queue.put(message), loop).result()

            def ask(self, method: str, *args: Any) -> set[str]:
                if stopping.is_set():
                    raise _Stopped
                return asyncio.run_coroutine_threadsafe(answer(method, *args), loop).result()

        self.thread = asyncio.ensure_future(asyncio.to_thread(run, Bridge(), self.job))

    async def receive(self) -> tuple[Any, ...]:
        return await self.queue.get()

    async def stop(self) -> None:
        self.stopping.set()
        # A send waiting for room is let through; the next one raises ``_Stopped``.
        while not self.queue.empty():
            self.queue.get_nowait()
        if self.thread is not None:
            # Its outcome was sent as a message (or no longer matters): only its end is awaited.
            await asyncio.wait([self.thread])
            if not self.thread.cancelled():
                self.thread.exception()


class _Stopped(Exception):
    """Enrollment stopped early: the reader thread ends at its next hand-over."""


async def exclusion_rows(
    store: EnrollStore,
    campaign: Campaign,
    campaign_id: str,
    dropped: Sequence[Excluded],
    firsts: Mapping[str, str],
    *,
    now: datetime,
) -> list[ExclusionIn]:
    """The records of a batch's excluded rows, each with the details an operator asks for:
    the suppression's reason and source, which campaign contacted them when, which row a
    duplicate repeats (``firsts``: the duplicates' first rows found in the same batch; the
    others are looked up). The details are looked up for the excluded keys only."""
    keys = {kind: [x.key for x in dropped if x.key and _detail(x) == kind] for kind in _DETAILS}
    suppressions = await store.suppression_rows(keys["suppressed"]) if keys["suppressed"] else {}
    contacts: dict[str, dict[str, tuple[str, float]]] = {}
    filters = campaign.filters
    if keys["exclude_contacted_within"] and filters.exclude_contacted_within is not None:
        contacts["exclude_contacted_within"] = await store.last_contacts(
            keys["exclude_contacted_within"],
            since=now - filters.exclude_contacted_within,
            exclude_campaign=campaign_id,
        )
    if keys["exclude_campaigns"]:
        contacts["exclude_campaigns"] = await store.last_contacts(
            keys["exclude_campaigns"], campaign_ids=list(filters.exclude_campaigns)
        )
    # A duplicate repeats the row its key was first read from: in this batch, or stored.
    first = dict(firsts)
    missing = [k for k in keys["duplicate"] if k not in first]
    if missing:
        first.update(await store.first_sources(campaign_id, missing))
    template = campaign.steps[0].template
    out = []
    for x in dropped:
        if x.kind in ("invalid", "duplicate"):
            key = exclusion_key(x.key or x.address, x.source)
            row = RecipientIn(
                key=key, email=x.address, smtp_address="", domain="", fields={}, source=x.source
            )
            if x.kind == "invalid":
                reason = f"invalid address: {x.reason}"
            else:
                where = first.get(x.key or "")
                reason = f"duplicate of {where}" if where else "duplicate of an earlier row"
        else:
            assert x.recipient is not None and x.key is not None
            key, row = x.key, to_row(x.recipient)
            if x.kind == "suppressed":
                reason = suppression_reason(suppressions.get(x.key))
            elif x.reason in HISTORY_FILTERS:
                reason = contact_reason(x.reason, contacts.get(x.reason, {}).get(x.key))
            else:
                reason = filter_reason(x.reason)
        status = "suppressed" if x.kind == "suppressed" else "skipped"
        out.append(
            ExclusionIn(
                recipient=row,
                template=choose_template(campaign_id, key, template),
                status=status,
                excluded=x.kind,
                reason=reason,
            )
        )
    return out


_DETAILS = ("suppressed", "duplicate", *HISTORY_FILTERS)


def _detail(x: Excluded) -> str:
    """Which look-up the exclusion's detail needs (see ``_DETAILS``), if any."""
    return x.reason if x.kind == "filtered" else x.kind


async def listed_keys(config: Config, campaign_id: str, *, now: datetime) -> set[str]:
    """Every valid address the campaign's lists name now, before filters and suppressions.

    "Removed from the list" is measured against this, so a recipient who is merely suppressed
    or filtered now is not mistaken for one the operator deleted.
    """
    campaign = config.campaigns[campaign_id].model_copy(update={"filters": Filters()})

    def work() -> set[str]:
        audience = build_audience(
            campaign, config.root, history=NoHistory(), suppressions=NoSuppressions(), now=now
        )
        return {r.key for r in audience}

    return await asyncio.to_thread(work)


async def removed_keys(
    store: EnrolledStore, campaign_id: str, edition: int, listed: set[str]
) -> set[str]:
    """Recipients enrolled into ``edition`` (they have a step-1 message) whom no list names now."""
    removed: set[str] = set()
    after: int | None = None
    while True:
        rows = await store.messages_page(campaign_id, step=1, after=after, limit=BATCH)
        removed.update(
            r.recipient
            for r in rows
            # invalid and duplicate rows are kept under exclusion keys, never listed as such
            if r.edition == edition
            and r.recipient not in listed
            and r.excluded not in ("invalid", "duplicate")
        )
        if len(rows) < BATCH:
            return removed
        after = rows[-1].id

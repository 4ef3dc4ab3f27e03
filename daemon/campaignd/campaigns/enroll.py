"""Enrollment: the campaign's audience, read from its files, becomes message rows.

Reading and validating a large list is CPU work, so it runs in a thread and streams batches
to the store on the event loop. Re-running it is harmless: the store inserts idempotently, so
``enroll: continuous`` simply runs it again when a list changes and only new rows get messages.
``removed_keys`` finds the enrolled recipients a list no longer names.

Every row of the lists ends in one visible state: the rows not enrolled (invalid, duplicate,
filtered, suppressed) are recorded in the same batches, each as a step-1 message that says
why (``queue.accounting``), so the summary counts them and ``campaignctl why`` explains them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..config.model import Campaign, Config, Filters
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
from ..queue.lookup import SqliteSuppressions, SyncHistory
from ..queue.store import AudienceRow, ExclusionIn, MessageRow, RecipientIn, SuppressionRow
from ..render.templates import choose_template

log = logging.getLogger("campaignd.enroll")
BATCH = 1000
"""Rows per page when reading enrolled messages back (``removed_keys``)."""
ENROLL_BATCH = 5000
"""Audience rows per store transaction: large enough that the per-batch costs (a commit, a
thread hand-off, the duplicate and suppression look-ups) vanish, small enough that a batch
holds the single SQLite writer for a few tens of milliseconds only."""
HISTORY_FILTERS = ("exclude_contacted_within", "exclude_campaigns")


class EnrollStore(Protocol):
    async def enroll_batch(
        self,
        campaign_id: str,
        edition: int,
        accepted: Sequence[tuple[AudienceRow, str]],
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
) -> EnrollResult:
    """Enroll the campaign's current audience into step 1 of ``edition``.

    A pipeline of two stages: a thread reads and validates the lists and turns each batch of
    ``batch_size`` rows into store rows, while the store writes the previous batch (SQLite
    does its part with the interpreter lock released). Batches are written in list order, one
    at a time, so a duplicate's look-up of where its key came first sees every earlier batch.
    """
    campaign = config.campaigns[campaign_id]
    loop = asyncio.get_running_loop()
    bridge = SyncHistory(store, loop, campaign_id, source="the daemon's store")
    first = campaign.steps[0].template
    created = excluded = 0
    writing: asyncio.Task[tuple[int, int]] | None = None
    """The batch the store is writing while the reader prepares the next one."""

    async def write(
        accepted: list[tuple[AudienceRow, str]], batch: list[Recipient | Excluded]
    ) -> tuple[int, int]:
        rows: list[ExclusionIn] = []
        if len(accepted) < len(batch):
            rows = await exclusion_rows(store, campaign, campaign_id, batch, now=now)
        return await store.enroll_batch(campaign_id, edition, accepted, rows, due=due)

    async def settle() -> None:
        """Wait for the batch being written; its failure stops the reader here."""
        nonlocal writing, created, excluded
        if writing is not None:
            task, writing = writing, None
            n, x = await task
            created, excluded = created + n, excluded + x

    async def hand_over(
        accepted: list[tuple[AudienceRow, str]], batch: list[Recipient | Excluded]
    ) -> None:
        nonlocal writing
        await settle()
        writing = asyncio.create_task(write(accepted, batch), name=f"enroll-{campaign_id}")

    def read() -> AudienceReport:
        bridge.direct = store.suppression_reader()
        try:
            return read_batches()
        finally:
            if bridge.direct is not None:
                bridge.direct.close()

    def read_batches() -> AudienceReport:
        audience = build_audience(
            campaign,
            config.root,
            history=bridge,
            suppressions=bridge,
            now=now,
            required_fields=required_fields(config, campaign, campaign_id),
        )
        batch: list[Recipient | Excluded] = []
        accepted: list[tuple[AudienceRow, str]] = []
        for row in audience.rows():
            batch.append(row)
            if isinstance(row, Recipient):
                accepted.append((row, choose_template(campaign_id, row.key, first)))
            if len(batch) >= batch_size:
                bridge.call(hand_over(accepted, batch))
                batch, accepted = [], []
        if batch:
            bridge.call(hand_over(accepted, batch))
        return audience.report

    try:
        report = await asyncio.to_thread(read)
    finally:
        # The last batch (or, when reading failed, the one already handed over) is written.
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


async def exclusion_rows(
    store: EnrollStore,
    campaign: Campaign,
    campaign_id: str,
    batch: Sequence[Recipient | Excluded],
    *,
    now: datetime,
) -> list[ExclusionIn]:
    """The records of a batch's excluded rows, each with the details an operator asks for:
    the suppression's reason and source, which campaign contacted them when, which row a
    duplicate repeats. The details are looked up for the excluded keys only."""
    dropped = [x for x in batch if isinstance(x, Excluded)]
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
    first: dict[str, str] = {}
    for item in batch:
        key = item.key
        if key and key not in first and (isinstance(item, Recipient) or item.recipient):
            first[key] = item.source
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

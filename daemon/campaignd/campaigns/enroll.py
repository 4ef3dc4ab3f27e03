"""Enrollment: the campaign's audience, read from its files, becomes message rows.

Reading and validating a large list is CPU work, so it runs in a thread and streams batches
to the store on the event loop. Re-running it is harmless: the store inserts idempotently, so
``enroll: continuous`` simply runs it again when a list changes and only new rows get messages.
``removed_keys`` finds the enrolled recipients a list no longer names.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ..config.model import Config, Filters
from ..plan.audience import AudienceReport, NoHistory, NoSuppressions, Recipient, build_audience
from ..plan.campaign import required_fields
from ..queue.store import MessageRow, RecipientIn
from ..render.templates import choose_template

log = logging.getLogger("campaignd.enroll")
T = TypeVar("T")
BATCH = 1000


class EnrollStore(Protocol):
    async def add_recipients(
        self, campaign_id: str, recipients: Sequence[RecipientIn], *, batch: int = ...
    ) -> int: ...
    async def enqueue(
        self,
        campaign_id: str,
        edition: int,
        step: int,
        items: Sequence[tuple[str, str]],
        *,
        due: float,
        batch: int = ...,
    ) -> int: ...
    async def suppressed(self, keys: Sequence[str]) -> set[str]: ...
    async def contacted_since(
        self, keys: Sequence[str], since: datetime, *, exclude_campaign: str | None = ...
    ) -> set[str]: ...
    async def received_campaigns(
        self, keys: Sequence[str], campaign_ids: Sequence[str]
    ) -> set[str]: ...


class EnrolledStore(Protocol):
    async def messages_page(
        self, campaign_id: str, *, step: int | None = ..., after: int | None = ..., limit: int = ...
    ) -> list[MessageRow]: ...


class _Bridge:
    """Sync History/Suppressions for the audience reader, answered by the async store."""

    def __init__(self, store: EnrollStore, loop: asyncio.AbstractEventLoop, campaign_id: str):
        self.store = store
        self.loop = loop
        self.campaign_id = campaign_id

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def suppressed(self, keys: Sequence[str]) -> set[str]:
        return self.call(self.store.suppressed(keys))

    def contacted_since(self, keys: Sequence[str], since: datetime) -> set[str]:
        return self.call(self.store.contacted_since(keys, since, exclude_campaign=self.campaign_id))

    def received_campaigns(self, keys: Sequence[str], campaign_ids: Sequence[str]) -> set[str]:
        return self.call(self.store.received_campaigns(keys, campaign_ids))


@dataclass
class EnrollResult:
    report: AudienceReport
    created: int


def to_row(r: Recipient) -> RecipientIn:
    return RecipientIn(
        key=r.key,
        email=r.email,
        smtp_address=r.smtp_address,
        domain=r.domain,
        fields=dict(r.fields),
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
) -> EnrollResult:
    """Enroll the campaign's current audience into step 1 of ``edition``."""
    campaign = config.campaigns[campaign_id]
    loop = asyncio.get_running_loop()
    bridge = _Bridge(store, loop, campaign_id)
    first = campaign.steps[0].template
    created = 0

    async def flush(batch: list[Recipient]) -> int:
        await store.add_recipients(campaign_id, [to_row(r) for r in batch])
        items = [(r.key, choose_template(campaign_id, r.key, first)) for r in batch]
        return await store.enqueue(campaign_id, edition, 1, items, due=due)

    def work() -> AudienceReport:
        nonlocal created
        audience = build_audience(
            campaign,
            config.root,
            history=bridge,
            suppressions=bridge,
            now=now,
            required_fields=required_fields(config, campaign, campaign_id),
        )
        batch: list[Recipient] = []
        for recipient in audience:
            batch.append(recipient)
            if len(batch) >= BATCH:
                created += bridge.call(flush(batch))
                batch = []
        if batch:
            created += bridge.call(flush(batch))
        return audience.report

    report = await asyncio.to_thread(work)
    log.info(
        "campaign %s: enrolled %d new messages (audience %d, invalid %d, duplicates %d, "
        "filtered %d, suppressed %d)",
        campaign_id,
        created,
        report.accepted,
        report.invalid,
        report.duplicates,
        report.filtered,
        report.suppressed,
    )
    return EnrollResult(report=report, created=created)


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
            r.recipient for r in rows if r.edition == edition and r.recipient not in listed
        )
        if len(rows) < BATCH:
            return removed
        after = rows[-1].id

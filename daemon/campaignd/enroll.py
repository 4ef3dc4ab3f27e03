"""Enrollment: the campaign's audience, read from its files, becomes message rows.

Reading and validating a large list is CPU work, so it runs in a thread and streams batches
to the store on the event loop. Re-running it is harmless: the store inserts idempotently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from .config.model import Config
from .plan.audience import AudienceReport, Recipient, build_audience
from .planning import required_fields
from .queue.store import RecipientIn
from .render import choose_template

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
            required_fields=required_fields(config, campaign),
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

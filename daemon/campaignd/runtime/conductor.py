"""Campaign lifecycle: start campaigns whose time has come, create drip steps as they fall
due, and notice when a campaign is waiting or complete. The database holds every state; this
module only moves campaigns between states and tells the dispatcher which ones may send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from ..config.model import Campaign, Config
from ..enroll import enroll
from ..queue.store import Store
from ..render import choose_template

log = logging.getLogger("campaignd.campaigns")

FINAL = {"stopped", "completed", "failed"}
RUNNING = {"sending", "waiting"}


class Conductor:
    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        on_active: Callable[[set[str]], None],
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.config = config
        self.on_active = on_active
        self.clock = clock
        self._enrolling: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self.enroll_errors: dict[str, str] = {}

    def update(self, config: Config) -> None:
        self.config = config

    async def close(self) -> None:
        for task in self._enrolling.values():
            task.cancel()
        for task in list(self._enrolling.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):  # shutting down
                await task

    async def tick(self) -> None:
        """One pass over every campaign; cheap enough to run every few seconds."""
        async with self._lock:
            now = self.clock()
            active: set[str] = set()
            known = set()
            for cid, campaign in self.config.campaigns.items():
                known.add(cid)
                state = await self._advance(cid, campaign, now)
                if state == "sending":
                    active.add(cid)
            for row in await self.store.list_campaigns():
                if row.id not in known and row.state not in FINAL | {"paused"}:
                    await self.store.set_campaign_state(
                        row.id,
                        "paused",
                        f"file removed: campaigns.d/{row.id}.yaml is gone (records kept)",
                    )
                    log.info("campaign %s paused: its file was removed", row.id)
            self.on_active(active)

    async def _advance(self, cid: str, campaign: Campaign, now: float) -> str:
        initial = "paused" if campaign.paused else "scheduled"
        row = await self.store.ensure_campaign(cid, state=initial)
        state = row.state
        if state in FINAL or state == "paused":
            if state == "paused" and row.reason and row.reason.startswith("file removed"):
                # The file is back: carry on where it stopped.
                row = await self.store.set_campaign_state(cid, "sending", None)
                state = row.state
            else:
                return state
        start = campaign.start.timestamp() if campaign.start else now
        if state == "scheduled":
            if start > now:
                return state
            row = await self.store.set_campaign_state(cid, "sending", None)
            state = row.state
            log.info("campaign %s started", cid)
        if not await self.store.has_edition(cid, 0):
            self._start_enrollment(cid, due=max(start, now))
            return state
        if cid in self._enrolling:
            return state
        created = await self._drip(cid, campaign, now)
        pending = await self.store.pending(cid)
        if pending or created:
            if state != "sending":
                await self.store.set_campaign_state(cid, "sending", None)
            return "sending"
        if await self._future_steps(cid, campaign):
            if state != "waiting":
                await self.store.set_campaign_state(cid, "waiting", None)
                log.info("campaign %s waiting for its next drip steps", cid)
            return "waiting"
        await self.store.set_campaign_state(cid, "completed", None)
        log.info("campaign %s completed", cid)
        return "completed"

    def _start_enrollment(self, cid: str, *, due: float) -> None:
        if cid in self._enrolling:
            return

        async def run() -> None:
            try:
                await enroll(
                    self.store,
                    self.config,
                    cid,
                    edition=0,
                    now=datetime.fromtimestamp(self.clock(), UTC),
                    due=due,
                )
                await self.store.ensure_edition(cid, 0, fired_at=self.clock())
                self.enroll_errors.pop(cid, None)
            except Exception as exc:
                # The audience could not be read (file gone, not UTF-8, …): the campaign waits
                # and says why; the next tick tries again once the file is fixed.
                self.enroll_errors[cid] = str(exc)
                log.error("campaign %s: enrollment failed: %s", cid, exc)
            finally:
                self._enrolling.pop(cid, None)

        self._enrolling[cid] = asyncio.create_task(run(), name=f"enroll-{cid}")

    async def _drip(self, cid: str, campaign: Campaign, now: float) -> int:
        """Create rows for drip steps that have fallen due for some recipients."""
        created = 0
        for n in range(1, len(campaign.steps)):
            step = campaign.steps[n]
            assert step.after is not None  # check.py guarantees it
            after = step.after.total_seconds()
            due = await self.store.sent_steps(cid, 0, n, sent_before=now - after)
            if not due:
                continue
            items = [(key, choose_template(cid, key, step.template)) for key, _ in due]
            created += await self.store.enqueue(cid, 0, n + 1, items, due=now)
        return created

    async def _future_steps(self, cid: str, campaign: Campaign) -> bool:
        """Will any recipient still get a later step (a sent step n without its n+1 row)?"""
        for n in range(1, len(campaign.steps)):
            if await self.store.sent_steps(cid, 0, n, sent_before=float("inf"), limit=1):
                return True
        return False

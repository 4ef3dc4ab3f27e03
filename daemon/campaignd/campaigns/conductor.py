"""Campaign lifecycle: start campaigns whose time has come, fire the editions of recurring ones,
create drip steps as they fall due, follow continuous audiences, and notice when a campaign is
waiting or complete. The database holds every state; this module only moves campaigns between
states, tells the dispatcher which ones may send and tells the clock when to look again.

What it keeps in memory is derived and rebuilt after a start: running enrollments, the audience
files' stamps as last read, editions known to be finished, the last catch-up (for the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from ..config.load import FileStamp, file_stamps
from ..config.model import Campaign, Config
from ..delivery.conditions import Conditions
from ..plan.due import Previous, due
from ..plan.windows import in_window, next_window_open
from ..queue.store import CampaignRow, Store
from ..render.templates import choose_template
from .enroll import enroll, listed_keys, removed_keys

log = logging.getLogger("campaignd.campaigns")

FINAL = {"stopped", "completed", "failed"}
BATCH = 1000
ENROLL_RETRY = 30.0
QUIET_MAX = 300.0
"""A campaign that is not sending (waiting, scheduled, paused, finished) is not read again
until its next due time, an event (``invalidate``: an API call, a reload, an alarm, a changed
list), or this long at most — a fallback for changes made by another daemon sharing the
database. So a hundred idle campaigns cost one query per pass, not a hundred."""
"""Seconds before a failed enrollment (unreadable list) is tried again."""
FILE_REMOVED = "file removed"
FILE_BROKEN = "file has errors"
# Pauses the conductor itself made because of the file; they end when the file is back.
AUTO_PAUSES = (FILE_REMOVED, FILE_BROKEN)


def paused_in_file(cid: str) -> str:
    return f"paused: true in campaigns.d/{cid}.yaml"


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _dt(ts: float | None) -> datetime | None:
    return _utc(ts) if ts is not None else None


def _iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts is not None else None


def _earliest(*times: float | None) -> float | None:
    known = [t for t in times if t is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class CatchUp:
    """An edition sent late for firings the daemon was not running at."""

    edition: int
    fired_at: float
    missed: int
    at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "edition": self.edition,
            "for": _iso(self.fired_at),
            "missed": self.missed,
            "at": _iso(self.at),
        }


@dataclass(frozen=True)
class Pass:
    """One campaign after one conductor pass."""

    state: str
    active: bool = False
    """The dispatcher may claim its messages."""
    wake: float | None = None
    """When something falls due next: the start, a firing or a drip step."""


class Conductor:
    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        on_active: Callable[[set[str]], None],
        clock: Callable[[], float],
        on_wakes: Callable[[Mapping[str, float | None]], None] | None = None,
        poke: Callable[[], None] | None = None,
        conditions: Conditions | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.on_active = on_active
        self.clock = clock
        self.on_wakes = on_wakes
        self.poke = poke
        self.conditions = conditions if conditions is not None else Conditions()
        self.broken: set[str] = set()
        self._enrolling: dict[str, asyncio.Task[None]] = {}
        self._retry_at: dict[str, float] = {}
        self._lock = asyncio.Lock()
        self.enroll_errors: dict[str, str] = {}
        self._audience: dict[str, dict[str, FileStamp]] = {}
        self._done: dict[str, set[int]] = {}
        self.catch_ups: dict[str, CatchUp] = {}
        self.wakes: dict[str, float | None] = {}
        self.next_edition: dict[str, float | None] = {}
        self.next_step: dict[str, float | None] = {}
        self._quiet: dict[str, tuple[float, Pass]] = {}  # cid → (look again at, last pass)
        self._orphans_at = -math.inf  # when campaigns without a file were last looked for

    # ------------------------------------------------------------ config

    async def update(self, config: Config, broken: Collection[str] = ()) -> None:
        """A reload: apply what changed in the campaign files to the campaigns in flight."""
        async with self._lock:
            old, self.config = self.config, config
            self.broken = set(broken)
            self._quiet.clear()
            self._orphans_at = -math.inf
            now = self.clock()
            for cid, campaign in config.campaigns.items():
                prev = old.campaigns.get(cid)
                if prev is None:
                    continue
                if len(campaign.steps) > len(prev.steps):
                    await self._finished_before(cid, campaign, len(prev.steps), now)
                if campaign.steps != prev.steps:
                    self._done.pop(cid, None)
                if (campaign.audience, campaign.filters) != (prev.audience, prev.filters):
                    self._audience.pop(cid, None)  # read the lists again
                if campaign.window != prev.window:
                    # Parked for the old window's next opening: let the new window decide.
                    woken = await self.store.wake_parked(cid, now=now)
                    if woken:
                        log.info("campaign %s: window changed, %d waiting messages due", cid, woken)

    async def _finished_before(self, cid: str, campaign: Campaign, k: int, now: float) -> None:
        """Steps were appended after step ``k``. Recipients whose step ``k`` went out longer
        ago than the new step's ``after`` had finished the sequence: they are marked skipped
        for it, so the new step reaches the recipients still in the sequence — not, at once,
        everyone who completed it weeks ago."""
        row = await self.store.get_campaign(cid)
        if row is None or row.state in FINAL:
            return
        step = campaign.steps[k]
        assert step.after is not None  # check.py guarantees it
        reason = f"had finished the sequence before step {k + 1} was added"
        marked = 0
        for edition in self._editions(campaign, row, include_done=True):
            while due := await self.store.sent_steps(
                cid, edition, k, sent_before=now - step.after.total_seconds(), limit=BATCH
            ):
                items = [(key, choose_template(cid, key, step.template)) for key, _ in due]
                marked += await self.store.enqueue(
                    cid, edition, k + 1, items, due=now, status="skipped", reason=reason
                )
        log.info(
            "campaign %s: step %d added; %d recipients had already finished and skip it",
            cid,
            k + 1,
            marked,
        )

    async def settle(self) -> None:
        """Wait for the enrollments running now (tests; a pass started after sees them done)."""
        while self._enrolling:
            await asyncio.gather(*self._enrolling.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in self._enrolling.values():
            task.cancel()
        for task in list(self._enrolling.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):  # shutting down
                await task

    # ------------------------------------------------------------ the pass

    def invalidate(self, campaign_id: str | None = None) -> None:
        """Something may have changed a campaign that is not sending: look at it (all of them
        without ``campaign_id``) again at the next pass."""
        if campaign_id is not None:
            self._quiet.pop(campaign_id, None)
            return
        self._quiet.clear()
        self._orphans_at = -math.inf

    @property
    def enrolling(self) -> frozenset[str]:
        """Campaigns whose audience is being read now: their rows appear as they are written."""
        return frozenset(self._enrolling)

    def audience_changed(self) -> bool:
        """An audience file may have changed (a file event or the watcher's rescan): the
        campaigns that follow their lists (continuous ones, and those whose enrollment failed)
        and whose lists' stamps differ from the last read are looked at again; the others'
        rows were made from the lists already. True if any was: a pass is worth making."""
        changed = False
        for cid, campaign in self.config.campaigns.items():
            follows = campaign.enroll == "continuous" and campaign.schedule is None
            if not follows and cid not in self.enroll_errors:
                continue
            paths = [self.config.path(a) for a in campaign.audience]
            if cid in self.enroll_errors or self._audience.get(cid) != file_stamps(paths):
                self._quiet.pop(cid, None)
                changed = True
        return changed

    async def tick(self) -> None:
        """One pass over every campaign; cheap enough to run every few seconds."""
        async with self._lock:
            now = self.clock()
            active: set[str] = set()
            wakes: dict[str, float | None] = {}
            for cid, campaign in self.config.campaigns.items():
                quiet = self._quiet.get(cid)
                if quiet is not None and now < quiet[0]:
                    result = quiet[1]
                else:
                    result = await self._advance(cid, campaign, now)
                    self._note_quiet(cid, result, now)
                if result.active and result.state == "sending":
                    active.add(cid)
                # A failed enrollment is tried again at its retry time: the clock rings for it.
                retry = self._retry_at.get(cid)
                wakes[cid] = _earliest(result.wake, retry if retry and retry > now else None)
            if now - self._orphans_at >= QUIET_MAX:
                # Rows without a file only appear through a reload (which invalidates) or
                # another daemon: no need to list every campaign on every pass.
                self._orphans_at = now
                for row in await self.store.list_campaigns():
                    if row.id not in self.config.campaigns and row.state not in FINAL | {"paused"}:
                        await self._file_gone(row)
            self.wakes = wakes
            self.on_active(active)
            if self.on_wakes is not None:
                self.on_wakes(wakes)

    def _note_quiet(self, cid: str, result: Pass, now: float) -> None:
        if result.active or cid in self._enrolling:
            self._quiet.pop(cid, None)
            return
        until = now + QUIET_MAX
        if result.wake is not None:
            until = min(until, result.wake)
        self._quiet[cid] = (until, result)

    async def _file_gone(self, row: CampaignRow) -> None:
        if row.id in self.broken:
            # A file broken since the start has no good version to run: hold the campaign
            # until it is fixed (a file broken later keeps its last good version instead).
            reason = f"{FILE_BROKEN}: campaigns.d/{row.id}.yaml (see load_errors)"
        else:
            reason = f"{FILE_REMOVED}: campaigns.d/{row.id}.yaml is gone (records kept)"
        await self.store.set_campaign_state(row.id, "paused", reason)
        log.warning("campaign %s paused: %s", row.id, reason)

    async def _follow_file(self, cid: str, campaign: Campaign, row: CampaignRow) -> CampaignRow:
        """The file's ``paused:`` and its presence decide pauses the file caused."""
        reason = row.reason or ""
        mine = paused_in_file(cid)
        resume_to = "sending" if row.started_at is not None else "scheduled"
        if row.state == "paused" and reason.startswith(AUTO_PAUSES):
            log.info("campaign %s: its file is back, carrying on", cid)
            row = await self.store.set_campaign_state(cid, resume_to, None)
        if campaign.paused and row.state in ("scheduled", "sending", "waiting"):
            log.info("campaign %s paused: %s", cid, mine)
            return await self.store.set_campaign_state(cid, "paused", mine)
        if campaign.paused and row.state == "paused" and row.reason is None:
            return await self.store.set_campaign_state(cid, "paused", mine)  # created paused
        if not campaign.paused and row.state == "paused" and reason == mine:
            log.info("campaign %s resumed: paused: false in its file", cid)
            return await self.store.set_campaign_state(cid, resume_to, None)
        return row

    async def _set(self, cid: str, state: str, why: str | None = None) -> str:
        row = await self.store.set_campaign_state(cid, state, None)
        if row.state == state and why:
            log.info("campaign %s %s: %s", cid, state, why)
        return row.state

    async def _advance(self, cid: str, campaign: Campaign, now: float) -> Pass:
        initial = "paused" if campaign.paused else "scheduled"
        row = await self.store.ensure_campaign(cid, state=initial)
        row = await self._follow_file(cid, campaign, row)
        state = row.state
        if state in FINAL or state == "paused":
            return Pass(state)
        zone = ZoneInfo(self.config.settings.timezone)
        previous = Previous(_utc(row.created_at), _dt(row.last_fired_at))
        d = due(campaign, previous, _utc(now), zone)
        wake = d.wake_at.timestamp() if d.wake_at is not None else None
        self.next_edition[cid] = wake if campaign.schedule is not None else None
        if not d.started:
            if state != "scheduled":  # start: was moved into the future
                state = await self._set(cid, "scheduled", f"start moved to {_iso(wake)}")
            return Pass(state, wake=wake)

        enrolling = cid in self._enrolling
        continuous = campaign.enroll == "continuous" and campaign.schedule is None
        if campaign.schedule is None:
            if state == "scheduled":
                state = await self._set(cid, "sending", "started")
            if not await self.store.has_edition(cid, 0):
                self._enroll(cid, 0, fired_at=now, now=now)
                # Rows stream in while a large list is read: they are sent as they come.
                return Pass(state, active=True, wake=wake)
            if continuous and not enrolling:
                paths = [self.config.path(a) for a in campaign.audience]
                if self._audience.get(cid) != file_stamps(paths):
                    self._enroll(cid, 0, fired_at=now, now=now)
            if continuous and (cid not in self._audience or cid in self._enrolling):
                # The lists changed (or were not read since the start): hold the campaign
                # until we know who was removed, so no removed row slips out meanwhile.
                return Pass(state, wake=wake)
        else:
            if d.edition is not None and not enrolling and now >= self._retry_at.get(cid, 0):
                edition = (row.last_edition or 0) + 1
                at = d.edition.fired_at.timestamp()
                if d.edition.caught_up:
                    self.catch_ups[cid] = CatchUp(edition, at, d.edition.missed, now)
                    log.warning(
                        "campaign %s: edition %d for %s is sent late (%d more firings were "
                        "missed while the daemon was not running; one edition catches up)",
                        cid,
                        edition,
                        _iso(at),
                        d.edition.missed,
                    )
                else:
                    log.info("campaign %s: edition %d fired", cid, edition)
                self._enroll(cid, edition, fired_at=at, caught_up=d.edition.caught_up, now=now)
                if state != "sending":
                    state = await self._set(cid, "sending")
                return Pass(state, active=True, wake=wake)
            if not row.last_edition:
                # Before its first firing a recurring campaign is scheduled, not sending.
                return Pass(state, active=enrolling, wake=wake)

        editions = self._editions(campaign, row, include_done=False)
        created = 0
        for edition in editions:
            created += await self._drip(cid, campaign, edition, now)
        pending = await self.store.has_pending(cid)
        next_step = await self._next_step(cid, campaign, editions, settled=not pending)
        self.next_step[cid] = next_step
        wake = _earliest(wake, next_step)
        if pending or created or cid in self._enrolling:
            if state != "sending":
                state = await self._set(cid, "sending")
            return Pass(state, active=True, wake=wake)
        if next_step is not None:
            why = f"next drip step due {_iso(next_step)}"
        elif continuous:
            why = "enroll: continuous — new rows in the lists are sent when they appear"
        elif campaign.schedule is not None and wake is not None:
            why = f"next edition {_iso(wake)}"
        else:
            if state != "completed":
                # Only in the transaction that proves nothing is pending: a retry racing this
                # pass either lands first (the campaign stays open) or re-opens it.
                row = await self.store.complete(cid)
                if row.state != "completed":
                    return Pass(row.state, active=row.state == "sending")
                log.info("campaign %s completed: no step can follow", cid)
            return Pass("completed")
        if state != "waiting":
            state = await self._set(cid, "waiting", why)
        return Pass(state, wake=wake)

    def _editions(self, campaign: Campaign, row: CampaignRow, *, include_done: bool) -> list[int]:
        if campaign.schedule is None:
            return [0]
        done = set() if include_done else self._done.get(row.id, set())
        return [e for e in range(1, (row.last_edition or 0) + 1) if e not in done]

    # ------------------------------------------------------------ enrollment

    def _enroll(
        self, cid: str, edition: int, *, fired_at: float, now: float, caught_up: bool = False
    ) -> None:
        """Read the audience in the background into ``edition`` (again, for a continuous one)."""
        if cid in self._enrolling or now < self._retry_at.get(cid, 0):
            return
        campaign = self.config.campaigns[cid]
        paths = [self.config.path(a) for a in campaign.audience]
        stamps = file_stamps(paths)  # before reading: a change while we read is seen next pass

        async def run() -> None:
            try:
                at = self.clock()
                config = self.config
                await enroll(self.store, config, cid, edition=edition, now=_utc(at), due=at)
                await self.store.ensure_edition(
                    cid, edition, fired_at=fired_at, caught_up=caught_up
                )
                if campaign.enroll == "continuous" and campaign.schedule is None:
                    await self._reconcile(config, cid, at)
                self._audience[cid] = stamps
                self.enroll_errors.pop(cid, None)
                self._retry_at.pop(cid, None)
            except Exception as exc:
                # The audience could not be read (file gone, not UTF-8, …): the campaign waits
                # and says why; it is tried again shortly, and at once when the file changes.
                self.enroll_errors[cid] = str(exc)
                self._retry_at[cid] = self.clock() + ENROLL_RETRY
                log.error("campaign %s: enrollment failed: %s", cid, exc)
            finally:
                self._enrolling.pop(cid, None)
                if self.poke is not None:
                    self.poke()

        self._enrolling[cid] = asyncio.create_task(run(), name=f"enroll-{cid}")

    async def _reconcile(self, config: Config, cid: str, now: float) -> None:
        """Continuous enrollment: recipients no longer in any list are removed — their later
        steps are not created and their unsent messages are skipped (conditions.py)."""
        listed = await listed_keys(config, cid, now=_utc(now))
        removed = await removed_keys(self.store, cid, 0, listed)
        if removed:
            newly = await self.store.remove_recipients(cid, sorted(removed), at=now)
            if newly:
                log.info(
                    "campaign %s: %d recipients were removed from the lists; "
                    "their unsent messages are skipped",
                    cid,
                    newly,
                )
        self.conditions.set_removed(cid, removed)

    # ------------------------------------------------------------ drip steps

    async def _drip(self, cid: str, campaign: Campaign, edition: int, now: float) -> int:
        """Create the rows of drip steps that have fallen due: step n+1 for each recipient whose
        step n was sent at least ``after`` ago. Rows are made when due, never up front, so a
        step edited meanwhile is the one that goes out."""
        created = 0
        for n in range(1, len(campaign.steps)):
            step = campaign.steps[n]
            assert step.after is not None  # check.py guarantees it
            # Inclusive (to the millisecond): the clock's alarm rings exactly at sent_at + after.
            before = now - step.after.total_seconds() + 0.001
            while due := await self.store.sent_steps(
                cid, edition, n, sent_before=before, limit=BATCH
            ):
                items = [(key, choose_template(cid, key, step.template)) for key, _ in due]
                created += await self.store.enqueue(cid, edition, n + 1, items, due=now)
                if len(due) < BATCH:
                    break
        if created:
            log.info("campaign %s: %d drip messages fell due", cid, created)
        return created

    async def _next_step(
        self, cid: str, campaign: Campaign, editions: Iterable[int], *, settled: bool
    ) -> float | None:
        """When the next drip step falls due for someone (None: no step can follow).

        Approximate by design: the first waiting recipient in id order stands for the step.
        The clock's alarm may then ring a little late for another recipient; the periodic pass
        covers that. With nothing pending, an edition without a follow-up is finished for good.
        """
        earliest: float | None = None
        for edition in editions:
            found = False
            for n in range(1, len(campaign.steps)):
                after = campaign.steps[n].after
                assert after is not None
                first = await self.store.sent_steps(
                    cid, edition, n, sent_before=float("inf"), limit=1
                )
                if first:
                    found = True
                    earliest = _earliest(earliest, first[0][1] + after.total_seconds())
            if settled and not found and campaign.schedule is not None:
                self._done.setdefault(cid, set()).add(edition)
        return earliest

    # ------------------------------------------------------------ for the API

    def describe(self, cid: str, row: CampaignRow | None, now: float) -> dict[str, Any]:
        """Time facts for the campaign summary: the window, editions, the next drip step."""
        campaign = self.config.campaigns.get(cid)
        out: dict[str, Any] = {}
        if campaign is None:
            return out
        window = campaign.window
        if window is not None:
            if window.timezone == "recipient":
                # Each recipient's own zone: the earliest opening a held message waits for.
                out["window_open"] = None
                out["next_window"] = _iso(self.conditions.next_window(cid, now))
            else:
                at = _utc(now)
                zone = ZoneInfo(window.timezone)
                is_open = in_window(window, at, zone)
                opens = None if is_open else next_window_open(window, at, zone)
                out["window_open"] = is_open
                out["next_window"] = opens.isoformat() if opens is not None else None
        if campaign.schedule is not None:
            catch_up = self.catch_ups.get(cid)
            out["editions"] = {
                "cron": campaign.schedule.cron,
                "last": row.last_edition if row else None,
                "last_fired_at": _iso(row.last_fired_at) if row else None,
                "next_at": _iso(self.next_edition.get(cid)),
                "catch_up": catch_up.as_dict() if catch_up else None,
            }
            out["missed"] = catch_up.missed if catch_up else 0
        if len(campaign.steps) > 1:
            out["next_step_at"] = _iso(self.next_step.get(cid))
        return out

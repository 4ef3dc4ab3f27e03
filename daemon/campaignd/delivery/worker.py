"""The dispatcher: claims due messages, picks a service under every limit, sends, records.

It holds no truth of its own: campaign state is re-read from the database before each batch
(the API writes state and merely wakes us), every outcome is committed before the SMTP session
takes its next message, and anything unexpected marks the row instead of dropping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Protocol

from ..config.model import Campaign, Config, Service
from ..errors import NotCompliant, RenderCutOff, RenderError, TemplateError
from ..plan.pace import WIRE_MARGIN
from ..plan.windows import in_window, next_window_open, window_zone
from ..queue.states import ClaimLost
from ..queue.store import Claimed, Outcome
from ..render.compose import Composer, address_of, sender_of
from ..stats import DeliveryStats
from ..tokens.links import LinkSigner
from ..tokens.verp import codec_for as verp_codec
from ..tokens.verp import signing_key
from .breaker import Breaker
from .classify import Reply
from .conditions import Conditions, park_until
from .dkim import signer_for as dkim_signer_for
from .limits import Limiter
from .offloop import RenderThread
from .retry import next_retry
from .shared import SharedLimits
from .smtp import ConnectionFailed, Envelope, SmtpPool, Transport
from .throttle import Throttle, recognise

log = logging.getLogger("campaignd.delivery")

# A message held in memory waiting for a limit longer than this is handed back to the queue
# with its due time, so a long wait (a daily cap, a closed breaker) never pins claimed rows —
# nor, at the permit, an idle SMTP session.
MAX_HOLD = 5.0
# A message is handed to a service this long before its permit is due, so rendering, signing
# and the start commit are done and it waits at the gate when the permit comes: otherwise
# their time would be added to every interval and the pace would fall short of the limit.
LEAD = 0.25
CLAIM_LEASE = 600.0
# A shared permit (PostgreSQL) is booked for a slot of the pace; used later than this it could
# land at the relay together with the next one. Half the pace's wire margin: the other half is
# for the way from the permit to MAIL FROM.
BOOKED_LATE = WIRE_MARGIN / 2
IDLE_POLL = 30.0
"""With nothing due, the claim loop sleeps until the earliest due row (``next_due``) or until
something wakes it: a conductor pass (new rows, a retry, a resume, a reload: ``set_active``), a
send that ended (its row may be due again: a release, a retry), the API, a dead daemon's rows
handed back. This long at most, for what only the database knows: rows another daemon sharing
a PostgreSQL queue made due without telling us."""
FILLING_POLL = 1.0
"""While an enrollment is writing a campaign's rows, new ones are looked for this often: they
are sent as they come, not once the list is read."""
AUTO_PAUSE_AFTER = 50
HOLD_AFTER_TEMPLATE_FAULTS = 3
"""Messages in a row whose template, not recipient, failed them (cut off, not compliant)."""


class Store(Protocol):
    """What the dispatcher needs from the database (the queue.Store implements it)."""

    async def claim(
        self, *, worker: str, now: float, lease: float, limit: int, campaign_ids: Collection[str]
    ) -> list[Claimed]: ...
    async def release(self, ids: Sequence[int], *, next_attempt_at: float) -> None: ...
    async def start(self, message: int, service: str) -> None: ...
    async def record(self, outcomes: Sequence[Outcome]) -> None: ...
    async def next_due(self, campaign_ids: Collection[str]) -> float | None: ...
    async def engaged(
        self, campaign_id: str, edition: int, keys: Sequence[str], kinds: Collection[str]
    ) -> set[str]: ...
    async def contacted_since(
        self, keys: Sequence[str], since: float, *, exclude_campaign: str | None = None
    ) -> set[str]: ...


class _Declined(Exception):
    """The permit was not taken: the message goes back to the queue, due at ``at``."""

    def __init__(self, at: float) -> None:
        super().__init__(at)
        self.at = at


@dataclass
class _Permit:
    """One message's way to its rate permit: waiting, taken (when), answered."""

    waiting: bool = True  # counted in Dispatcher._awaiting
    taken_at: float | None = None
    settled: bool = False


@dataclass
class CampaignRun:
    """What the dispatcher tracks per campaign between database reads."""

    consecutive_failures: int = 0
    last_failure: str = ""
    template_faults: int = 0


@dataclass
class Dispatcher:
    store: Store
    config: Config
    composer: Composer
    transports: Mapping[str, Transport]
    limiter: Limiter
    worker_id: str
    on_auto_pause: Callable[[str, str], object] | None = None
    clock: Callable[[], float] = time.time
    batch_size: int = 200
    breakers: dict[str, Breaker] = field(default_factory=dict)
    runs: dict[str, CampaignRun] = field(default_factory=lambda: defaultdict(CampaignRun))
    active: set[str] = field(default_factory=set)
    conditions: Conditions = field(default_factory=Conditions)
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    on_progress: Callable[[], None] | None = None
    """Called on every pass of the claim loop (the runtime's supervisor watches it)."""
    on_drained: Callable[[], None] | None = None
    """Called when nothing is due any more and nothing is in flight after the loop had work:
    a campaign may be complete (the conductor looks at once instead of at its next pass)."""
    filling: frozenset[str] = frozenset()
    """Campaigns whose rows an enrollment is writing now (``set_active``)."""
    next_look: float | None = None
    """While the claim loop sleeps with nothing due: when it looks again at the latest."""
    renderer: RenderThread = field(default_factory=RenderThread)
    shared: SharedLimits | None = None
    """PostgreSQL: paces, quotas and the warm-up cap shared with the other daemons on the
    database; None (SQLite, one daemon): the limiter alone."""

    def __post_init__(self) -> None:
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        # Set (and replaced) when campaign states, the config or shutdown change: whoever
        # waits for a limit looks again at once (a pause must not let a waiting message out).
        self._changed = asyncio.Event()
        self._inflight: dict[str, int] = defaultdict(int)
        # Messages handed to a service that have not taken (or given up) their permit yet.
        self._awaiting: dict[str, int] = defaultdict(int)
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._rr = 0
        for sid in self.transports:
            self.breakers.setdefault(sid, Breaker())

    # ------------------------------------------------------------ control

    def wake(self) -> None:
        self._wake.set()

    def _notify_waiters(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        self._slot_freed.set()

    async def _nap(self, seconds: float) -> None:
        """Sleep ``seconds`` unless campaign states, the config or shutdown change first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout=max(seconds, 0.0))

    def deactivate(self, campaign_id: str) -> None:
        """Paused or stopped: no message of it takes a permit from now on, and those that
        wait for one go back to the queue at once."""
        self.active.discard(campaign_id)
        self._notify_waiters()

    def set_active(self, campaign_ids: Collection[str], *, filling: Collection[str] = ()) -> None:
        """Campaigns whose database state is `sending` (the caller read it), and those of them
        whose rows an enrollment is still writing (looked for every FILLING_POLL)."""
        self.active = set(campaign_ids)
        self.filling = frozenset(filling)
        self._wake.set()
        self._notify_waiters()

    def update(self, config: Config, transports: Mapping[str, Transport]) -> None:
        """A reload: new claims use the new config at once; in-flight sends finish as they are."""
        self.config = config
        self.transports = transports
        for sid in transports:
            self.breakers.setdefault(sid, Breaker())
        self.limiter.update_config(config)
        self._wake.set()
        self._notify_waiters()

    def inflight(self) -> int:
        return sum(self._inflight.values())

    def inflight_of(self, service: str) -> int:
        return self._inflight.get(service, 0)

    async def drain(self, timeout: float) -> int:  # noqa: ASYNC109 - a deadline, not a cancel
        """Stop claiming; wait for in-flight sends. Returns how many were still running."""
        self._stopping = True
        self._wake.set()
        self._notify_waiters()
        pending = [t for t in self._tasks if not t.done()]
        if not pending:
            return 0
        _, still = await asyncio.wait(pending, timeout=timeout)
        return len(still)

    async def cancel_in_flight(self, grace: float) -> int:
        """Cancel every send still running and give them ``grace`` seconds to unwind; their
        rows stay ``sending`` for the caller to settle as uncertain. Returns how many."""
        pending = [t for t in self._tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace)
        return len(pending)

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        had_work = False
        while not self._stopping:
            # Cleared before the claim: whatever sets them from here on (new rows, a send that
            # ended) makes the wait below return at once instead of being lost.
            self._wake.clear()
            self._slot_freed.clear()
            if self.on_progress is not None:
                self.on_progress()
            if not self.active:
                await self._wait(None)
                continue
            capacity = self._free_slots()
            if capacity <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            now = self.clock()
            claimed = await self.store.claim(
                worker=self.worker_id,
                now=now,
                lease=CLAIM_LEASE,
                limit=min(self.batch_size, max(capacity * 4, 16)),
                campaign_ids=self.active,
            )
            if not claimed:
                due = await self.store.next_due(self.active)
                # After that await, not before: the last sends may have ended meanwhile, and
                # nothing would wake this loop again for them.
                if had_work and not self.inflight():
                    had_work = False
                    if self.on_drained is not None:
                        self.on_drained()
                if due is not None and due <= now:
                    # Due when we claimed, yet not claimable: its campaign is not `sending` in
                    # the database (another daemon paused it, say). Our view of the active
                    # campaigns is behind: have the conductor look, and do not spin meanwhile.
                    if self.on_drained is not None:
                        self.on_drained()
                    due = self.clock() + FILLING_POLL
                await self._wait(None if due is None else max(0.0, due - self.clock()))
                continue
            had_work = True
            await self._dispatch(claimed)

    async def _wait(self, seconds: float | None) -> None:
        """Until ``seconds`` have passed (None: nothing is due), something wakes the loop
        (``wake``, ``set_active``, ``update``, ``drain``) or, with sends in flight, one of them
        ends — its row may be due again at a time the last ``next_due`` did not know."""
        poll = FILLING_POLL if self.filling else IDLE_POLL
        # A timer may ring a hair early: be past the due time when the claim looks.
        timeout = poll if seconds is None else min(seconds + 0.001, poll)
        self.next_look = self.clock() + timeout
        # A send that ended since the loop cleared the event counts too, even if it was the
        # last one (its task is gone from ``_tasks`` by now).
        waits = [asyncio.ensure_future(self._wake.wait())]
        if self._tasks or self._slot_freed.is_set():
            waits.append(asyncio.ensure_future(self._slot_freed.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.next_look = None
            for w in waits:
                w.cancel()

    def _free_slots(self) -> int:
        free = 0
        for sid, svc in self.config.services.items():
            if sid in self.transports:
                free += max(0, svc.max_connections - self._inflight[sid])
        return free

    # ------------------------------------------------------------ one batch

    async def _dispatch(self, claimed: list[Claimed]) -> None:
        now = self.clock()
        # Read in the claim's transaction (``Claimed.suppressed``): no round trip of its own.
        suppressed = {m.recipient for m in claimed if m.suppressed}
        # unless:, removed steps and recipients, changed templates (delivery/conditions.py);
        # checked before suppression so `unless: [unsubscribed]` reports itself as the reason.
        verdicts = await self.conditions.evaluate(self.store, self.config, claimed, now=now)
        early: list[Outcome] = []
        later: dict[float, list[int]] = defaultdict(list)
        ready: list[Claimed] = []
        for msg in claimed:
            campaign = self.config.campaigns.get(msg.campaign_id)
            verdict = verdicts.get(msg.id)
            if campaign is None or msg.campaign_id not in self.active:
                later[now].append(msg.id)  # paused or removed meanwhile: back, untouched
            elif verdict is not None and verdict.skip is not None:
                early.append(_final(msg, "skipped", now, verdict.skip))
            elif msg.recipient in suppressed:
                early.append(_final(msg, "suppressed", now, "address is on the suppression list"))
            elif (opens := self._window_opens(campaign, msg, now)) is not None:
                self.conditions.note_held(msg.campaign_id, opens, now)
                later[park_until(opens, now)].append(msg.id)
            elif verdict is not None and verdict.template is not None:
                ready.append(replace(msg, template=verdict.template))
            else:
                ready.append(msg)
        if early:
            await self.store.record(early)
        for at, ids in later.items():
            await self.store.release(ids, next_attempt_at=at)
        for i, msg in enumerate(ready):
            if self._stopping or msg.campaign_id not in self.active:
                await self.store.release([m.id for m in ready[i:]], next_attempt_at=self.clock())
                return
            if (why := self.conditions.removed_now(msg)) is not None:
                # The batch waits for the limits message by message: a list edit can land
                # meanwhile.
                await self.store.record([_final(msg, "skipped", self.clock(), why)])
                continue
            await self._start_one(msg)

    def _window_opens(self, campaign: Campaign, msg: Claimed, now: float) -> float | None:
        """None if the message may go now, else when its recipient's window opens."""
        window = campaign.window
        if window is None:
            return None
        zone = window_zone(window, msg.timezone)
        at = datetime.fromtimestamp(now, UTC)
        if in_window(window, at, zone):
            return None
        opens = next_window_open(window, at, zone)
        # A window that can never open again keeps the message queued a day at a time, so a
        # corrected campaign file picks it up; the status page shows why it waits.
        return opens.timestamp() if opens is not None else now + 86400

    async def _start_one(self, msg: Claimed) -> None:
        """Hand the message to a service with a free session whose limits will admit it
        soon; the permit itself is taken at the wire (``_permit``). A message that waits
        looks again whether its campaign still sends; if not it goes back untouched."""
        while True:
            campaign = self.config.campaigns.get(msg.campaign_id)
            if self._stopping or campaign is None or msg.campaign_id not in self.active:
                await self.store.release([msg.id], next_attempt_at=self.clock())
                return
            now = self.clock()
            sid, at = self._choose_service(campaign, msg, now)
            if sid is not None:
                self._inflight[sid] += 1
                self._awaiting[sid] += 1
                task = asyncio.create_task(self._deliver(msg, sid), name=f"send-{msg.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
            if at is None:  # every service is busy: wait for a free session
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            wait = at - now
            if wait > MAX_HOLD:
                await self.store.release([msg.id], next_attempt_at=at)
                return
            await self._nap(wait - LEAD)

    def _choose_service(
        self, campaign: Campaign, msg: Claimed, now: float
    ) -> tuple[str | None, float | None]:
        """The service to use now, or (None, when to look again); (None, None): all busy.

        Among the campaign's services that are healthy and within their limits, the one with
        the most free sessions wins, so messages spread in proportion to free capacity.
        """
        candidates = [s for s in campaign.services if s in self.transports]
        best: str | None = None
        best_free = 0
        earliest: float | None = None
        busy = False  # a usable service only lacks a free session: one frees up soon
        n = len(candidates)
        self._rr = (self._rr + 1) % max(n, 1)
        for sid in candidates[self._rr :] + candidates[: self._rr]:
            breaker = self.breakers[sid]
            state = breaker.state(now)
            if state == "open":
                retry = breaker.retry_at()
                if retry is not None:
                    earliest = retry if earliest is None else min(earliest, retry)
                continue
            if state == "half-open" and breaker.probing:
                busy = True  # the probe's outcome decides; wait for it like for a session
                continue
            # Messages already handed to this service take their permits first.
            allowed_at = self.limiter.check(
                sid, msg.domain, msg.campaign_id, now, ahead=self._awaiting[sid]
            )
            if allowed_at > now + LEAD:
                earliest = allowed_at if earliest is None else min(earliest, allowed_at)
                continue
            free = self.config.services[sid].max_connections - self._inflight[sid]
            if free <= 0:
                busy = True
                continue
            if free > best_free:
                best, best_free = sid, free
        if best is not None and self.breakers[best].allows(now):
            return best, None
        if busy:
            return None, None
        return None, earliest if earliest is not None else now + 60

    # ------------------------------------------------------------ one message

    async def _deliver(self, msg: Claimed, sid: str) -> None:
        began = time.perf_counter()
        permit = _Permit()
        try:
            try:
                outcome = await self._attempt(msg, sid, permit)
            except asyncio.CancelledError:
                raise
            except ClaimLost as exc:
                # Another daemon took this row over (ours was taken for dead): it is theirs
                # now, and nothing was sent from here.
                log.warning("message %s not sent from here: %s", msg.id, exc)
                outcome = None
            except Exception as exc:  # a bug must not lose the message: keep it, say why
                log.exception("unexpected error sending message %s", msg.id)
                outcome = self._temporary(msg, sid, f"internal error: {exc!r}", None, None)
            took = time.perf_counter() - began
            if outcome is not None:
                # Committed before the slot frees, so a crash leaves at most max_connections
                # messages per service uncertain — never a backlog of unrecorded sends.
                try:
                    await self.store.record([outcome])
                except ClaimLost as exc:
                    log.warning("outcome of message %s not recorded: %s", msg.id, exc)
                    return
                if outcome.status == "sent" and outcome.service is not None:
                    self.limiter.committed(
                        outcome.service, msg.campaign_id, outcome.at, self.clock()
                    )
                self._track(msg, outcome)
                # /metrics and the summaries' send rate (in-memory only; the row is the truth)
                self.stats.attempt(msg.campaign_id, msg.recipient, outcome, took)
        finally:
            self._done_waiting(sid, permit)
            if permit.taken_at is not None and not permit.settled:
                # No reply (cancelled, a bug): the transaction may not count as accepted.
                self.limiter.settle(sid, msg.domain, msg.campaign_id, self.clock(), accepted=False)
            self._inflight[sid] -= 1
            self._slot_freed.set()

    def _done_waiting(self, sid: str, permit: _Permit) -> None:
        if permit.waiting:
            permit.waiting = False
            self._awaiting[sid] -= 1

    async def _permit(self, msg: Claimed, sid: str, permit: _Permit) -> None:
        """Take the permit of every limit, with the session ready and nothing left between it
        and MAIL FROM. Raises ``_Declined`` if the campaign stopped sending meanwhile or the
        limits want a longer wait than a session should idle."""
        try:
            while True:
                if self._stopping or msg.campaign_id not in self.active:
                    raise _Declined(self.clock())
                if self.shared is not None:
                    await self.shared.refresh(sid, msg.campaign_id)
                now = self.clock()
                at = self.limiter.check(sid, msg.domain, msg.campaign_id, now)
                if at <= now and self.shared is not None:
                    # The in-process check held quotas, the cap and our own pace; the pace
                    # every daemon shares is the database's.
                    taken, at = await self.shared.take(sid, msg.domain, msg.campaign_id)
                    if taken and await self._use_booked(msg, at):
                        now = self.clock()
                        self.limiter.record(sid, msg.domain, msg.campaign_id, now)
                        permit.taken_at = now
                        return
                    now = self.clock()
                    if taken:  # woke too late for the booked slot: book another
                        continue
                    at = max(at, now + 0.001)
                if at <= now:
                    self.limiter.record(sid, msg.domain, msg.campaign_id, now)
                    permit.taken_at = now
                    return
                if at - now > MAX_HOLD:
                    raise _Declined(at)
                await self._nap(at - now)
        finally:
            self._done_waiting(sid, permit)

    async def _use_booked(self, msg: Claimed, at: float) -> bool:
        """Wait for a booked shared permit's moment (at most shared.HORIZON away). False if
        this process woke too late to use it: late permits would bunch up with the next ones
        at the relay. A pause or stop meanwhile sends the message back untouched
        (``_Declined``). A slot not used is lost, which never exceeds a limit."""
        while (wait := at - self.clock()) > 0:
            await self._nap(wait)
            if self._stopping or msg.campaign_id not in self.active:
                raise _Declined(self.clock())
        return self.clock() - at <= BOOKED_LATE

    async def _attempt(self, msg: Claimed, sid: str, permit: _Permit) -> Outcome | None:
        now = self.clock()
        campaign = self.config.campaigns.get(msg.campaign_id)
        service = self.config.services.get(sid)
        template = self.config.template_of(msg.campaign_id, msg.template)
        if campaign is None or service is None or template is None:
            what = "campaign" if campaign is None else "service" if service is None else "template"
            await self.store.release([msg.id], next_attempt_at=now + 60)
            log.warning("message %s waits: its %s is no longer configured", msg.id, what)
            return None
        composer = self.composer
        try:
            rendered = await self.renderer.run(
                partial(
                    composer.compose,
                    campaign_id=msg.campaign_id,
                    step=msg.step,
                    template_id=msg.template,
                    service_id=sid,
                    recipient_key=msg.recipient,
                    fields=msg.fields,
                    to_address=msg.email,
                    send_time=datetime.fromtimestamp(now, UTC),
                ),
                what=f"template {msg.template}",
            )
        except (RenderCutOff, NotCompliant) as exc:
            self._template_fault(msg, str(exc))
            return _final(msg, "failed", now, str(exc), service=sid)
        except RenderError as exc:
            self.runs[msg.campaign_id].template_faults = 0
            return _final(msg, "failed", now, str(exc), service=sid)
        except TemplateError as exc:
            # The template cannot be compiled for this campaign (load should have said so):
            # nothing of it can go out; keep the message and hold the campaign, no traceback.
            await self.store.release([msg.id], next_attempt_at=now + 60)
            self._hold(msg.campaign_id, f"auto-paused: {exc} — fix the template, then resume")
            return None
        self.runs[msg.campaign_id].template_faults = 0
        data = rendered.data
        if service.dkim is not None:
            try:
                signer = dkim_signer_for(self.config, sid)
                assert signer is not None
                # RSA signing is CPU work (pure-Python in dkimpy): off the event loop.
                data = await asyncio.to_thread(signer.sign, data)
            except ValueError as exc:
                # Unsigned mail would fail DMARC at the receiver: hold the campaign instead.
                await self.store.release([msg.id], next_attempt_at=now + 60)
                reason = f"auto-paused: cannot DKIM-sign — {exc}; fix it, reload, then resume"
                log.error("campaign %s %s", msg.campaign_id, reason)
                if self.on_auto_pause is not None and msg.campaign_id in self.active:
                    self.deactivate(msg.campaign_id)
                    self.on_auto_pause(msg.campaign_id, reason)
                return None
        sender = envelope_sender(
            self.config, campaign, service, sid, message=msg.id, signer=self.composer.signer
        )
        envelope = Envelope(sender=sender, recipient=msg.smtp_address, data=data, domain=msg.domain)
        transport = self.transports[sid]
        # Durably "in flight" before the first SMTP byte: a crash from here on leaves the row
        # uncertain (never resent on its own); before here it simply goes back to the queue.
        await self.store.start(msg.id, sid)

        async def gate() -> None:
            await self._permit(msg, sid, permit)

        try:
            if isinstance(transport, SmtpPool):
                reply = await transport.send(envelope, gate=gate)
            else:  # the outbox and test transports have no session to wait for
                await gate()
                reply = await transport.send(envelope)
        except _Declined as declined:
            # Paused, stopped or over a limit while waiting: back to the queue untouched.
            await self.store.release([msg.id], next_attempt_at=declined.at)
            self._wake.set()
            return None
        except ConnectionFailed as exc:
            if permit.taken_at is not None:
                permit.settled = True
                self.limiter.settle(sid, msg.domain, msg.campaign_id, self.clock(), accepted=False)
            opened = self.breakers[sid].failure(self.clock(), str(exc))
            if opened:
                log.warning("service %s is failing, skipping it for now: %s", sid, exc)
            # Not this message's fault: straight back to the queue for another service.
            await self.store.release([msg.id], next_attempt_at=self.clock())
            self._wake.set()
            return None
        self.breakers[sid].success()
        done = self.clock()
        # The same instant as the outcome's ``at`` (the row's ``sent_at``), so the counters
        # rebuilt from the database at start read what the live ones read.
        permit.settled = True
        self.limiter.settle(sid, msg.domain, msg.campaign_id, done, accepted=reply.kind == "sent")
        throttle = throttle_of(reply)
        if throttle is not None:
            started = permit.taken_at if permit.taken_at is not None else done
            self.limiter.throttled(sid, msg.domain, done, started=started, reason=str(throttle))
            log.info("service %s (%s) slows down: %s", sid, msg.domain, throttle)
        return self._outcome(msg, sid, service, reply, rendered.message_id, done, throttle)

    def _outcome(
        self,
        msg: Claimed,
        sid: str,
        service: Service,
        reply: Reply,
        message_id: str,
        now: float,
        throttle: Throttle | None = None,
    ) -> Outcome:
        if reply.kind == "sent":
            return Outcome(
                id=msg.id, status="sent", service=sid, message_id=message_id, at=now,
                code=reply.code, enhanced=reply.enhanced,
            )  # fmt: skip
        if reply.kind == "deferred":
            # Throttled: due again at once — the slowed pace decides when it goes, not the
            # message's own backoff (minutes to hours for a reply that only meant "slower").
            return self._temporary(
                msg, sid, reply.summary(), reply.code, reply.enhanced, service,
                retry_now=throttle is not None,
            )  # fmt: skip
        return Outcome(
            id=msg.id,
            status="bounced" if reply.kind == "bounced" else "failed",
            service=sid,
            error=reply.summary(),
            code=reply.code,
            enhanced=reply.enhanced,
            at=now,
            suppress=reply.kind == "bounced",
            reason="hard bounce" if reply.kind == "bounced" else None,
        )

    def _temporary(
        self,
        msg: Claimed,
        sid: str,
        error: str,
        code: int | None,
        enhanced: str | None,
        service: Service | None = None,
        *,
        retry_now: bool = False,
    ) -> Outcome:
        now = self.clock()
        policy = (service or self.config.services[sid]).retry
        first = msg.first_attempt_at or now
        at = next_retry(policy, attempts=msg.attempts, first_attempt_at=first, now=now)
        if at is not None and retry_now:
            at = now
        if at is None:
            return Outcome(
                id=msg.id, status="failed", service=sid, at=now, code=code, enhanced=enhanced,
                error=f"gave up after {policy.give_up_after}: {error}",
            )  # fmt: skip
        return Outcome(
            id=msg.id, status="deferred", service=sid, at=now, code=code, enhanced=enhanced,
            error=error, next_attempt_at=at,
        )  # fmt: skip

    def _template_fault(self, msg: Claimed, reason: str) -> None:
        run = self.runs[msg.campaign_id]
        run.template_faults += 1
        log.error("campaign %s: message %s not sent: %s", msg.campaign_id, msg.id, reason)
        if run.template_faults >= HOLD_AFTER_TEMPLATE_FAULTS:
            run.template_faults = 0
            self._hold(
                msg.campaign_id,
                f"auto-paused: {HOLD_AFTER_TEMPLATE_FAULTS} messages in a row failed by their "
                f"template; last: {reason} — fix the template, then resume",
            )

    def _hold(self, campaign_id: str, reason: str) -> None:
        if campaign_id not in self.active:
            return  # already held (other in-flight messages of it report the same)
        log.error("campaign %s %s", campaign_id, reason)
        self.active.discard(campaign_id)
        if self.on_auto_pause is not None:
            self.on_auto_pause(campaign_id, reason)

    def _track(self, msg: Claimed, outcome: Outcome) -> None:
        """Auto-pause a campaign whose messages keep failing permanently (listmonk's OnError)."""
        run = self.runs[msg.campaign_id]
        if outcome.status == "sent":
            run.consecutive_failures = 0
        elif outcome.status == "failed":
            run.consecutive_failures += 1
            run.last_failure = outcome.error or ""
            if run.consecutive_failures == AUTO_PAUSE_AFTER and self.on_auto_pause is not None:
                reason = (
                    f"auto-paused: {AUTO_PAUSE_AFTER} messages in a row failed permanently; "
                    f"last: {run.last_failure} — fix the cause, then resume"
                )
                self.deactivate(msg.campaign_id)
                self.on_auto_pause(msg.campaign_id, reason)


def throttle_of(reply: Reply) -> Throttle | None:
    """Whether the reply asks us to slow down: the table in throttle.py, or what the
    classifier already flagged (421 and its own throttle words)."""
    if reply.kind != "deferred":
        return None
    found = recognise(reply.code, reply.enhanced, reply.text)
    if found is None and reply.slow_down:
        found = Throttle("slow down", reply.summary())
    return found


def _final(
    msg: Claimed, status: str, now: float, reason: str, *, service: str | None = None
) -> Outcome:
    return Outcome(id=msg.id, status=status, service=service, at=now, error=reason, reason=reason)


def envelope_sender(
    config: Config,
    campaign: Campaign,
    service: Service,
    sid: str,
    *,
    message: int | None = None,
    signer: LinkSigner | None = None,
) -> str:
    """MAIL FROM: the service's return path if it has one, else the From address.

    A ``return_path`` with ``{token}`` (VERP) gets the message row's signed token, made with
    the link-signing key, so a bounce to it names the message even when the report is mangled;
    without the row or key (a test send) the From address is used instead.
    """
    pattern = service.return_path
    if pattern and "{token}" not in pattern:
        return pattern
    if pattern and message is not None and signer is not None:
        try:
            return verp_codec(signing_key(signer), pattern).address(message)
        except ValueError:
            log.warning("services.d/%s.yaml: return_path %r is not a VERP pattern", sid, pattern)
    return address_of(sender_of(config, campaign, sid))

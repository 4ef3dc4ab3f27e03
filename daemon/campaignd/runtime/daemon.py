"""The daemon: explicit run states, one AsyncExitStack, named tasks, two-stage signals.

starting → running → draining → stopped. The first SIGTERM/SIGINT stops claiming and lets
in-flight SMTP transactions finish (bounded by ``drain_timeout``); a second one forces the exit.
SIGHUP reloads the config root at once; the watcher reloads it when files change (debounced),
and the clock wakes the conductor when a start, an edition or a drip step falls due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from .. import __version__
from ..campaigns import control
from ..campaigns.conductor import Conductor
from ..config.load import (
    FileStamp,
    LoadResult,
    config_changes,
    config_stamps,
    kept_campaigns,
    load_root,
    merge_last_good,
    restart_needed,
)
from ..config.model import Config
from ..config.problems import Problem
from ..config.secrets import resolve_secret
from ..delivery.limits import Limiter
from ..delivery.outbox import OutboxTransport
from ..delivery.servicetest import ServiceTestReport, test_service
from ..delivery.shared import SharedLimits
from ..delivery.smtp import SmtpPool, Transport
from ..delivery.worker import Dispatcher
from ..errors import CampaigndError
from ..queue import database as queue_database
from ..queue.rows import CampaignRow
from ..queue.store import Store
from ..render.compose import Composer
from ..stats import DeliveryStats
from ..tokens.links import LinkSigner, load_or_create_key
from ..web.api import start_api
from .clock import Clock
from .feedback_runner import FeedbackRunner
from .supervisor import Supervisor
from .systemd import Notifier, progress_lines, status_line
from .watcher import Watcher

log = logging.getLogger("campaignd")

RunState = Literal["starting", "running", "draining", "stopped"]
TICK = 2.0
"""PostgreSQL: how often the other daemons' use of shared limits is read for the status page."""
PASS_EVERY = 60.0
"""The conductor passes when something wakes it — an alarm (a start, an edition, a drip step,
an enrollment retry), a reload, an API call, a list that changed, the dispatcher finding nothing
more to send — and otherwise this often: for what only the database knows (another daemon's
changes) and the drip steps of recipients later than the one the alarm was set for."""
BUSY_PASS_EVERY = 10.0
"""While messages are being sent: campaigns that finish while others keep the dispatcher busy
are marked completed within this long."""
STALLED_AFTER = 300.0
"""A loop that should be passing (the dispatcher with campaigns sending, the conductor) but
has not for this long makes the daemon unhealthy: /healthz 503, no watchdog ping."""
RELOAD_BUDGET = 60.0  # seconds a reload may spend reading and checking the config root
RECLAIM_EVERY = 15.0  # seconds between looks for the expired claims of a vanished daemon
EXIT_GRACE = 1.0  # after drain_timeout: how long cancelled sends get to unwind
PROGRESS_EVERY = 10.0  # seconds between the journald progress lines of busy campaigns


def state_dir(root: Path) -> Path:
    """systemd's StateDirectory= if set, else state/ under the config root."""
    return queue_database.state_dir(root)


def database_url(config: Config) -> str:
    """$CAMPAIGND_DATABASE, else ``database:`` (``queue.database.configured_url``, which
    ``campaignctl plan`` uses too, so both open the same database)."""
    return queue_database.configured_url(config.settings.database, config.root)


def listen_address(config: Config) -> str:
    return os.environ.get("CAMPAIGND_LISTEN") or config.settings.http.listen


@dataclass
class Daemon:
    root: Path
    run_state: RunState = "starting"
    config: Config | None = None
    problems: list[Problem] = field(default_factory=list)
    loaded_at: float = 0.0
    started_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = asyncio.Event()
        self._forced = False
        self._wake = asyncio.Event()
        self.transports: dict[str, Transport] = {}
        self.store: Store | None = None
        self.dispatcher: Dispatcher | None = None
        self.conductor: Conductor | None = None
        self.limiter: Limiter | None = None
        self.feedback: FeedbackRunner | None = None
        self.signer: LinkSigner | None = None
        self.stats = DeliveryStats()
        self.supervisor = Supervisor()
        self.token: str | None = None
        self.api_port: int | None = None
        self.ready = asyncio.Event()
        self.clock: Clock | None = None
        self.watcher: Watcher | None = None
        self.broken: set[str] = set()  # campaign ids whose file has errors now
        self._reload_lock = asyncio.Lock()
        self._reload_task: asyncio.Task[None] | None = None
        self._reload_again = False
        self.notifier = Notifier.from_env()
        self._progress_at = time.monotonic()
        self._progress_seen: Counter[tuple[str, str, str]] = Counter()

    # ------------------------------------------------------------ config

    def load(self) -> LoadResult:
        generation = self.config.generation + 1 if self.config else 1
        result = load_root(self.root, generation=generation)
        for p in result.problems:
            (log.error if p.severity == "error" else log.warning)("%s", p)
        return result

    def _transports_for(self, config: Config) -> dict[str, Transport]:
        out: dict[str, Transport] = {}
        for sid, svc in config.services.items():
            old = self.transports.get(sid)
            if old is not None and self.config is not None and self.config.services.get(sid) == svc:
                out[sid] = old  # unchanged: keep its pooled sessions
            elif svc.transport == "outbox":
                out[sid] = OutboxTransport(sid, svc, config.root)
            else:
                out[sid] = SmtpPool(sid, svc)
        return out

    def request_reload(self, why: str) -> None:
        """Reload soon, once: requests while a reload runs make one more reload after it."""
        if self._reload_task is not None and not self._reload_task.done():
            self._reload_again = True
            return

        async def run() -> None:
            again = True
            while again:
                self._reload_again = False
                try:
                    await self.reload(why)
                except Exception:
                    log.exception("reload failed; the previous config stays in force")
                again = self._reload_again

        self._reload_task = asyncio.create_task(run(), name="reload")

    async def reload(self, why: str = "requested") -> None:
        """Apply what changed on disk; a broken file keeps its last good version in force."""
        async with self._reload_lock:
            self.notifier.reloading()
            try:
                await self._reload(why)
            finally:
                self.notifier.ready(self._status_line())

    async def _reload(self, why: str) -> None:
        previous = self.config

        def read() -> tuple[dict[str, FileStamp], LoadResult]:
            # Stamped before reading: a file changed while we read differs at the next rescan.
            return config_stamps(self.root, previous), self.load()

        # Off the event loop and bounded: the API, the watchdog and SIGTERM keep being served
        # while files are read and checked, whatever is in them.
        try:
            stamps, result = await asyncio.wait_for(asyncio.to_thread(read), RELOAD_BUDGET)
        except TimeoutError:
            log.error(
                "reload: reading the config root took longer than %.0fs (a file on a stalled "
                "network mount?) — the previous config stays in force",
                RELOAD_BUDGET,
            )
            return
        config = merge_last_good(previous, result)
        if result.settings_broken:
            log.error("reload: campaignd.yaml has errors: keeping the previous settings")
        for kind, ids in result.broken.items():
            for oid in sorted(ids):
                kept = previous is not None and oid in getattr(previous, f"{kind}s")
                log.error(
                    "reload: %s %s has errors: %s",
                    kind,
                    oid,
                    "its last good version stays in force" if kept else "not loaded",
                )
        if previous is not None and (restart := restart_needed(previous.settings, config.settings)):
            log.warning("reload: %s changed — that takes a restart", ", ".join(restart))
        old_transports = self.transports
        self.transports = self._transports_for(config)
        for sid, t in old_transports.items():
            if self.transports.get(sid) is not t:
                # In-flight sessions finish on the old pool; it closes when they are done.
                self.supervisor.spawn(f"close-{sid}", t.close())
        self.config = config
        self.problems = result.problems + kept_campaigns(previous, result)
        self.loaded_at = time.time()
        if self.dispatcher:
            self.dispatcher.composer = Composer(config, self.dispatcher.composer.signer)
            self.dispatcher.update(config, self.transports)
        self.broken = set(result.broken["campaign"])
        if self.conductor:
            await self.conductor.update(config, self.broken)
        if self.watcher:
            self.watcher.loaded(stamps)
            self.watcher.watch_audience(self._audience_paths(config))
        log.info(
            "config generation %d loaded (%s): %s; %d services, %d templates, %d campaigns, "
            "%d problems",
            config.generation,
            why,
            config_changes(previous, config) if previous else "first load",
            len(config.services),
            len(config.templates),
            len(config.campaigns),
            len(result.errors),
        )
        self.poke()

    @staticmethod
    def _audience_paths(config: Config) -> list[Path]:
        return [config.path(a) for c in config.campaigns.values() for a in c.audience]

    # ------------------------------------------------------------ control

    def poke(self) -> None:
        """Something changed (API, reload, an alarm, a list): advance campaign states now."""
        if self.conductor is not None:
            self.conductor.invalidate()
        self._wake.set()

    def _nudge(self) -> None:
        """A pass soon, reading again only what is not known to be quiet (the dispatcher has
        nothing more to send: a campaign may be complete)."""
        self._wake.set()

    def _alarm(self, key: str) -> None:
        """The clock rang for campaign ``key``: a start, an edition, a drip step is due."""
        if self.conductor is not None:
            self.conductor.invalidate(key)
        self._wake.set()

    def _audience_changed(self) -> None:
        if self.conductor is not None and self.conductor.audience_changed():
            self._wake.set()

    def _set_active(self, campaign_ids: set[str]) -> None:
        if self.dispatcher is not None:
            filling = self.conductor.enrolling if self.conductor is not None else ()
            self.dispatcher.set_active(campaign_ids, filling=filling)

    def _settled(self, count: int) -> None:
        """Rows of a dead daemon went back to the queue: they may be claimed now."""
        if count and self.dispatcher is not None:
            self.dispatcher.wake()

    def request_stop(self) -> None:
        if self._stop.is_set():
            log.warning("second signal: exiting without waiting for in-flight messages")
            self._forced = True
            if self.dispatcher:
                for task in list(self.dispatcher._tasks):
                    task.cancel()
            return
        log.info("stopping: no new messages are claimed; in-flight ones finish")
        self.notifier.stopping()
        self._stop.set()

    # ------------------------------------------------------------ run

    async def run(self) -> int:
        initial_stamps = config_stamps(self.root)
        result = self.load()
        if result.settings_broken:
            log.error("campaignd.yaml is invalid — fix it and start again (see errors above)")
            return 1
        config = result.config
        self.config = config
        self.problems = result.problems
        self.loaded_at = time.time()
        self.broken = set(result.broken["campaign"])
        http = config.settings.http
        token_ref = http.secret_ref("token")
        if token_ref is not None:
            with contextlib.suppress(CampaigndError):
                self.token = resolve_secret(token_ref)
        listen = listen_address(config)
        host = listen.rpartition(":")[0].strip("[]")
        if self.token is None and host not in ("127.0.0.1", "localhost", "::1"):
            log.error(
                "http.listen is %s but no API token is set — set %s (or token_file/"
                "token_credential), or listen on 127.0.0.1",
                listen,
                http.token_env or "http.token_env",
            )
            return 1

        async with AsyncExitStack() as stack:
            try:
                store = await Store.open(
                    database_url(config),
                    root=config.root,
                    day_zone=ZoneInfo(config.settings.timezone),
                )
            except Exception as exc:
                log.error("cannot open the database %s: %s", database_url(config), exc)
                return 1
            stack.push_async_callback(store.close)
            self.store = store
            recovered = await store.recover(now=time.time(), worker=self.worker_id)
            if recovered:
                log.warning(
                    "%d messages were being sent when the last run died: marked uncertain "
                    "(not resent; `campaignctl retry CAMPAIGN --uncertain` re-queues them)",
                    recovered,
                )
            sdir = state_dir(config.root)
            secret = None
            secret_ref = config.settings.secret_ref("secret")
            if secret_ref is not None:
                try:
                    secret = resolve_secret(secret_ref)
                except CampaigndError as exc:
                    # Not fatal (the generated key works, as SPEC promises for an unset
                    # variable), but links signed with it stop verifying the day the configured
                    # secret appears: say so — loudly when a file or credential was named.
                    (log.info if secret_ref.kind == "env" else log.warning)(
                        "link secret not available (%s): signing links with the key generated "
                        "in %s — set it before sending, or links sent now break when it "
                        "appears",
                        exc,
                        sdir,
                    )
            signer = LinkSigner(load_or_create_key(sdir, secret))
            self.signer = signer

            self.limiter = Limiter(config)
            await self._seed_limits(store, config)
            self.transports = self._transports_for(config)
            stack.push_async_callback(self._close_transports)

            self.dispatcher = Dispatcher(
                store=store,
                config=config,
                composer=Composer(config, signer),
                transports=self.transports,
                limiter=self.limiter,
                worker_id=self.worker_id,
                on_auto_pause=self._auto_pause,
                stats=self.stats,
                on_progress=lambda: self.supervisor.progress("dispatcher"),
                on_drained=self._nudge,
                # Other daemons may send from a PostgreSQL database: limits are shared there.
                shared=SharedLimits(store, self.limiter) if store.shares_limits else None,
            )
            # The clock only rings alarms; the conductor derives them from config + database
            # on every pass, so a restart or reload needs no job store of its own.
            self.clock = Clock(self._alarm)
            self.conductor = Conductor(
                store,
                config,
                on_active=self._set_active,
                clock=time.time,
                on_wakes=self.clock.plan,
                poke=self.poke,
                conditions=self.dispatcher.conditions,
            )
            self.conductor.broken = set(self.broken)
            stack.push_async_callback(self.conductor.close)
            # Feedback mailboxes, the webhooks' event path and deliverability guards; the
            # runner follows self.config across reloads on its own (runtime/feedback_runner.py).
            self.feedback = FeedbackRunner(
                store,
                lambda: self.config,
                signer=signer,
                on_pause=self._auto_pause,
                supervisor=self.supervisor,
            )
            await self.feedback.start()
            stack.push_async_callback(self.feedback.close)
            self.clock.start()
            stack.callback(self.clock.shutdown)

            runner, self.api_port = await start_api(self, listen)
            stack.push_async_callback(runner.cleanup)

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload, "SIGHUP")
            stack.callback(self._remove_signal_handlers, loop)

            self.watcher = Watcher(
                config.root,
                reload=self.request_reload,
                audience_changed=self._audience_changed,
                stamps=lambda: config_stamps(self.root, self.config),
            )
            self.watcher.loaded(initial_stamps)
            self.watcher.watch_audience(self._audience_paths(config))
            await self.watcher.start()
            stack.push_async_callback(self.watcher.stop)
            stack.push_async_callback(self._finish_reload)  # runs first: LIFO

            # Heartbeats, and the claims of daemons that stopped theirs settled (PostgreSQL:
            # a survivor takes over a dead daemon's unstarted rows within ~30 s).
            self.supervisor.start(
                "heartbeat",
                lambda: store.keep_alive(self.worker_id, on_settled=self._settled),
            )
            self.supervisor.start("dispatcher", self.dispatcher.run)
            self.supervisor.start("conductor", self._tick_loop)
            stack.push_async_callback(self.supervisor.stop)  # jobs and loops still running
            self.run_state = "running"
            self.ready.set()
            self.notifier.ready(self._status_line())
            if (interval := self.notifier.watchdog_interval) is not None:
                self.supervisor.start("watchdog", lambda: self._watchdog(interval))
            log.info(
                "campaignd %s running: config %s, database %s, API http://%s",
                __version__,
                config.root,
                database_url(config).split("@")[-1],
                listen,
            )
            await self._stop.wait()

            self.run_state = "draining"
            await self.supervisor.stop(["conductor"])
            timeout = config.settings.drain_timeout.total_seconds()
            still = await self.dispatcher.drain(0.0 if self._forced else timeout)
            if still:
                # drain_timeout bounds the exit: what is still talking to a relay is cancelled
                # and marked uncertain below (it may have been delivered; never resent).
                log.warning(
                    "%d messages still in flight after %.0fs: cancelled, marked uncertain",
                    still,
                    timeout,
                )
                await self.dispatcher.cancel_in_flight(EXIT_GRACE)
            await self.supervisor.stop(["dispatcher"], timeout=EXIT_GRACE)
            await self.supervisor.stop(["heartbeat"], timeout=EXIT_GRACE)
            await store.release_claims(worker=self.worker_id, now=time.time())
            with contextlib.suppress(Exception):  # the database may be away: it times out
                await asyncio.wait_for(store.retire(self.worker_id), EXIT_GRACE)
        self.run_state = "stopped"
        log.info("campaignd stopped")
        return 0

    async def _finish_reload(self) -> None:
        task = self._reload_task
        if task is not None and not task.done():
            with contextlib.suppress(Exception):
                await task

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    async def _close_transports(self) -> None:
        # Bounded: a relay that stalls its QUIT must not hold the exit.
        for t in self.transports.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t.close(), timeout=EXIT_GRACE)

    def _status_line(self) -> str:
        sending = len(self.dispatcher.active) if self.dispatcher else 0
        in_flight = self.dispatcher.inflight() if self.dispatcher else 0
        sent = sum(n for (_, _, st), n in self.stats.outcomes.items() if st == "sent")
        errors = sum(1 for p in self.problems if p.severity == "error")
        line = status_line(in_flight, sending, sent, errors)
        ok, why = self._engine_health()
        return line if ok else f"{line}; NOT HEALTHY: {why}"

    async def _watchdog(self, interval: float) -> None:
        """Pinged from the event loop itself, and only while the engine is not wedged: a loop
        stuck or failing for the whole WatchdogSec gets the daemon restarted by systemd, which
        is the point; waiting for the database is not wedged."""
        was_ok = True
        while True:
            ok, why = self._engine_health()
            # A database outage is weather, not a wedge: a restart would not bring it back
            # and would turn the outcomes held in memory into uncertain messages.
            waiting_for_database = self.store is not None and not self.store.healthy
            if ok or waiting_for_database:
                self.notifier.watchdog()
            if ok != was_ok:
                (log.info if ok else log.error)(
                    "engine %s", "healthy again" if ok else f"not healthy: {why}"
                )
                self.notifier.status(self._status_line())
                was_ok = ok
            self.supervisor.progress("watchdog")
            await asyncio.sleep(interval)

    def _report_progress(self) -> None:
        """Every PROGRESS_EVERY seconds: one journald line per campaign that sent, and STATUS=."""
        now = time.monotonic()
        if now - self._progress_at < PROGRESS_EVERY:
            return
        current = Counter(self.stats.outcomes)
        for line in progress_lines(self._progress_seen, current, now - self._progress_at):
            log.info("%s", line)
        self._progress_seen, self._progress_at = current, now
        self.notifier.status(self._status_line())

    def _sending(self) -> bool:
        """Messages are being sent (or were since the last progress report)."""
        if self.dispatcher is not None and self.dispatcher.inflight():
            return True
        return self.stats.outcomes != self._progress_seen

    async def _tick_loop(self) -> None:
        """The conductor's passes, when something wakes it (``poke``, ``_nudge``, an alarm) or
        at the latest every PASS_EVERY (BUSY_PASS_EVERY while sending); in between the loop
        sleeps. An error ends the loop and the supervisor restarts it."""
        assert self.conductor is not None and self.store is not None
        shared = self.dispatcher.shared if self.dispatcher is not None else None
        # Only a daemon sharing the database can have its claims expire under another one.
        reclaim_every = RECLAIM_EVERY if self.store.shares_limits else PASS_EVERY
        reclaimed_at = refreshed_at = passed_at = -math.inf
        while self.run_state in ("starting", "running"):
            now = time.monotonic()
            sending = self._sending()
            every = BUSY_PASS_EVERY if sending else PASS_EVERY
            if self._wake.is_set() or now - passed_at >= every:
                # Cleared before the pass, so a poke that arrives during it (an alarm, a
                # reload) makes another pass instead of being lost.
                self._wake.clear()
                passed_at = now
                await self.conductor.tick()
            if shared is not None and self.config is not None and now - refreshed_at >= TICK:
                refreshed_at = now
                await shared.refresh_all(list(self.config.services), list(self.config.campaigns))
            if now - reclaimed_at >= reclaim_every:
                # Another daemon sharing the database may have died mid-send: its rows'
                # leases run out and they become uncertain, exactly like ours after a crash.
                reclaimed_at = now
                lost = await self.store.reclaim_expired(now=time.time())
                if lost:
                    log.warning("%d messages of a vanished daemon marked uncertain", lost)
            self._report_progress()
            # Idle by design counts as progress: the loop is alive and has looked.
            self.supervisor.progress("conductor")
            due = [passed_at + every, reclaimed_at + reclaim_every]
            if shared is not None:
                due.append(refreshed_at + TICK)
            if sending:
                due.append(self._progress_at + PROGRESS_EVERY)
            timeout = max(0.0, min(due) - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def _seed_limits(self, store: Store, config: Config) -> None:
        """Rebuild the counters that span days, so a restart resets no quota or warm-up day."""
        assert self.limiter is not None
        since = time.time() - 86400
        for sid in config.services:
            starts = await store.sent_starts(sid, since)
            first = await store.first_send_day(sid)
            self.limiter.seed_service(sid, starts, first)
        for cid in config.campaigns:
            self.limiter.seed_campaign(cid, await store.campaign_starts(cid, since))

    def _auto_pause(self, campaign_id: str, reason: str) -> None:
        async def pause() -> None:
            assert self.store is not None
            await self.store.set_campaign_state(campaign_id, "paused", reason)
            log.error("campaign %s %s", campaign_id, reason)
            self.poke()

        self.supervisor.spawn(f"auto-pause-{campaign_id}", pause())

    # ------------------------------------------------------------ used by the API

    async def set_state(self, campaign_id: str, action: str) -> str:
        """pause / resume / stop, written to the database (campaigns/control.py); idempotent."""
        assert self.store is not None
        state = await control.set_state(self.store, campaign_id, action)
        if self.dispatcher and action in ("pause", "stop"):
            self.dispatcher.deactivate(campaign_id)
        self.poke()
        return state

    # ------------------------------------------------------------ web.ports.DaemonView

    async def control(self, campaign_id: str, action: str) -> str:
        return await self.set_state(campaign_id, action)

    async def retry(self, campaign_id: str, statuses: Sequence[str]) -> int:
        assert self.store is not None
        count = await control.retry(self.store, campaign_id, statuses, now=time.time())
        self.poke()
        return count

    def wake(self) -> None:
        self.poke()

    def health(self) -> tuple[bool, str]:
        if self.run_state != "running":
            return False, f"campaignd is {self.run_state}"
        return self._engine_health()

    def _engine_health(self) -> tuple[bool, str]:
        """Can the engine make progress? (Whatever the run state: draining still pings.)"""
        if self.store is not None and not self.store.healthy:
            return False, self.store.health
        failing = self.supervisor.failing()
        if failing:
            loop = failing[0]
            return (
                False,
                f"the {loop.name} loop keeps failing ({loop.failures}×): {loop.last_error}",
            )
        now = time.time()
        for name, busy in (
            ("conductor", True),
            ("dispatcher", bool(self.dispatcher and self.dispatcher.active)),
        ):
            watched = self.supervisor.loops.get(name)
            if watched is None or not busy or watched.state != "running":
                continue
            since = max(watched.last_progress, watched.started_at)
            if now - since > STALLED_AFTER:
                return False, f"the {name} loop has made no progress for {now - since:.0f}s"
        return True, ""

    def loops_snapshot(self) -> dict[str, dict[str, Any]]:
        return self.supervisor.snapshot()

    def limits_snapshot(self, now: float) -> Mapping[str, Any]:
        return self.limiter.snapshot(now) if self.limiter else {}

    def in_flight(self, service_id: str | None = None) -> int:
        if self.dispatcher is None:
            return 0
        if service_id is None:
            return self.dispatcher.inflight()
        return self.dispatcher.inflight_of(service_id)

    def breaker_snapshot(self, service_id: str, now: float) -> dict[str, object] | None:
        breaker = self.dispatcher.breakers.get(service_id) if self.dispatcher else None
        return breaker.snapshot(now) if breaker is not None else None

    def campaign_notes(
        self, campaign_id: str, row: CampaignRow | None, now: float
    ) -> dict[str, Any]:
        return self.conductor.describe(campaign_id, row, now) if self.conductor else {}

    def enroll_error(self, campaign_id: str) -> str | None:
        return self.conductor.enroll_errors.get(campaign_id) if self.conductor else None

    async def test_service(self, service_id: str, to: str | None) -> ServiceTestReport:
        assert self.config is not None
        return await test_service(service_id, self.config.services[service_id], to=to)

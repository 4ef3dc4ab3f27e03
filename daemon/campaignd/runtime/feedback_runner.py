"""Feedback inside the daemon: mailbox readers, the one event path, and deliverability guards.

The runner owns the tasks that read ``feedback:`` sources (a Maildir, an IMAP folder), hands
every mail and every verified webhook event to ``events.apply_feedback``, and watches each
guarded campaign's bounce and complaint rates. It follows the daemon's config: when a reload
changes ``feedback:`` the readers are replaced; VERP patterns and guards are read from the
current config at every use. It holds no business logic of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from ..config.model import Config, ImapFeedback, MaildirSource
from ..config.secrets import resolve_secret
from ..errors import SecretError
from ..feedback.apply import Applied, apply_all
from ..feedback.event import FeedbackEvent
from ..feedback.guard import guard_reason
from ..feedback.imap import ImapReader
from ..feedback.maildir import RESCAN, MaildirReader
from ..feedback.recognize import recognize
from ..queue.store import Store
from ..tokens.links import LinkSigner
from ..tokens.verp import MultiVerp, decoder_for, signing_key
from .supervisor import Supervisor

__all__ = ["FeedbackRunner"]

log = logging.getLogger("campaignd.feedback")

CONFIG_POLL: Final = 1.0  # seconds between looks at the daemon's config generation
GUARD_MIN: Final = 1.0  # seconds: guards are checked at most this often …
GUARD_MAX: Final = 30.0  # … and at least this often while a campaign is sending

Reader = MaildirReader | ImapReader
Spec = MaildirSource | ImapFeedback


class FeedbackRunner:
    def __init__(
        self,
        store: Store,
        config: Callable[[], Config | None],
        *,
        signer: LinkSigner,
        on_pause: Callable[[str, str], object],
        clock: Callable[[], float] = time.time,
        rescan: float = RESCAN,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self._key = signing_key(signer)
        self.on_pause = on_pause
        self.clock = clock
        self.rescan = rescan
        self.readers: dict[Spec, Reader] = {}
        # The daemon's supervisor restarts a source or loop that fails (runtime/supervisor.py).
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self._tasks: dict[Spec, str] = {}  # source → its supervised loop's name
        self._loops = ("feedback-config", "feedback-guards")
        self._generation: int | None = None
        self._guard_wake = asyncio.Event()
        self._pausing: set[str] = set()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._sync_sources()
        self.supervisor.start("feedback-config", self._follow_config)
        self.supervisor.start("feedback-guards", self._guard_loop)

    async def close(self) -> None:
        await self.supervisor.stop([*self._loops, *self._tasks.values()])
        self._tasks.clear()

    async def _follow_config(self) -> None:
        while True:
            await asyncio.sleep(CONFIG_POLL)
            config = self.config()
            if config is not None and config.generation != self._generation:
                self._sync_sources()
            self.supervisor.progress("feedback-config")

    def _sync_sources(self) -> None:
        """Start readers for new ``feedback:`` entries, stop those that are gone."""
        config = self.config()
        if config is None:
            return
        self._generation = config.generation
        wanted = list(dict.fromkeys(config.settings.feedback))
        for spec in [s for s in self._tasks if s not in wanted]:
            self.supervisor.cancel(self._tasks.pop(spec))
            self.readers.pop(spec, None)
            log.info("feedback source %s removed", _describe(spec))
        for spec in wanted:
            if spec in self._tasks:
                continue
            reader = self._reader(config, spec)
            self.readers[spec] = reader
            name = f"feedback-{reader.name}"
            self.supervisor.start(name, reader.run)
            self._tasks[spec] = name
            log.info("feedback source %s started", reader.name)

    def _reader(self, config: Config, spec: Spec) -> Reader:
        if isinstance(spec, MaildirSource):
            return MaildirReader(config.path(spec.maildir), self.handle_mail, rescan=self.rescan)
        imap = spec.imap
        ref = imap.secret_ref("password")

        def password() -> str:
            # Resolved at each login, so a rotated secret file applies on the next reconnect.
            if ref is None:
                raise SecretError(
                    f"feedback imap {imap.username}@{imap.host}: no password — add password_env, "
                    "password_file or password_credential"
                )
            return resolve_secret(ref)

        return ImapReader(imap, self.handle_mail, password=password, root=config.root)

    # ------------------------------------------------------------ the event path

    def verp(self) -> MultiVerp | None:
        config = self.config()
        if config is None:
            return None
        return decoder_for(self._key, (s.return_path or "" for s in config.services.values()))

    async def handle_mail(self, raw: bytes, source: str) -> bool:
        """Recognise one received mail and apply what it says; True once it may be filed."""
        now = self.clock()
        events = recognize(
            raw, source=source, now=datetime.fromtimestamp(now, UTC), verp=self.verp()
        )
        results = await self.apply(events, authenticated=False)
        return any(r.handled for r in results)

    async def apply(self, events: Sequence[FeedbackEvent], *, authenticated: bool) -> list[Applied]:
        """Apply events from any source; signed webhooks pass ``authenticated=True``."""
        results = await apply_all(self.store, events, authenticated=authenticated, now=self.clock())
        if any(
            r.result == "applied" and r.event.kind in ("bounced", "complained") for r in results
        ):
            self._guard_wake.set()
        return results

    # ------------------------------------------------------------ guards

    async def _guard_loop(self) -> None:
        interval = GUARD_MIN
        last = -GUARD_MIN
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._guard_wake.wait(), timeout=interval)
            self._guard_wake.clear()
            # Woken by a burst of bounces: still at most one pass per GUARD_MIN.
            gap = GUARD_MIN - (time.monotonic() - last)
            if gap > 0:
                await asyncio.sleep(gap)
            last = time.monotonic()
            await self.check_guards()  # a failure: the supervisor logs it and restarts the loop
            self.supervisor.progress("feedback-guards")
            # The counts scan each guarded campaign's rows: on a large queue, look less often.
            spent = time.monotonic() - last
            interval = min(max(GUARD_MIN, spent * 20), GUARD_MAX)

    async def check_guards(self) -> list[str]:
        """Pause every sending campaign whose rates crossed its guard; returns their ids."""
        config = self.config()
        if config is None:
            return []
        paused: list[str] = []
        for cid, campaign in config.campaigns.items():
            guard = campaign.effective_guard
            if guard is None:
                continue
            row = await self.store.get_campaign(cid)
            if row is None or row.state not in ("sending", "waiting"):
                self._pausing.discard(cid)
                continue
            if cid in self._pausing:
                continue
            reason = guard_reason(cid, guard, await self.store.guard_counts(cid))
            if reason is not None:
                self._pausing.add(cid)  # on_pause logs the reason
                self.on_pause(cid, reason)
                paused.append(cid)
        return paused

    # ------------------------------------------------------------ status

    async def status(self) -> dict[str, Any]:
        counts = await self.store.unlinked_event_counts()
        return {
            "unmatched": counts.get("unmatched", 0),
            "auto_replies": counts.get("auto_reply", 0),
            "sources": [r.stats.as_dict() for r in self.readers.values()],
        }


def _describe(spec: Spec) -> str:
    if isinstance(spec, MaildirSource):
        return f"maildir:{spec.maildir}"
    return f"imap:{spec.imap.username}@{spec.imap.host}"

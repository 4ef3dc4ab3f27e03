"""Helpers for pacing tests measured at a real aiosmtpd server (import from any suite):
a relay that throttles like Postfix, the worst count in any window, campaignd roots."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.system.harness import TEMPLATE, recipients_csv, write_root

from .servers import RecordingServer, Rule, Stage


class ThrottlingRelay(RecordingServer):
    """Accepts at most ``limit`` MAIL FROM per sliding ``window`` seconds; past that it
    answers ``450 4.7.1 Error: too much mail from …`` as Postfix's anvil limits do.
    ``attempts`` holds when each MAIL FROM arrived, ``rejected`` the refused ones."""

    TOO_MUCH = "450 4.7.1 Error: too much mail from 127.0.0.1"

    def __init__(self, *, limit: int, window: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.limit = limit
        self.window = window
        self.attempts: list[float] = []
        self.rejected: list[float] = []
        self._accepted: deque[float] = deque()
        self._relay_lock = threading.Lock()

    def _take(self, stage: Stage, addresses: list[str]) -> Rule | None:
        if stage != "mail":
            return super()._take(stage, addresses)
        now = time.time()
        with self._relay_lock:
            self.attempts.append(now)
            while self._accepted and self._accepted[0] <= now - self.window:
                self._accepted.popleft()
            if len(self._accepted) >= self.limit:
                self.rejected.append(now)
                return Rule("mail", "reply", self.TOO_MUCH, None, None)
            self._accepted.append(now)
        return super()._take(stage, addresses)


def most_in_window(times: Sequence[float], width: float) -> int:
    """Most of ``times`` inside any half-open interval [t, t + width)."""
    times = sorted(times)
    j = best = 0
    for i, t in enumerate(times):
        while times[j] + width <= t:
            j += 1
        best = max(best, i - j + 1)
    return best


def pacing_root(
    root: Path,
    port: int,
    *,
    recipients: int,
    rate: str,
    max_connections: int = 4,
    campaign_extra: str = "",
    retry: str = "{backoff: 5m, max_backoff: 4h, give_up_after: 2d}",
) -> Path:
    """A config root: one service at ``port`` with ``rate``, one campaign of ``recipients``.
    The default retry is the real one (5 min backoff), so a message deferred on its own
    backoff would visibly stall the campaign."""
    return write_root(
        root,
        {
            "campaignd.yaml": "timezone: UTC\ndrain_timeout: 10s\n",
            "services.d/relay.yaml": (
                f'from: "Acme <news@acme.test>"\nhost: 127.0.0.1\nport: {port}\n'
                f"security: none\ntimeout: 5s\nmax_connections: {max_connections}\n"
                f"retry: {retry}\nrate: {rate}\n"
            ),
            "templates.d/hello.yaml": TEMPLATE,
            "campaigns.d/news.yaml": (
                "kind: transactional\naudience: lists/people.csv\nservices: [relay]\n"
                f"template: hello\n{campaign_extra}"
            ),
            "lists/people.csv": recipients_csv(recipients),
        },
    )

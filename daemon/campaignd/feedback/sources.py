"""What the feedback mailbox readers share: the handler they call and the stats they keep.

A reader hands each mail's bytes to a ``MailHandler`` (the runner's: recognise, apply) and
files the mail away only when the handler says it was handled; anything else stays where it
was, counted as unmatched (SPEC §7).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["MailHandler", "SourceState", "SourceStats"]

MailHandler = Callable[[bytes, str], Awaitable[bool]]
"""``(raw mail, source name) → handled``; an exception means "try again later"."""

SourceState = Literal[
    "starting", "connected", "watching", "idle", "polling", "reconnecting", "error", "stopped"
]


@dataclass
class SourceStats:
    """A reader's health and tallies, for ``/api/status`` (reset when the daemon restarts)."""

    name: str
    state: SourceState = "starting"
    handled: int = 0
    unmatched: int = 0
    errors: int = 0
    last_error: str | None = None
    last_mail_at: float | None = None

    def mail(self, handled: bool) -> None:
        self.last_mail_at = time.time()
        if handled:
            self.handled += 1
        else:
            self.unmatched += 1

    def failed(self, message: str) -> None:
        self.errors += 1
        self.last_error = message

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "state": self.state,
            "handled": self.handled,
            "unmatched": self.unmatched,
            "errors": self.errors,
            "last_error": self.last_error,
            "last_mail_at": self.last_mail_at,
        }

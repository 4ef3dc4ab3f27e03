"""The one shape every feedback source turns into (SPEC §7), and how its dedupe key is made.

A bounce mail, an ARF complaint, a reply, an SES notification and a SendGrid webhook all become
``FeedbackEvent``s; the consumer applies them to the message and the recipient without caring
where they came from. ``dedupe_key`` makes that idempotent: the same mail fetched twice, or the
same webhook retried by the provider, yields the same keys, so recording a key once is enough.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, get_args

__all__ = ["KINDS", "FeedbackEvent", "Kind", "make_dedupe_key"]

Kind = Literal[
    "bounced",  # a report that a message failed for good (5.x.x) — suppress per §7
    "deferred_bounce",  # a delay or temporary-failure report (4.x.x) — recorded only
    "complained",  # ARF / ESP spam complaint
    "replied",  # a mail answering one of ours (match ``candidates`` against sent Message-IDs)
    "auto_reply",  # out-of-office and other RFC 3834 auto-responses: counted, nothing else
    "unsubscribed",
    "delivered",
    "opened",
    "clicked",
    "unmatched",  # understood as nothing above: left in place and counted
]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)
DETAIL_LIMIT: Final = 500  # characters of provider text kept; diagnostics can be whole pages


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One thing that happened to one (recipient, message), as far as the source tells.

    ``message_id`` is the Message-ID we sent, without angle brackets; ``message_ref`` is our
    message row id when a VERP token named it — the most reliable link, since it survives a
    mangled report. Either or both may be unknown. ``permanent`` is true only for 5.x.x
    failures; it does not say *why* (a 5.7.1 policy block is permanent too), so a consumer that
    suppresses only bad addresses looks at ``status`` as ``delivery.classify`` does.
    """

    kind: Kind
    recipient: str | None
    message_id: str | None
    message_ref: int | None
    detail: str
    status: str | None
    permanent: bool
    at: datetime
    source: str
    dedupe_key: str
    # For "replied"/"auto_reply": every Message-ID the mail refers to, nearest first
    # (``message_id`` is the first); the caller keeps the first that it sent.
    candidates: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown feedback kind {self.kind!r}")
        if self.at.tzinfo is None:
            # Naive times are ambiguous once stored; every source here knows its zone.
            raise ValueError("FeedbackEvent.at must be timezone-aware")


def make_dedupe_key(*parts: object) -> str:
    """SHA-256 over the parts, length-prefixed so ("ab", "c") and ("a", "bc") differ."""
    h = hashlib.sha256()
    for part in parts:
        raw = b"\xff" if part is None else str(part).encode("utf-8", "surrogateescape")
        h.update(len(raw).to_bytes(4, "big"))
        h.update(raw)
    return h.hexdigest()

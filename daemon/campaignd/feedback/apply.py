"""The one event path (SPEC §7): a ``FeedbackEvent`` from any source, applied exactly once.

Bounce mail, complaint reports, replies, auto-replies and ESP webhooks all arrive as
``feedback.FeedbackEvent``. ``apply_feedback`` finds the message it is about, then records it
through ``Store.add_event`` — one transaction that writes the event row, stamps the message
(``replied_at``, ``complained_at``, …), changes its status and suppresses the address, and does
nothing at all when the event's dedupe key was seen before. So the same mail read twice, or the
same webhook retried by the provider, changes nothing the second time.

Matching, most certain first:

1. ``message_ref``: our row id from a VERP return path — signed, so it cannot be forged, and it
   survives a mangled report;
2. for replies and auto-replies, the Message-IDs the mail refers to (nearest first);
3. the Message-ID we sent, quoted by a DSN, an ARF report or a webhook;
4. for authenticated events only (signed webhooks), the newest message sent to the recipient:
   some providers do not echo our Message-ID.

Effects, decided by the pure ``plan_event``:

| kind | matched message | address |
|---|---|---|
| bounced, 5.1.x (or a user-unknown text) | status ``bounced`` | suppressed |
| bounced, anything else (policy block, …) | status ``failed`` | kept |
| deferred_bounce (4.x.x), delivered | recorded | kept |
| complained, unsubscribed | counter stamped | suppressed |
| replied, opened, clicked | counter stamped (feeds ``unless:``) | kept |
| auto_reply | counted | kept |

An event that matches no message we sent is recorded as ``unmatched`` (counted in
``/api/status``). It suppresses nothing unless it is authenticated: anyone can mail a forged
bounce to the feedback mailbox, but only the ESP can sign a webhook.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal, Protocol

from ..delivery.classify import classify
from ..queue.rows import EventIn, MessageRow
from .event import FeedbackEvent

__all__ = [
    "MATCH_WINDOW",
    "Applied",
    "EventStore",
    "Result",
    "apply_all",
    "apply_feedback",
    "match_message",
    "plan_event",
    "suppresses_address",
]

log = logging.getLogger("campaignd.events")

MATCH_WINDOW: Final = timedelta(days=30)
"""How far back a recipient-only match (signed webhooks without our Message-ID) looks."""

# A later report may settle these; queued/sending rows belong to the dispatcher right now, and
# bounced/suppressed/skipped are already final for a stronger reason.
_REPLACEABLE: Final = frozenset({"sent", "deferred", "uncertain", "failed"})
_SUPPRESSING: Final = frozenset({"complained", "unsubscribed"})

# Words of a permanent failure that is not about the address: policy, reputation, content, space.
_NOT_THE_ADDRESS: Final = re.compile(
    r"policy|spam|block|blacklist|denylist|reputation|abuse|rbl|dnsbl|virus|content"
    r"|denied|not permitted|not allowed|quota|mailbox (is )?full|insufficient|too large",
    re.IGNORECASE,
)

Result = Literal["applied", "duplicate", "counted", "unmatched"]


class EventStore(Protocol):
    """What applying feedback needs from the database (``queue.Store`` implements it)."""

    async def get_message(self, message: int) -> MessageRow | None: ...
    async def find_by_message_id(self, message_id: str) -> MessageRow | None: ...
    async def latest_sent_to(self, recipient: str, *, since: float) -> MessageRow | None: ...
    async def add_event(self, ev: EventIn) -> bool: ...


@dataclass(frozen=True, slots=True)
class Applied:
    """What became of one event.

    ``applied``: matched, and its effects are in the database now; ``duplicate``: matched, but
    applied before (nothing changed); ``counted``: an auto-reply, counted and otherwise ignored;
    ``unmatched``: no message of ours — counted (once per dedupe key) and, for mail, left where
    it is.
    """

    event: FeedbackEvent
    result: Result
    message: int | None = None
    campaign_id: str | None = None
    suppressed: bool = False

    @property
    def handled(self) -> bool:
        """Whether the mail carrying this event may be filed away (maildir cur/, done_folder)."""
        return self.result != "unmatched"


def suppresses_address(ev: FeedbackEvent) -> bool:
    """Whether a bounce says the *address* is bad (5.1.x, or user-unknown words), not a block.

    With a status code, the same rule as a 5xx at RCPT time (``delivery.classify``): a policy
    refusal (5.7.1 spam block, 5.2.2 mailbox full, …) fails the message but keeps the address,
    since a later message may well get through.
    """
    if ev.kind != "bounced" or not ev.permanent:
        return False
    if ev.status is not None:
        return ev.status.startswith("5.") and (
            classify(550, f"{ev.status} {ev.detail}", stage="rcpt").kind == "bounced"
        )
    # No status code at all (a prose bounce, a mangled report to our VERP address): a final
    # failure report is taken to be about the address unless it reads like a refusal.
    return not _NOT_THE_ADDRESS.search(ev.detail)


def _row(
    ev: FeedbackEvent,
    kind: str,
    row: MessageRow | None,
    *,
    detail: str,
    status: str | None = None,
    suppress: bool = False,
    link: bool = True,
    recipient: str | None = None,
) -> EventIn:
    """The event row for ``ev``; ``link=False`` keeps it off the message (counted apart)."""
    return EventIn(
        kind=kind,
        source=ev.source,
        at=ev.at.timestamp(),
        dedupe=ev.dedupe_key,
        message=row.id if row is not None and link else None,
        campaign_id=row.campaign_id if row is not None else None,
        recipient=row.recipient if row is not None else recipient,
        service=row.service if row is not None else None,
        detail=detail,
        enhanced=ev.status,
        status=status,
        suppress=suppress,
    )


def plan_event(ev: FeedbackEvent, row: MessageRow | None, *, authenticated: bool) -> EventIn:
    """The event row (with its effects) to record for ``ev`` matched to ``row`` — pure."""
    if row is None:
        # Only a signed webhook may suppress an address we never sent to (a recipient's own
        # unsubscribe or complaint through the ESP, a hard bounce of mail sent elsewhere).
        suppress = (
            authenticated
            and ev.recipient is not None
            and (ev.kind in _SUPPRESSING or suppresses_address(ev))
        )
        detail = ev.detail if ev.kind in ("auto_reply", "unmatched") else f"{ev.kind}: {ev.detail}"
        if suppress:
            detail += " (address suppressed: the event was signed)"
        return _row(
            ev,
            "auto_reply" if ev.kind == "auto_reply" else "unmatched",
            None,
            detail=detail,
            suppress=suppress,
            recipient=ev.recipient.lower() if ev.recipient else None,
        )
    if ev.kind == "auto_reply":
        # Kept off the message row: an out-of-office says nothing about the message, and
        # ``message IS NULL`` keeps counting these on an index.
        return _row(ev, "auto_reply", row, detail=f"auto-reply to message {row.id}: {ev.detail}",
                    link=False)  # fmt: skip
    if ev.kind == "unmatched":  # understood as nothing actionable (an ARF "not-spam" report)
        return _row(ev, "unmatched", row, detail=ev.detail, link=False)
    replaceable = row.status in _REPLACEABLE
    if ev.kind == "bounced":
        if suppresses_address(ev):
            keep = replaceable or row.status == "bounced"
            return _row(ev, "bounced", row, detail=ev.detail, suppress=True,
                        status="bounced" if keep else None)  # fmt: skip
        # A policy block: final for this message, but the address may take the next one.
        return _row(ev, "failed", row, detail=ev.detail, status="failed" if replaceable else None)
    # complained/unsubscribed/replied/opened/clicked stamp the message; deferred_bounce
    # (4.x.x) and delivered are only recorded.
    return _row(ev, ev.kind, row, detail=ev.detail, suppress=ev.kind in _SUPPRESSING)


async def match_message(
    store: EventStore, ev: FeedbackEvent, *, authenticated: bool, now: float
) -> MessageRow | None:
    """The message of ours ``ev`` is about, or None (see the module docstring for the order)."""
    if ev.message_ref is not None:
        row = await store.get_message(ev.message_ref)
        if row is not None:
            return row
    ids = ev.candidates if ev.kind in ("replied", "auto_reply") and ev.candidates else ()
    if not ids and ev.message_id:
        ids = (ev.message_id,)
    for message_id in ids:
        row = await store.find_by_message_id(message_id)
        if row is not None:
            return row
    if authenticated and ev.recipient and ev.kind not in ("replied", "auto_reply", "unmatched"):
        return await store.latest_sent_to(ev.recipient, since=now - MATCH_WINDOW.total_seconds())
    return None


async def apply_feedback(
    store: EventStore, ev: FeedbackEvent, *, authenticated: bool, now: float
) -> Applied:
    """Match ``ev`` and apply it once; the result says what happened."""
    row = await match_message(store, ev, authenticated=authenticated, now=now)
    planned = plan_event(ev, row, authenticated=authenticated)
    new = await store.add_event(planned)
    if row is None:
        if new:
            log.info("unmatched feedback from %s: %s", ev.source, planned.detail)
        return Applied(ev, "unmatched", suppressed=new and planned.suppress)
    if ev.kind == "auto_reply":
        return Applied(ev, "counted", row.id, row.campaign_id)
    if ev.kind == "unmatched":
        return Applied(ev, "unmatched", row.id, row.campaign_id)
    if not new:
        return Applied(ev, "duplicate", row.id, row.campaign_id)
    if planned.suppress:
        log.info(
            "%s: %s (campaign %s) suppressed — %s",
            ev.kind,
            row.recipient,
            row.campaign_id,
            planned.detail,
        )
    return Applied(ev, "applied", row.id, row.campaign_id, suppressed=planned.suppress)


async def apply_all(
    store: EventStore, events: Iterable[FeedbackEvent], *, authenticated: bool, now: float
) -> list[Applied]:
    return [await apply_feedback(store, ev, authenticated=authenticated, now=now) for ev in events]

"""Postmark webhooks: HTTP basic auth check and event mapping.

Postmark signs nothing; the webhook URL carries credentials (``https://user:pass@host/…``)
that Postmark sends as ``Authorization: Basic …``. They are compared in constant time with the
configured ``basic_auth`` ("user:pass").
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from .dsn import status_code
from .esp import BadSignature, EventBuilder, bare_message_id, parse_time, text
from .event import FeedbackEvent, Kind

__all__ = ["postmark_events", "verify_postmark"]

# Bounce "Type" values (Postmark's bounce API). Hard: the address is bad; blocks and DMARC
# refusals are final for the message too, and the detail names the type for the operator.
# Types not listed (ManuallyDeactivated, Subscribe, ChallengeVerification, …) change nothing.
_HARD: Final = frozenset(
    {"HardBounce", "BadEmailAddress", "Blocked", "DMARCPolicy", "SpamNotification"}
)
_TIME_KEYS: Final = ("BouncedAt", "ReceivedAt", "DeliveredAt", "ChangedAt")
_SOFT: Final = frozenset({"SoftBounce", "Transient", "DnsError", "Unknown"})
_BOUNCE_KIND: Final[dict[str, Kind]] = {
    "AutoResponder": "auto_reply",
    "SpamComplaint": "complained",
    "Unsubscribe": "unsubscribed",
}


def verify_postmark(authorization: str | None, *, basic_auth: str) -> None:
    scheme, _, credentials = (authorization or "").strip().partition(" ")
    if scheme.lower() != "basic" or not credentials:
        raise BadSignature("Postmark webhook without HTTP basic credentials")
    try:
        given = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("Postmark basic credentials are not base64") from None
    if not hmac.compare_digest(given, basic_auth.encode("utf-8")):
        raise BadSignature("Postmark basic credentials do not match")


def postmark_events(
    payload: Mapping[str, Any],
    authorization: str | None,
    *,
    basic_auth: str,
    now: datetime,
) -> list[FeedbackEvent]:
    verify_postmark(authorization, basic_auth=basic_auth)
    out = EventBuilder("postmark")
    record = text(payload, "RecordType") or ""
    # Bounces and complaints have their own ID; other records are one per (message, type, time).
    when = next((v for k in _TIME_KEYS if (v := text(payload, k))), "")
    event_id = text(payload, "ID") or f"{text(payload, 'MessageID')}:{record}:{when}"
    recipient = text(payload, "Email") or text(payload, "Recipient")
    message_id = _our_message_id(payload)

    def add(kind: Kind, at_key: str, detail: str, *, status: str | None = None) -> None:
        out.add(
            event_id,
            kind,
            recipient=recipient,
            at=parse_time(payload.get(at_key), now),
            message_id=message_id,
            detail=detail,
            status=status,
            permanent=kind == "bounced",
        )

    if record == "Bounce":
        kind_name = text(payload, "Type") or "Unknown"
        words = text(payload, "Details") or text(payload, "Description") or kind_name
        status = status_code(words)
        if kind_name in _BOUNCE_KIND:
            add(_BOUNCE_KIND[kind_name], "BouncedAt", f"{kind_name}: {words}")
        elif kind_name in _HARD:
            add("bounced", "BouncedAt", f"{kind_name}: {words}", status=status)
        elif kind_name in _SOFT:
            add("deferred_bounce", "BouncedAt", f"{kind_name}: {words}", status=status)
    elif record == "SpamComplaint":
        add("complained", "BouncedAt", "spam complaint via Postmark")
    elif record == "Delivery":
        add("delivered", "DeliveredAt", text(payload, "Details") or "delivered")
    elif record == "Open":
        add("opened", "ReceivedAt", text(payload, "UserAgent") or "open")
    elif record == "Click":
        add("clicked", "ReceivedAt", text(payload, "OriginalLink") or "click")
    elif (
        record == "SubscriptionChange"
        and payload.get("SuppressSending") is True
        # Hard bounces and complaints also arrive as their own records; only a recipient's own
        # unsubscribe is news here.
        and text(payload, "SuppressionReason") == "ManualSuppression"
    ):
        add("unsubscribed", "ChangedAt", "unsubscribed via Postmark")
    return out.events


def _our_message_id(payload: Mapping[str, Any]) -> str | None:
    """Postmark's MessageID is its own; ours is in the Message-ID header when it is listed."""
    heads = payload.get("Headers")
    for h in heads if isinstance(heads, list) else ():
        if isinstance(h, dict) and (text(h, "Name") or "").lower() == "message-id":
            return bare_message_id(text(h, "Value"))
    return None

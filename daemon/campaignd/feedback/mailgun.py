"""Mailgun webhooks: HMAC signature check and event mapping.

Each POST is JSON ``{"signature": {"timestamp", "token", "signature"}, "event-data": {…}}``;
the signature is hex HMAC-SHA256 of ``timestamp ‖ token`` under the webhook signing key.
A signature older than ``MAX_SKEW`` is refused, which bounds the replay of a captured request
(and the dedupe key makes a replay inside the window harmless).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from ..tokens.verp import VerpDecoder
from .dsn import status_code
from .esp import BadPayload, BadSignature, EventBuilder, bare_message_id, parse_time, text
from .event import FeedbackEvent, Kind

__all__ = ["MAX_SKEW", "mailgun_events", "verify_mailgun"]

MAX_SKEW: Final = timedelta(minutes=10)


def verify_mailgun(signature: object, *, signing_key: str, now: datetime) -> None:
    if not isinstance(signature, dict):
        raise BadSignature("Mailgun webhook without a signature object")
    timestamp = text(signature, "timestamp") or ""
    token = text(signature, "token") or ""
    given = (text(signature, "signature") or "").lower()
    if not timestamp.isdigit() or not token or not given:
        raise BadSignature("Mailgun signature is missing timestamp, token or signature")
    # JSON can carry lone surrogates ("\udcff") and non-ASCII digits; neither is Mailgun's.
    if not (timestamp.isascii() and len(timestamp) <= 12 and token.isascii()):
        raise BadSignature("Mailgun signature timestamp or token is malformed")
    want = hmac.new(
        signing_key.encode("utf-8"), (timestamp + token).encode("ascii"), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(want.encode("ascii"), given.encode("utf-8", "replace")):
        raise BadSignature("Mailgun signature does not match")
    # Checked after the MAC so an unsigned request learns nothing about our clock.
    try:
        signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    except (OverflowError, OSError, ValueError):  # past year 9999
        raise BadSignature("Mailgun signature timestamp is not a time") from None
    if abs(now - signed_at) > MAX_SKEW:
        raise BadSignature(f"Mailgun signature timestamp {signed_at.isoformat()} is stale")


def mailgun_events(
    payload: Mapping[str, Any],
    *,
    signing_key: str,
    now: datetime,
    verp: VerpDecoder | None = None,
) -> list[FeedbackEvent]:
    verify_mailgun(payload.get("signature"), signing_key=signing_key, now=now)
    data = payload.get("event-data")
    if not isinstance(data, dict):
        raise BadPayload("Mailgun webhook without event-data")
    out = EventBuilder("mailgun")
    name = text(data, "event") or ""
    event_id = text(data, "id") or (text(payload["signature"], "token") or "")
    recipient = text(data, "recipient")
    at = parse_time(data.get("timestamp"), now)
    message = data.get("message")
    heads = message.get("headers") if isinstance(message, dict) else None
    message_id = bare_message_id(text(heads, "message-id")) if isinstance(heads, dict) else None
    envelope = data.get("envelope")
    sender = text(envelope, "sender") if isinstance(envelope, dict) else None
    ref = verp.decode(sender) if verp is not None and sender else None
    ds = data.get("delivery-status")
    ds = ds if isinstance(ds, dict) else {}
    diag = text(ds, "description") or text(ds, "message") or text(data, "reason") or name
    status = status_code(text(ds, "enhanced-code")) or status_code(diag)

    def add(kind: Kind, detail: str, *, permanent: bool = False) -> None:
        out.add(
            event_id,
            kind,
            recipient=recipient,
            at=at,
            message_id=message_id,
            message_ref=ref,
            detail=detail,
            status=status if kind in ("bounced", "deferred_bounce") else None,
            permanent=permanent,
        )

    if name == "failed":
        permanent = text(data, "severity") == "permanent"
        add("bounced" if permanent else "deferred_bounce", diag, permanent=permanent)
    elif name == "delivered":
        add("delivered", diag)
    elif name == "opened":
        add("opened", "open")
    elif name == "clicked":
        add("clicked", text(data, "url") or "click")
    elif name == "complained":
        add("complained", "complaint via Mailgun")
    elif name == "unsubscribed":
        add("unsubscribed", "unsubscribe via Mailgun")
    # accepted, rejected, stored and unknown future events change nothing here.
    return out.events

"""SendGrid Event Webhook: ECDSA signature check and event mapping.

SendGrid signs ``timestamp ‖ body`` (the exact bytes posted) with ECDSA P-256 / SHA-256; the
signature (base64 DER) and timestamp come in the ``X-Twilio-Email-Event-Webhook-Signature``
and ``…-Timestamp`` headers. The verification key is shown in the SendGrid console as base64
DER; a PEM copy works as well.

The signed timestamp must be within ``MAX_SKEW`` of our clock (checked after the signature, as
for Mailgun), so a captured request cannot be replayed later; inside the window the dedupe keys
make a replay harmless.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from .dsn import status_code
from .esp import (
    BadPayload,
    BadSignature,
    EventBuilder,
    bare_message_id,
    header_lookup,
    load_json,
    parse_time,
    text,
)
from .event import FeedbackEvent, Kind

__all__ = [
    "MAX_SKEW",
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "load_sendgrid_key",
    "sendgrid_events",
    "verify_sendgrid",
]

SIGNATURE_HEADER: Final = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER: Final = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_SKEW: Final = timedelta(minutes=10)

# "dropped" reasons say why SendGrid refused to send: its own suppression lists mirror ours.
_DROPPED: Final[dict[str, Kind]] = {
    "bounced address": "bounced",
    "invalid": "bounced",
    "unsubscribed address": "unsubscribed",
    "spam reporting address": "complained",
}


def load_sendgrid_key(public_key: str) -> ec.EllipticCurvePublicKey:
    """The configured verification key; ValueError saying what to paste when it is not one."""
    what = (
        "the SendGrid webhook public_key is not an EC public key — paste the "
        "'Verification Key' from Settings → Mail Settings → Event Webhook (base64 or PEM)"
    )
    try:
        if "-----BEGIN" in public_key:
            key = load_pem_public_key(public_key.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode("".join(public_key.split()), validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm, UnicodeEncodeError):
        raise ValueError(what) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError(what)
    return key


def verify_sendgrid(
    body: bytes, headers: Mapping[str, str], *, public_key: str, now: datetime | None = None
) -> None:
    """``BadSignature`` unless SendGrid signed ``timestamp ‖ body`` within ``MAX_SKEW`` of
    ``now`` (the current time if not given)."""
    key = load_sendgrid_key(public_key)
    signature = header_lookup(headers, SIGNATURE_HEADER)
    timestamp = header_lookup(headers, TIMESTAMP_HEADER)
    if not signature or not timestamp:
        raise BadSignature(f"SendGrid webhook without {SIGNATURE_HEADER} / {TIMESTAMP_HEADER}")
    # ASCII digits only: a header decoded with surrogate escapes must not reach .encode().
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise BadSignature("SendGrid timestamp is not a Unix time in seconds")
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("SendGrid signature is not base64") from None
    try:
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise BadSignature("SendGrid signature does not match the body") from None
    # Checked after the signature so an unsigned request learns nothing about our clock.
    try:
        signed_at = datetime.fromtimestamp(int(timestamp), tz=UTC)
    except (OverflowError, OSError, ValueError):  # past year 9999
        raise BadSignature("SendGrid signature timestamp is not a time") from None
    if abs((now or datetime.now(UTC)) - signed_at) > MAX_SKEW:
        raise BadSignature(f"SendGrid signature timestamp {signed_at.isoformat()} is stale")


def sendgrid_events(
    body: bytes, headers: Mapping[str, str], *, public_key: str, now: datetime
) -> list[FeedbackEvent]:
    """Verify one POST (the raw body, as signed) and map its batch of events."""
    verify_sendgrid(body, headers, public_key=public_key, now=now)
    batch = load_json(body)
    if not isinstance(batch, list):
        raise BadPayload("a SendGrid webhook body is a JSON array of events")
    out = EventBuilder("sendgrid")
    for item in batch:
        if isinstance(item, dict):
            _map_one(out, item, now)
    return out.events


def _map_one(out: EventBuilder, e: Mapping[str, Any], now: datetime) -> None:
    name = text(e, "event") or ""
    recipient = text(e, "email")
    at = parse_time(e.get("timestamp"), now)
    # sg_event_id is unique per event and kept across SendGrid's retries.
    event_id = text(e, "sg_event_id") or f"{text(e, 'sg_message_id')}:{name}:{e.get('timestamp')}"
    message_id = bare_message_id(text(e, "smtp-id"))
    reason = text(e, "reason") or text(e, "response") or name
    status = status_code(text(e, "status")) or status_code(reason)

    def add(kind: Kind, detail: str, *, status: str | None = None, permanent: bool = False) -> None:
        out.add(
            event_id,
            kind,
            recipient=recipient,
            at=at,
            message_id=message_id,
            detail=detail,
            status=status,
            permanent=permanent,
        )

    if name == "bounce":
        # type "blocked" is a policy refusal, "bounce" a bad address; both are final for the
        # message and the status tells the consumer which it was.
        kind_of = text(e, "type") or "bounce"
        add("bounced", f"{kind_of}: {reason}", status=status, permanent=True)
    elif name == "deferred":
        add("deferred_bounce", reason, status=status)
    elif name == "dropped":
        mapped = _DROPPED.get((text(e, "reason") or "").lower())
        if mapped is not None:
            add(mapped, f"dropped by SendGrid: {reason}", permanent=mapped == "bounced")
    elif name == "delivered":
        add("delivered", text(e, "response") or "delivered")
    elif name == "open":
        add("opened", text(e, "useragent") or "open")
    elif name == "click":
        add("clicked", text(e, "url") or "click")
    elif name == "spamreport":
        add("complained", "spam report via SendGrid")
    elif name in ("unsubscribe", "group_unsubscribe"):
        add("unsubscribed", f"{name} via SendGrid")
    # processed, group_resubscribe and unknown future events change nothing here.

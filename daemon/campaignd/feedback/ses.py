"""Amazon SES events delivered by SNS: signature check, subscription, and event mapping.

SNS signs a canonical string of the message's fields with the key of a certificate it serves
from ``https://sns.<region>.amazonaws.com/….pem``. Only such URLs are fetched, so the TLS
certificate of an AWS host vouches for the signing key (``fetch_cert`` must verify TLS, as
every ordinary HTTPS client does). SignatureVersion 1 is RSA-SHA1, 2 is RSA-SHA256.

SES publishes two JSON shapes: event publishing (``eventType``: Bounce, Complaint, Delivery,
DeliveryDelay, Open, Click, …) and identity notifications (``notificationType``: Bounce,
Complaint, Delivery). Both are read.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..tokens.verp import VerpDecoder
from .dsn import status_code
from .esp import (
    BadPayload,
    BadSignature,
    EventBuilder,
    bare_message_id,
    load_json,
    parse_time,
    text,
)
from .event import FeedbackEvent

__all__ = ["ConfirmSubscription", "check_sns_url", "ses_events", "verify_sns"]

_SNS_HOST: Final = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")
_NOTIFICATION_FIELDS: Final = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_FIELDS: Final = (
    "Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type",
)  # fmt: skip
_HASHES: Final[dict[str, Callable[[], hashes.HashAlgorithm]]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}


@dataclass(frozen=True, slots=True)
class ConfirmSubscription:
    """A verified SubscriptionConfirmation: GET ``url`` once to start receiving the topic."""

    url: str
    topic_arn: str


def check_sns_url(url: str, *, suffix: str = "") -> str:
    """``url`` if it is https on an SNS endpoint (and its path ends with ``suffix``)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadSignature(f"SNS URL {url!r} is not a URL") from None
    if (
        parts.scheme != "https"
        or parts.username is not None
        or parts.password is not None
        or port not in (None, 443)
        or not _SNS_HOST.fullmatch(parts.hostname or "")
        or not parts.path.endswith(suffix)
    ):
        raise BadSignature(f"SNS URL {url!r} is not https://sns.<region>.amazonaws.com/…")
    return url


def verify_sns(
    message: Mapping[str, Any],
    fetch_cert: Callable[[str], bytes],
    *,
    now: datetime | None = None,
) -> None:
    """Raise ``BadSignature`` unless SNS signed ``message``; with ``now``, the cert must be valid.

    Exceptions from ``fetch_cert`` (network trouble) pass through: that is not a bad
    signature, and answering 5xx makes SNS retry.
    """
    kind = text(message, "Type")
    fields = _NOTIFICATION_FIELDS if kind == "Notification" else _SUBSCRIPTION_FIELDS
    if kind not in ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"):
        raise BadSignature(f"SNS message type {kind!r} is not one SNS sends")
    algorithm = _HASHES.get(text(message, "SignatureVersion") or "")
    if algorithm is None:
        raise BadSignature("SNS SignatureVersion must be 1 or 2")
    cert_url = check_sns_url(text(message, "SigningCertURL") or "", suffix=".pem")
    try:
        signature = base64.b64decode(text(message, "Signature") or "", validate=True)
    except (binascii.Error, ValueError):
        raise BadSignature("SNS Signature is not base64") from None
    canonical = ""
    for name in fields:
        value = text(message, name)
        if value is None:
            if name == "Subject":  # the only optional field
                continue
            raise BadSignature(f"SNS message has no {name}")
        canonical += f"{name}\n{value}\n"
    try:
        cert = x509.load_pem_x509_certificate(fetch_cert(cert_url))
    except ValueError:
        raise BadSignature(f"{cert_url} did not serve a PEM certificate") from None
    if now is not None and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise BadSignature(f"the SNS signing certificate at {cert_url} is not valid now")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise BadSignature("the SNS signing certificate does not hold an RSA key")
    try:
        signed = canonical.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape: SNS never signed that
        raise BadSignature("SNS message fields are not valid Unicode") from None
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise BadSignature("SNS signature does not match the message") from None


def ses_events(
    message: Mapping[str, Any],
    fetch_cert: Callable[[str], bytes],
    *,
    topic_arn: str | None,
    now: datetime,
    verp: VerpDecoder | None = None,
) -> list[FeedbackEvent] | ConfirmSubscription:
    """Verify one SNS POST and map it; ``topic_arn`` (from ``webhooks.ses``) pins the topic."""
    verify_sns(message, fetch_cert, now=now)
    arn = text(message, "TopicArn") or ""
    if topic_arn is not None and arn != topic_arn:
        # Anyone can point their own topic at our URL; only the configured one is ours.
        raise BadSignature(f"SNS topic {arn!r} is not the configured {topic_arn!r}")
    kind = text(message, "Type")
    if kind == "SubscriptionConfirmation":
        return ConfirmSubscription(check_sns_url(text(message, "SubscribeURL") or ""), arn)
    if kind != "Notification":
        return []
    body = message.get("Message")
    try:
        payload = load_json(body) if isinstance(body, str) else None
    except BadPayload:
        return []  # SNS's own test notifications are plain text
    if not isinstance(payload, dict):
        return []
    sent_at = parse_time(text(message, "Timestamp"), now)
    return _map_ses(payload, text(message, "MessageId") or "", sent_at, verp)


def _map_ses(
    payload: Mapping[str, Any], event_id: str, default_at: datetime, verp: VerpDecoder | None
) -> list[FeedbackEvent]:
    kind = text(payload, "eventType") or text(payload, "notificationType") or ""
    mail = _dict(payload.get("mail"))
    message_id = _mail_message_id(mail)
    # SES keeps the MAIL FROM we gave it in mail.source, so a VERP token survives SES's own
    # bounce handling.
    source = text(mail, "source")
    ref = verp.decode(source) if verp is not None and source else None
    destination = [d for d in mail.get("destination") or () if isinstance(d, str)]
    only = destination[0] if len(destination) == 1 else None
    out = EventBuilder("ses")

    def at(section: Mapping[str, Any]) -> datetime:
        return parse_time(section.get("timestamp") or mail.get("timestamp"), default_at)

    if kind == "Bounce":
        bounce = _dict(payload.get("bounce"))
        permanent = text(bounce, "bounceType") == "Permanent"
        sub = text(bounce, "bounceSubType") or ""
        for r in _dicts(bounce.get("bouncedRecipients")):
            diag = text(r, "diagnosticCode") or f"{text(bounce, 'bounceType')} bounce ({sub})"
            out.add(
                event_id,
                "bounced" if permanent else "deferred_bounce",
                recipient=text(r, "emailAddress"),
                at=at(bounce),
                message_id=message_id,
                message_ref=ref,
                detail=diag,
                status=status_code(text(r, "status")) or status_code(diag),
                permanent=permanent,
            )
    elif kind == "DeliveryDelay":
        delay = _dict(payload.get("deliveryDelay"))
        for r in _dicts(delay.get("delayedRecipients")):
            diag = text(r, "diagnosticCode") or f"delayed ({text(delay, 'delayType')})"
            out.add(
                event_id,
                "deferred_bounce",
                recipient=text(r, "emailAddress"),
                at=at(delay),
                message_id=message_id,
                message_ref=ref,
                detail=diag,
                status=status_code(text(r, "status")) or status_code(diag),
            )
    elif kind == "Complaint":
        complaint = _dict(payload.get("complaint"))
        feedback = text(complaint, "complaintFeedbackType") or "abuse"
        if feedback != "not-spam":
            for r in _dicts(complaint.get("complainedRecipients")):
                out.add(
                    event_id,
                    "complained",
                    recipient=text(r, "emailAddress"),
                    at=at(complaint),
                    message_id=message_id,
                    message_ref=ref,
                    detail=f"{feedback} complaint via SES",
                )
    elif kind == "Delivery":
        delivery = _dict(payload.get("delivery"))
        for r in delivery.get("recipients") or ():
            if isinstance(r, str):
                out.add(
                    event_id,
                    "delivered",
                    recipient=r,
                    at=at(delivery),
                    message_id=message_id,
                    message_ref=ref,
                    detail=text(delivery, "smtpResponse") or "delivered",
                )
    elif kind in ("Open", "Click"):
        section = _dict(payload.get(kind.lower()))
        out.add(
            event_id,
            "opened" if kind == "Open" else "clicked",
            recipient=only,
            at=at(section),
            message_id=message_id,
            message_ref=ref,
            detail=text(section, "link") or text(section, "userAgent") or kind.lower(),
        )
    # Send, Reject, Rendering Failure, Subscription: nothing for the feedback loop.
    return out.events


def _mail_message_id(mail: Mapping[str, Any]) -> str | None:
    """Our Message-ID header; SES's own ``mail.messageId`` is not it."""
    for h in _dicts(mail.get("headers")):
        if (text(h, "name") or "").lower() == "message-id":
            return bare_message_id(text(h, "value"))
    return bare_message_id(text(_dict(mail.get("commonHeaders")), "messageId"))


def _dict(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

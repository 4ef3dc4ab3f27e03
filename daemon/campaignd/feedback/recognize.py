"""What one received feedback mail means: bounce, complaint, reply, auto-reply, or nothing.

The checks run from most to least certain, and the first that recognises the mail decides:

1. an ARF report (RFC 5965) — ``complained``;
2. a DSN (RFC 3464) that names recipients — ``bounced`` / ``deferred_bounce`` / ``delivered``;
3. a bounce in some older prose format (``flufl.bounce``), if the mail looks like a bounce;
4. an auto-reply (RFC 3834 and the usual vendor signs) — ``auto_reply``, before replies, so
   an out-of-office never counts as an answer;
5. anything else sent to one of our VERP return paths — a bounce we could not read: only
   MTAs write to the envelope sender, and the token names the message;
6. a mail naming Message-IDs in ``In-Reply-To``/``References`` — ``replied``, with every
   candidate id for the caller to match against what it sent;
7. otherwise one ``unmatched`` event, so the mail is counted and left in place.

DSNs carry ``Auto-Submitted: auto-replied`` themselves (RFC 3464 §2), which is why reports
are recognised before auto-replies. Pure: parsing only, no I/O, never raises on bad mail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from email.utils import getaddresses

from ..tokens.verp import VerpDecoder
from .arf import parse_arf
from .autoreply import auto_reply_reason
from .dsn import DsnReport, parse_dsn, status_code
from .event import DETAIL_LIMIT, FeedbackEvent, Kind, make_dedupe_key
from .mailparse import (
    address_of,
    body_text,
    header,
    headers,
    mail_identity,
    mail_time,
    message_ids,
    parse_mail,
    referenced_ids,
)
from .nonstandard import diagnostic, looks_like_bounce, scan_prose_bounce, sounds_temporary
from .reports import ORIGINAL_TYPES, original_headers

__all__ = ["recognize", "referenced_ids"]

# Where the address a mail was delivered to shows up: the local MDA's Delivered-To and
# X-Original-To (Postfix), Envelope-To (Exim), X-Envelope-To (Sendmail, Courier), or To.
_DELIVERY_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")
_DSN_KINDS: dict[str, Kind] = {
    "failed": "bounced",
    "delayed": "deferred_bounce",
    "delivered": "delivered",
}
_INLINE_MSGID = re.compile(r"^\s*message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class _Mail:
    msg: Message
    identity: str
    source: str
    at: datetime
    verp_ref: int | None

    def events(self, specs: list[_Spec]) -> list[FeedbackEvent]:
        return [
            FeedbackEvent(
                kind=s.kind,
                recipient=s.recipient,
                message_id=s.message_id,
                message_ref=s.message_ref,
                detail=s.detail[:DETAIL_LIMIT],
                status=s.status,
                permanent=s.permanent,
                at=self.at,
                source=self.source,
                # The position keeps two reports about one address in one mail apart, and is
                # as stable as the mail: the same bytes parse the same way every time.
                dedupe_key=make_dedupe_key(
                    "mail", self.identity, i, s.kind, s.recipient, s.message_id, s.message_ref
                ),
                candidates=s.candidates,
            )
            for i, s in enumerate(specs)
        ]


@dataclass(frozen=True, slots=True)
class _Spec:
    kind: Kind
    recipient: str | None
    message_id: str | None
    message_ref: int | None
    detail: str
    status: str | None = None
    permanent: bool = False
    candidates: tuple[str, ...] = ()


def recognize(
    raw: bytes, *, source: str, now: datetime, verp: VerpDecoder | None
) -> list[FeedbackEvent]:
    """Classify one received mail; at least one event, ``unmatched`` when nothing fits."""
    msg = parse_mail(raw)
    mail = _Mail(
        msg=msg,
        identity=mail_identity(msg, raw),
        source=source,
        at=mail_time(msg, now),
        verp_ref=_verp_ref(verp, [v for h in _DELIVERY_HEADERS for v in headers(msg, h)]),
    )
    dsn = parse_dsn(msg)
    specs = (
        _complaint(mail, verp)
        or _dsn_bounces(mail, dsn, verp)
        or _prose_bounces(mail, dsn)
        or _auto_reply(mail)
        or _verp_bounce(mail, dsn)
        or _reply(mail)
    )
    if specs:
        return mail.events(specs)
    subject = header(msg, "Subject") or "(no subject)"
    return mail.events(
        [
            _Spec(
                "unmatched",
                _sender(msg),
                None,
                None,
                f"not a bounce, complaint, reply or auto-reply — Subject: {subject}",
            )
        ]
    )


def _complaint(mail: _Mail, verp: VerpDecoder | None) -> list[_Spec]:
    arf = parse_arf(mail.msg)
    if arf is None:
        return []
    ref = mail.verp_ref if mail.verp_ref is not None else _verp_ref(verp, arf.envelope_senders)
    if not arf.is_complaint:
        detail = (
            f"feedback report of type {arf.feedback_type!r} from {arf.reporter}: not a complaint"
        )
        return [_Spec("unmatched", arf.recipient, arf.original_message_id, ref, detail)]
    detail = f"{arf.feedback_type} report from {arf.reporter}"
    return [_Spec("complained", arf.recipient, arf.original_message_id, ref, detail)]


def _dsn_bounces(mail: _Mail, dsn: DsnReport | None, verp: VerpDecoder | None) -> list[_Spec]:
    if dsn is None or not dsn.recipients:
        return []
    ref = mail.verp_ref
    if ref is None and dsn.original is not None:
        ref = _verp_ref(verp, headers(dsn.original, "Return-Path"))
    specs = []
    for r in dsn.recipients:
        kind = _DSN_KINDS[r.outcome]
        specs.append(
            _Spec(
                kind,
                r.recipient,
                dsn.original_message_id,
                ref,
                r.detail,
                r.status,
                permanent=r.outcome == "failed",
            )
        )
    return specs


def _prose_bounces(mail: _Mail, dsn: DsnReport | None) -> list[_Spec]:
    if mail.verp_ref is None and not looks_like_bounce(mail.msg):
        return []
    found = scan_prose_bounce(mail.msg)
    if found is None:
        return []
    message_id = _returned_message_id(mail.msg, dsn)
    perm_status = found.status if found.status and found.status.startswith("5.") else None
    temp_status = found.status if found.status and found.status.startswith("4.") else None
    return [
        _Spec("bounced", a, message_id, mail.verp_ref, found.detail, perm_status, True)
        for a in sorted(found.permanent)
    ] + [
        _Spec("deferred_bounce", a, message_id, mail.verp_ref, found.detail, temp_status)
        for a in sorted(found.temporary)
    ]


def _auto_reply(mail: _Mail) -> list[_Spec]:
    reason = auto_reply_reason(mail.msg)
    if reason is None:
        return []
    ids = referenced_ids(mail.msg)
    first = ids[0] if ids else None
    return [_Spec("auto_reply", _sender(mail.msg), first, mail.verp_ref, reason, candidates=ids)]


def _verp_bounce(mail: _Mail, dsn: DsnReport | None) -> list[_Spec]:
    if mail.verp_ref is None:
        return []
    if referenced_ids(mail.msg) and not looks_like_bounce(mail.msg):
        return []  # a person answering the envelope sender: a reply, handled next
    text = body_text(mail.msg)
    status = status_code(text)
    temporary = (status or "").startswith("4.") or (
        status is None and sounds_temporary(mail.msg, text)
    )
    detail = "a report to the VERP return path that no parser understood: " + diagnostic(text)
    return [
        _Spec(
            "deferred_bounce" if temporary else "bounced",
            None,  # the token names the message row, and so its recipient
            _returned_message_id(mail.msg, dsn),
            mail.verp_ref,
            detail,
            status,
            permanent=not temporary,
        )
    ]


def _reply(mail: _Mail) -> list[_Spec]:
    ids = referenced_ids(mail.msg)
    if not ids:
        return []
    detail = f"reply — Subject: {header(mail.msg, 'Subject') or '(no subject)'}"
    return [_Spec("replied", _sender(mail.msg), ids[0], mail.verp_ref, detail, candidates=ids)]


def _sender(msg: Message) -> str | None:
    return address_of(header(msg, "From"))


def _verp_ref(verp: VerpDecoder | None, values: list[str] | tuple[str, ...]) -> int | None:
    if verp is None:
        return None
    for _, addr in getaddresses(list(values)):
        ref = verp.decode(addr) if addr else None
        if ref is not None:
            return ref
    return None


def _returned_message_id(msg: Message, dsn: DsnReport | None) -> str | None:
    """Our Message-ID in whatever copy of the original a bounce returned."""
    if dsn is not None and dsn.original_message_id:
        return dsn.original_message_id
    for part in msg.walk():
        if part.get_content_type() in ORIGINAL_TYPES:
            original = original_headers(part)
            ids = message_ids(header(original, "Message-ID")) if original is not None else []
            if ids:
                return ids[0]
    # Prose bounces often paste the original below the report, headers and all.
    found = _INLINE_MSGID.search(body_text(msg))
    if found:
        ids = message_ids(found.group(1))
        return ids[0] if ids else None
    return None

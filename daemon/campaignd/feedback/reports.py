"""Finding the machine-readable parts of a ``multipart/report`` (RFC 6522).

DSNs (RFC 3464) and ARF complaints (RFC 5965) share one layout: a human-readable part, a
machine-readable part (``message/delivery-status`` or ``message/feedback-report``), and the
original message or just its headers. Some relays wrap the report in another message or
forget the ``report-type`` parameter, so the parts are looked for wherever they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message

from .mailparse import parse_headers

__all__ = ["ORIGINAL_TYPES", "ReportParts", "field_blocks", "find_report", "original_headers"]

ORIGINAL_TYPES = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers")


@dataclass(frozen=True, slots=True)
class ReportParts:
    machine: Message  # the message/delivery-status or message/feedback-report part
    original: Message | None  # the returned original, headers at least, when included


def find_report(msg: Message, machine_type: str) -> ReportParts | None:
    for part in msg.walk():
        if not part.is_multipart():
            continue
        children = [c for c in part.get_payload() if isinstance(c, Message)]
        machine = next((c for c in children if c.get_content_type() == machine_type), None)
        if machine is None:
            continue
        original = next((c for c in children if c.get_content_type() in ORIGINAL_TYPES), None)
        return ReportParts(machine, original_headers(original) if original is not None else None)
    return None


def original_headers(part: Message) -> Message | None:
    """The headers of a returned original, whether sent whole or as text/rfc822-headers."""
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: the parser already made it a Message
        inner = payload[0] if payload else None
        return inner if isinstance(inner, Message) else None
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return None
    return parse_headers(raw.decode("utf-8", errors="replace"))


def field_blocks(machine: Message) -> list[Message]:
    """The blocks of ``Name: value`` fields in a report part, each as a header-only Message.

    The stdlib parser already splits ``message/delivery-status`` into blocks and reads
    ``message/feedback-report`` as one nested message; a part it left as text (an unusual
    transfer encoding) is split here on blank lines.
    """
    payload = machine.get_payload()
    if isinstance(payload, list):
        return [b for b in payload if isinstance(b, Message) and len(b.keys()) > 0]
    raw = machine.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return []
    text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n")
    blocks = [parse_headers(chunk + "\n") for chunk in text.split("\n\n") if chunk.strip()]
    return [b for b in blocks if len(b.keys()) > 0]

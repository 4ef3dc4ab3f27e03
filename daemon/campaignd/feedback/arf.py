"""RFC 5965 abuse reports (ARF): a recipient marked one of our messages as spam.

Mailbox providers (Yahoo's CFL, Microsoft's JMRP, AOL, …) send a ``multipart/report;
report-type=feedback-report`` with a ``message/feedback-report`` part and the original
message. Many redact the recipient, so the original's envelope sender (``Original-Mail-From``,
our VERP address) is often the only reliable link back to the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import Message
from typing import Final

from .mailparse import address_of, header, headers, message_ids
from .reports import field_blocks, find_report

__all__ = ["ArfReport", "parse_arf"]

# RFC 5965 §7.3 registry: these say "a person or filter objected to this message". Not here:
# "not-spam" (the opposite) and "auth-failure" (RFC 6591 DMARC/DKIM forensic reports, about
# authentication, not about the recipient's wishes).
COMPLAINT_TYPES: Final = frozenset({"abuse", "fraud", "virus", "other"})


@dataclass(frozen=True, slots=True)
class ArfReport:
    feedback_type: str
    is_complaint: bool
    recipient: str | None
    original_message_id: str | None
    reporter: str  # User-Agent of the report, else its From, for the operator
    envelope_senders: tuple[str, ...]  # where a VERP token may be found


def parse_arf(msg: Message) -> ArfReport | None:
    parts = find_report(msg, "message/feedback-report")
    if parts is None:
        return None
    blocks = field_blocks(parts.machine)
    fields = blocks[0] if blocks else Message()
    # Absent Feedback-Type is a malformed report; a report is still a complaint by default.
    feedback_type = (header(fields, "Feedback-Type") or "abuse").lower()
    original = parts.original
    recipient = address_of(header(fields, "Original-Rcpt-To"))
    senders = [v for v in headers(fields, "Original-Mail-From")]
    message_id = None
    if original is not None:
        recipient = recipient or address_of(header(original, "To"))
        senders += headers(original, "Return-Path")
        ids = message_ids(header(original, "Message-ID"))
        message_id = ids[0] if ids else None
    reporter = header(fields, "User-Agent") or header(msg, "From") or "unknown reporter"
    return ArfReport(
        feedback_type=feedback_type,
        is_complaint=feedback_type in COMPLAINT_TYPES,
        recipient=recipient,
        original_message_id=message_id,
        reporter=reporter,
        envelope_senders=tuple(senders),
    )

"""RFC 3464 delivery status notifications: who failed, how, and which message of ours it was.

A DSN's ``message/delivery-status`` part holds one per-message block and then one block per
recipient (``Final-Recipient``, ``Action``, ``Status``, ``Diagnostic-Code``). The returned
original (or its headers) carries the Message-ID we sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from typing import Literal

from .mailparse import address_of, body_text, header, message_ids, report_lines
from .reports import field_blocks, find_report

__all__ = ["DsnRecipient", "DsnReport", "parse_dsn", "status_code"]

Outcome = Literal["failed", "delayed", "delivered"]

# RFC 3463 class.subject.detail; taken from the start of Status or anywhere in a diagnostic.
_STATUS = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_DIAG_TYPE = re.compile(r"^\s*(smtp|x-[\w.-]+|[\w-]+)\s*;\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class DsnRecipient:
    recipient: str | None  # the address we sent to (Original-Recipient, else Final-Recipient)
    outcome: Outcome
    status: str | None  # enhanced status code, e.g. "5.1.1"
    detail: str


@dataclass(frozen=True, slots=True)
class DsnReport:
    recipients: tuple[DsnRecipient, ...]
    original_message_id: str | None
    original: Message | None  # headers of the returned original, for VERP lookups


def status_code(text: str | None) -> str | None:
    """The first RFC 3463 enhanced status code in ``text`` ("5.1.1"), or None."""
    if not text:
        return None
    found = _STATUS.search(text)
    return ".".join(found.groups()) if found else None


def parse_dsn(msg: Message) -> DsnReport | None:
    """The DSN in ``msg``, or None when it has no ``message/delivery-status`` part.

    A report whose status part names no recipient comes back with ``recipients=()``, so the
    caller can still use the returned original (a mangled report is not a missing one).
    """
    parts = find_report(msg, "message/delivery-status")
    if parts is None:
        return None
    text: list[str] = []  # the human-readable part, read only when a block needs it
    recipients = tuple(
        _recipient(block, msg, text)
        for block in field_blocks(parts.machine)
        if block.get("Final-Recipient") is not None or block.get("Original-Recipient") is not None
    )
    original_id = None
    if parts.original is not None:
        ids = message_ids(header(parts.original, "Message-ID"))
        original_id = ids[0] if ids else None
    return DsnReport(recipients, original_id, parts.original)


def _recipient(block: Message, msg: Message, text: list[str]) -> DsnRecipient:
    recipient = address_of(header(block, "Original-Recipient")) or address_of(
        header(block, "Final-Recipient")
    )
    action = (header(block, "Action") or "").lower().split(" ")[0]
    diagnostic = header(block, "Diagnostic-Code")
    status = status_code(header(block, "Status")) or status_code(diagnostic)
    if diagnostic:
        detail = _DIAG_TYPE.sub("", diagnostic)
    else:
        # No Diagnostic-Code (OpenSMTPD, PMDF, …): the reason is only in the human-readable
        # part ("email@example.net: Domain does not exist"), and with a generic Status: 5.0.0
        # it is what tells a dead address from a full mailbox.
        if not text:
            text.append(body_text(msg))
        detail = _said_about(text[0], recipient) or f"{action or 'no action'}"
    if status and status not in detail:
        detail = f"{status} {detail}"
    return DsnRecipient(recipient, _outcome(action, status), status, detail)


def _said_about(text: str, address: str | None) -> str | None:
    """What the report's prose says about ``address``: from the line naming it to the next
    blank line (the reason often sits on the lines below the address), on one line."""
    if not address:
        return None
    lines = report_lines(text)
    wanted = address.lower()
    for i, line in enumerate(lines):
        at = line.lower().find(wanted)
        if at < 0:
            continue
        said = [line[at + len(wanted) :].strip(" \t:>\"'")]
        for following in lines[i + 1 : i + 4]:
            if not following.strip():
                break
            said.append(following)
        flat = " ".join(" ".join(said).split())
        return flat[:300] if flat else None
    return None


def _outcome(action: str, status: str | None) -> Outcome:
    if action == "delayed":
        return "delayed"
    if action in ("delivered", "relayed", "expanded"):
        return "delivered"
    if action == "failed":
        # "failed" with 4.x.x is a message the MTA gave up on after temporary errors (queue
        # lifetime over): final for the message, but nothing proves the address is bad.
        return "delayed" if status and status.startswith("4.") else "failed"
    # No or an unknown Action: the status class is the best evidence left.
    if status and status.startswith("4."):
        return "delayed"
    if status and status.startswith("2."):
        return "delivered"
    return "failed"

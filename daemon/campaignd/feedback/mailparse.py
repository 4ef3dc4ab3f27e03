"""Reading received mail defensively: headers, addresses, Message-IDs, dates and body text.

Feedback mail is written by every MTA and mail client there is, many of them sloppily, so
nothing here raises on bad input: a header that cannot be decoded is read as raw text, an
address that does not parse is ``None``. Messages are parsed with the ``compat32`` policy,
which never raises while reading headers (the modern policy can, on malformed address lists).
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import re
from datetime import UTC, datetime, timedelta
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from typing import Final

__all__ = [
    "address_of",
    "body_text",
    "header",
    "headers",
    "mail_identity",
    "mail_time",
    "message_ids",
    "parse_headers",
    "parse_mail",
    "referenced_ids",
    "report_lines",
]

TEXT_LIMIT: Final = 64 * 1024  # characters of body text scanned; a bounce says it early
# A report dated this far before its arrival is a wrong clock, not an old event.
MAX_AGE: Final = timedelta(days=30)

_MSGID = re.compile(r"<([^<>\s]+)>")
_ADDR_TYPE = re.compile(r"^\s*(rfc822|x-[\w.-]+|utf-8|unknown)\s*;", re.IGNORECASE)
_BARE_MSGID = re.compile(r"^[^<>\s@]+@[^<>\s@]+$")
# What mail readers that could not split a MIME mail leave in its text: part headers,
# boundaries and the "this is a MIME message" preamble. None of it is a report's words.
_MIME_HEADER: Final = re.compile(
    r"^\s*(content-[\w-]+|mime-version|x-mime-autoconverted)\s*:", re.IGNORECASE
)
_BOUNDARY: Final = re.compile(r"--[^\s]{6,}")
_PREAMBLE: Final = re.compile(
    r"this\s+is\s+a\s+multi-?part\s+message\s+in\s+mime\s+format\.?"
    r"|this\s+is\s+a\s+mime[- ]encapsulated\s+message\.?"
    r"|this\s+(message|is\s+a\s+message)\s+(is\s+)?in\s+mime\s+format\.?"
    r"(\s+since\s+your\s+mail\s+reader\s+does\s+not\s+understand\s+this\s+format,"
    r"\s+some\s+or\s+all\s+of\s+this\s+message\s+may\s+not\s+be\s+legible\.)?",
    re.IGNORECASE,
)


def parse_mail(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def parse_headers(text: str) -> Message:
    """A header block (``text/rfc822-headers``, a report part given as text) as a Message."""
    return HeaderParser(policy=email.policy.compat32).parsestr(text, headersonly=True)


def _decode(value: str) -> str:
    if any("\udc80" <= c <= "\udcff" for c in value):
        # Raw 8-bit header bytes (kept as surrogates by the parser): UTF-8 these days
        # (RFC 6532), Latin-1 from older clients.
        raw = value.encode("utf-8", "surrogateescape")
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = raw.decode("latin-1")
    if "=?" in value:
        # A broken encoded-word reads as the text it is.
        with contextlib.suppress(HeaderParseError, LookupError, UnicodeError, ValueError):
            value = str(make_header(decode_header(value)))
    # Unfold and squeeze: folding whitespace carries no meaning in the fields we read.
    return " ".join(value.split())


def header(msg: Message, name: str) -> str | None:
    """The first ``name`` header, RFC 2047-decoded and unfolded; None when absent."""
    found = headers(msg, name)
    return found[0] if found else None


def headers(msg: Message, name: str) -> list[str]:
    wanted = name.lower()
    # raw_items: the stored strings, not compat32's Header objects that lose 8-bit text.
    return [_decode(str(v)) for k, v in msg.raw_items() if k.lower() == wanted]


def address_of(value: str | None) -> str | None:
    """The first addr-spec in a header value or a DSN address field, domain lowercased.

    DSN fields carry a type (``rfc822; ann@example.com``) that is dropped. Local parts keep
    their case: RFC 5321 lets a server tell ``Ann`` from ``ann``.
    """
    if not value:
        return None
    typed = _ADDR_TYPE.match(value)
    if typed:
        value = value[typed.end() :]
    for _, addr in getaddresses([value]):
        local, at, domain = addr.strip().rpartition("@")
        if at and local and domain and " " not in addr.strip():
            return f"{local}@{domain.lower()}"
    return None


def message_ids(value: str | None) -> list[str]:
    """Every ``<id>`` in a header value, without brackets; a bare ``id@host`` counts too.

    Clients disagree on separators in References (spaces, commas, newlines), so only the
    brackets are trusted.
    """
    if not value:
        return []
    found = _MSGID.findall(value)
    if not found and _BARE_MSGID.match(value.strip()):
        found = [value.strip()]
    return found


def referenced_ids(msg: Message) -> tuple[str, ...]:
    """Message-IDs a mail answers, nearest first: In-Reply-To, then References newest first.

    The caller matches them against what it sent; the nearest is most likely the one the
    person answered, but a reply to a reply still names our original further back.
    """
    found: list[str] = []
    for value in headers(msg, "In-Reply-To"):
        found.extend(message_ids(value))
    for value in headers(msg, "References"):
        found.extend(reversed(message_ids(value)))
    return tuple(dict.fromkeys(found))


def mail_time(msg: Message, now: datetime) -> datetime:
    """When the feedback happened: the mail's Date if it is believable, else ``now``."""
    value = header(msg, "Date")
    if value:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return now
        if when.tzinfo is None:  # "-0000": UTC with no claim about local time (RFC 5322)
            when = when.replace(tzinfo=UTC)
        if now - MAX_AGE <= when <= now:
            return when
    return now


def mail_identity(msg: Message, raw: bytes) -> str:
    """What makes this mail the same mail when it arrives again (maildir and IMAP alike).

    The Message-ID when it has one; otherwise the bytes themselves, which are stable for one
    stored copy.
    """
    ids = message_ids(header(msg, "Message-ID"))
    if ids:
        return "id:" + ids[0]
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def body_text(msg: Message) -> str:
    """The human-readable text of a mail, without attached or returned messages."""
    chunks: list[str] = []
    _collect_text(msg, chunks)
    return "\n".join(chunks)[:TEXT_LIMIT]


def _collect_text(part: Message, chunks: list[str]) -> None:
    if part.is_multipart():
        for child in part.get_payload():
            # message/rfc822 parts are returned originals: their words are not the report's.
            if isinstance(child, Message) and child.get_content_maintype() != "message":
                _collect_text(child, chunks)
        return
    if part.get_content_maintype() != "text" or part.get_content_subtype() not in (
        "plain",
        "html",
    ):
        return
    raw = part.get_payload(decode=True)
    if not isinstance(raw, bytes):
        return
    charset = part.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:  # an unknown charset name
        text = raw.decode("utf-8", errors="replace")
    if part.get_content_subtype() == "html":
        text = re.sub(r"<[^>]*>", " ", text)
    chunks.append(text)


def report_lines(text: str) -> list[str]:
    """The lines of a bounce's text without MIME headers, boundaries and preambles."""
    lines: list[str] = []
    in_header = False
    for line in _PREAMBLE.sub("", text).splitlines():
        if _MIME_HEADER.match(line):
            in_header = True
            continue
        if in_header and line[:1] in (" ", "\t") and line.strip():
            continue  # a folded MIME header (Content-Type: text/plain;\n\tcharset=…)
        in_header = False
        if _BOUNDARY.fullmatch(line.strip()):
            continue
        lines.append(line)
    return lines

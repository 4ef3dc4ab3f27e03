"""Bounces that are not RFC 3464 DSNs: old Exim, qmail, Lotus, GroupWise, hosted filters.

``flufl.bounce`` (Mailman's detector collection) knows these formats; it reads addresses out of
prose, so it is only asked about mail that already looks like a bounce — a null or
MAILER-DAEMON sender, a bounce subject, or a VERP return path — and never about a person's
reply that happens to quote one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message
from typing import Final

from flufl.bounce import all_failures

from .dsn import status_code
from .mailparse import address_of, body_text, header

__all__ = ["ProseBounce", "looks_like_bounce", "scan_prose_bounce", "sounds_temporary"]

log = logging.getLogger(__name__)
# flufl.bounce logs every detector it runs at INFO: one line per detector per mail.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)

_DAEMON_SENDERS: Final = frozenset(
    {"mailer-daemon", "mailer_daemon", "mail-daemon", "maildaemon", "postmaster", "mail.daemon"}
)
_BOUNCE_SUBJECT: Final = re.compile(
    r"undeliver|undelivered|not delivered|delivery (status notification|failure|failed"
    r"|has failed|problem|report|notification)|returned mail|returned to sender|failure notice"
    r"|mail delivery (failed|failure|system)|non[- ]?delivery|could not be delivered"
    r"|unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|non remis|non distribuable"
    r"|échec de (la )?remise|no se puede entregar|no entregado|error de entrega",
    re.IGNORECASE,
)
_TEMPORARY: Final = re.compile(
    r"\bdelay(ed)?\b|\bwarning\b|will (continue|keep) (to )?(try|retry)|still trying"
    r"|will be retried|temporar(y|ily)|verzögert|retard|retrasad",
    re.IGNORECASE,
)
_DIAGNOSTIC_LINE: Final = re.compile(r"^.*\b[45]\d\d\b.*$|^.*\b[45]\.\d{1,3}\.\d{1,3}\b.*$", re.M)


@dataclass(frozen=True, slots=True)
class ProseBounce:
    permanent: frozenset[str]
    temporary: frozenset[str]
    status: str | None  # the first enhanced code in the text, if it gives one
    detail: str


def looks_like_bounce(msg: Message) -> bool:
    """Whether the mail presents itself as an MTA's failure report, whatever its format."""
    if (header(msg, "Return-Path") or "").replace(" ", "") == "<>":
        return True
    sender = address_of(header(msg, "From"))
    if sender and sender.rpartition("@")[0].lower() in _DAEMON_SENDERS:
        return True
    return bool(_BOUNCE_SUBJECT.search(header(msg, "Subject") or ""))


def sounds_temporary(msg: Message, text: str) -> bool:
    """A delay warning rather than a failure, judged from the subject and the text."""
    return bool(_TEMPORARY.search(header(msg, "Subject") or "")) or bool(
        _TEMPORARY.search(text[:2000])
    )


def diagnostic(text: str) -> str:
    """The first line of ``text`` that reads like an SMTP reply; else its first words."""
    found = _DIAGNOSTIC_LINE.search(text)
    line = found.group(0) if found else text
    return " ".join(line.split())[:300]


def scan_prose_bounce(msg: Message) -> ProseBounce | None:
    """The addresses a non-standard bounce reports, or None when no detector finds any."""
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on odd mail must not stop the feedback reader
        log.warning("flufl.bounce failed on a bounce; treating it as unrecognised", exc_info=True)
        return None
    perm = _addresses(permanent)
    temp = _addresses(temporary) - perm
    if not perm and not temp:
        return None
    text = body_text(msg)
    return ProseBounce(perm, temp, status_code(text), diagnostic(text))


def _addresses(found: frozenset[bytes]) -> frozenset[str]:
    decoded = (address_of(item.decode("utf-8", errors="replace")) for item in found)
    return frozenset(addr for addr in decoded if addr)

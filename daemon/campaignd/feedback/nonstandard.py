"""Bounces that are not RFC 3464 DSNs: old Exim, qmail, Lotus, GroupWise, hosted filters.

``flufl.bounce`` (Mailman's detector collection) knows these formats; it reads addresses out of
prose, so it is only asked about mail that already looks like a bounce — a null or
MAILER-DAEMON/postmaster return path or sender, a bounce or delivery-warning subject, or a VERP
return path — and never about a person's reply that happens to quote one.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from email.message import Message
from typing import Final

from flufl.bounce import all_failures

from ..delivery.mailbox import dead_mailbox_phrase
from .dsn import status_code
from .mailparse import address_of, body_text, header, headers, report_lines

__all__ = [
    "ProseBounce",
    "diagnostic",
    "looks_like_bounce",
    "scan_prose_bounce",
    "sounds_temporary",
]

log = logging.getLogger(__name__)
# flufl.bounce logs every detector it runs at INFO: one line per detector per mail.
logging.getLogger("flufl.bounce").setLevel(logging.WARNING)

# Local parts MTAs send bounces from (and put in Return-Path when the envelope sender was
# null): Sendmail/Postfix/Exim MAILER-DAEMON in its spellings, MDaemon's "MDaemon", postmaster.
_DAEMON_LOCAL: Final = re.compile(
    r"mailer[-_.]?daemon|mail[-_.]?daemon|mdaemon|postmaster|mail[-_.]?delivery[-_.]?(sub)?system",
    re.IGNORECASE,
)
# Display names of the same senders when the address itself is an ordinary one
# ("Mail Delivery Subsystem <admin@example.com>").
_DAEMON_NAME: Final = re.compile(
    r"^\W*(mail delivery (sub)?system|mailer[- ]daemon|mail delivery service)\b", re.IGNORECASE
)
_BOUNCE_SUBJECT: Final = re.compile(
    r"undeliver|undelivered|not delivered|delivery (status notification|failure|failed"
    r"|has failed|problem|report|notification|warning|delay)|returned mail|returned to sender"
    r"|failure notice|mail delivery (failed|failure|system|warning)|delayed mail"
    r"|non[- ]?delivery|could not be delivered"
    r"|unzustellbar|nicht zustellbar|zustellung fehlgeschlagen|non remis|non distribuable"
    r"|échec de (la )?remise|no se puede entregar|no entregado|error de entrega",
    re.IGNORECASE,
)
_TEMPORARY: Final = re.compile(
    r"\bdelay(ed)?\b|\bwarning\b|will (continue|keep) (to )?(try|retry)|still trying"
    r"|will be retried|temporar(y|ily)|verzögert|retard|retrasad",
    re.IGNORECASE,
)
_REPLY_CODE: Final = re.compile(r"\b[45]\d\d\b|\b[45]\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True, slots=True)
class ProseBounce:
    permanent: frozenset[str]
    temporary: frozenset[str]
    status: str | None  # the first enhanced code in the text, if it gives one
    detail: str


def looks_like_bounce(msg: Message) -> bool:
    """Whether the mail presents itself as an MTA's failure report, whatever its format.

    Signs: a null or MAILER-DAEMON/postmaster ``Return-Path`` (what the delivering MTA writes
    for a null envelope sender), a daemon ``From`` (address or display name), a bounce or
    delivery-warning subject.
    """
    for value in headers(msg, "Return-Path"):
        inner = value.replace(" ", "").strip("<>")
        if not inner or _is_daemon(inner):
            return True
    sender = header(msg, "From") or ""
    address = address_of(sender)
    if (address and _is_daemon(address)) or _DAEMON_NAME.match(sender):
        return True
    return bool(_BOUNCE_SUBJECT.search(header(msg, "Subject") or ""))


def _is_daemon(address: str) -> bool:
    # "MAILER-DAEMON" alone (Sendmail's Return-Path) or "MAILER-DAEMON@host".
    return bool(_DAEMON_LOCAL.fullmatch(address.rpartition("@")[0] or address))


def sounds_temporary(msg: Message, text: str) -> bool:
    """A delay warning rather than a failure, judged from the subject and the text."""
    return bool(_TEMPORARY.search(header(msg, "Subject") or "")) or bool(
        _TEMPORARY.search(text[:2000])
    )


def diagnostic(text: str) -> str:
    """The line of a bounce's text that says what went wrong, on one line.

    The first line that reads like an SMTP reply (a 4xx/5xx code or an enhanced code), else
    the first that says the mailbox does not exist (``delivery.mailbox``), else the first
    words. MIME headers, boundaries and "this is a MIME message" preambles are not the
    report's words — mail readers that could not split the parts leave them in the text — so
    they are skipped: their numbers and words ("Content") would otherwise be taken for it.
    """
    lines = report_lines(text)
    found = next((line for line in lines if _REPLY_CODE.search(line)), None)
    if found is None:
        found = next((line for line in lines if dead_mailbox_phrase(line)), None)
    if found is None:
        found = "\n".join(lines)
    return " ".join(found.split())[:300]


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

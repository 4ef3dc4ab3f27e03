"""Whether a permanent failure says the mailbox does not exist — one table for every path.

An SMTP reply at RCPT (``delivery.classify``) and a bounce report read from the feedback
mailbox (``feedback.dsn``, ``feedback.nonstandard``, and through ``classify`` the suppression
rule in ``events``) ask the same question: is this address dead, so that it must be
suppressed, or did one message fail for another reason (a policy block, a full mailbox)?

The enhanced status code (RFC 3463) answers it when it is specific: ``5.1.1`` (bad mailbox),
``5.1.2`` (bad domain), … say "the address", and ``5.7.1`` or ``5.2.2`` say "not the address".
Many servers give no enhanced code at all, and MTAs fill the gap with a generic one: Postfix
writes ``Status: 5.0.0`` for a remote ``550 unknown user`` without one, Sendmail answers
``553 5.3.0 … No such user here``. A generic code says nothing about why, so the diagnostic
text decides, from ``DEAD_MAILBOX`` below — unless it also reads like a policy refusal.

Pure: no I/O, regular expressions only.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "DEAD_MAILBOX",
    "dead_mailbox_phrase",
    "deciding_status",
    "is_generic",
    "mailbox_does_not_exist",
    "names_recipient",
]

# RFC 3463: class.subject.detail; subject and detail are 1-3 digits.
_CODE: Final = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?!\d|\.\d)")
# Subjects whose "other or undefined" detail (X.S.0) gives no reason: 0 (no subject at all),
# 2 (mailbox), 3 (mail system), 5 (protocol). 1.0 is "other address status" — already about
# the address — and 4/6/7 name a reason (routing, content, security) that the text cannot undo.
_GENERIC_SUBJECTS: Final = frozenset({"2", "3", "5"})
# 5.1.x details about the recipient's address (5.1.7/5.1.8 are the sender's, 5.1.5/5.1.9 are
# not address failures at all).
_RECIPIENT_DETAILS: Final = frozenset({0, 1, 2, 3, 4, 6, 10})

# What servers write when the mailbox or its domain does not exist. One row per kind of
# phrasing, named for the tests; each pattern is searched case-insensitively anywhere in the
# diagnostic. Not here on purpose: RFC 5321's stock "mailbox unavailable" (servers use it for
# blocks too), "mailbox full"/"over quota", "disabled"/"inactive" accounts (5.2.1, which may
# come back), and a bare "Recipient address rejected" (Postfix says that for policy as well).
DEAD_MAILBOX: Final[tuple[tuple[str, re.Pattern[str]], ...]] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        # Postfix "User unknown in local recipient table", Sendmail "User unknown", Exim
        # "unknown user", SMTP32 "Addressee unknown", Exchange 5.5 "Unknown Recipient".
        (
            "unknown user",
            r"\b(user|recipient|addressee|mailbox|local[- ]part|account|e-?mail address)"
            r"\s+(is\s+)?unknown\b|\bunknown\s+(user|recipient|addressee|mailbox|local[- ]part"
            r"|account|e-?mail address)\b",
        ),
        # Sendmail/Exim "No such user here", "no such mailbox", "no such recipient".
        (
            "no such user",
            r"\bno\s+such\s+(user|mailbox|recipient|address|account|person|local user|e-?mail)",
        ),
        # qmail "Sorry, no mailbox here by that name. (#5.1.1)", MDaemon "There is no user by
        # that name at this server".
        ("no mailbox by that name", r"\bno (mailbox|user|account)\b.{0,20}\bby that name\b"),
        # Gmail "The email account that you tried to reach does not exist", "mailbox does not
        # exist", "address doesn't exist", "user does not exist here".
        (
            "does not exist",
            r"\b(user|mailbox|recipient|address|account|e-?mail|addressee|inbox)\b[^.;:!?]{0,50}"
            r"\b(does\s+not|doesn'?t|did\s+not)\s+exist",
        ),
        # Exchange/Office 365 "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP
        # address lookup", "The email address … couldn't be found", "user not found".
        (
            "not found",
            r"recip(ient)?notfound|\b(user|mailbox|recipient|address|account|addressee)"
            r"\s+(was\s+)?not\s+found\b|\b(address|recipient|mailbox|account)\b[^.;:!?]{0,50}"
            r"\b(wasn'?t|was\s+not|couldn'?t\s+be|could\s+not\s+be|cannot\s+be|can'?t\s+be)"
            r"\s+found",
        ),
        # Yahoo "This user doesn't have a yahoo.com account".
        (
            "has no account",
            r"\b(user|recipient|addressee)\s+(does\s+not|doesn'?t)\s+have\s+an?\s+[\w.-]+"
            r"\s+account\b",
        ),
        # Exchange 5.5/2003 "The recipient name is not recognized".
        ("not recognized", r"\b(recipient|user|addressee)( name)? (is )?not recogni[sz]ed"),
        # "invalid recipient", "invalid mailbox", "not a valid recipient".
        (
            "invalid recipient",
            r"\binvalid\s+(recipient|mailbox|user|account|addressee)\b"
            r"|\bnot\s+a\s+valid\s+(recipient|mailbox|user|account|e-?mail address)\b",
        ),
        # Exim "Unrouteable address" and "all relevant MX records point to non-existent hosts".
        ("unroutable address", r"\bunroute?able\s+address\b"),
        # The domain is gone (5.1.2): OpenSMTPD "Domain does not exist", Sendmail "Host
        # unknown", "no such domain", RFC 7505 null MX (5.1.10).
        (
            "no such domain",
            r"\bdomain\s+(name\s+)?(does\s+not|doesn'?t)\s+exist|\bno\s+such\s+domain\b"
            r"|\b(host|domain)\s+(name\s+)?(is\s+)?unknown\b|\bunknown\s+(host|domain)\b"
            r"|\bnull\s+mx\b",
        ),
        # The address is closed for good: "This address no longer exists".
        (
            "no longer exists",
            r"\b(address|account|mailbox|user)\b[^.;:!?]{0,40}\bno\s+longer\s+(exists?|valid)",
        ),
        # German, French, Spanish, Portuguese, Italian as European MTAs write them.
        (
            "unknown user (de)",
            r"empf(ae|ä|a)nger\s+(ist\s+)?unbekannt|unbekannte[rn]?\s+(empf(ae|ä|a)nger|benutzer)"
            r"|benutzer\s+(ist\s+)?unbekannt|(adresse|postfach|konto|mailbox)[^.;:!?]{0,40}"
            r"\b(existiert|gibt es)\s+nicht",
        ),
        (
            "unknown user (fr)",
            r"(utilisateur|destinataire|adresse|compte)\s+(est\s+)?(inconnue?|inexistante?)"
            r"|n['’]existe\s+(pas|plus)|adresse\s+introuvable",
        ),
        (
            "unknown user (es, pt, it)",
            r"(usuario|destinatario|usu[aá]rio)\s+(es\s+)?desconhecido|(usuario|destinatario)\s+"
            r"desconocido|\b(no|n[aã]o)\s+existe\b|utente\s+(sconosciuto|inesistente)"
            r"|indirizzo\s+inesistente",
        ),
    )
)

# Words of a refusal that is not about the address, even when the text also says "unknown":
# a block, a policy, or a problem with *our* sender address ("Sender address rejected: Domain
# not found" is about the envelope sender, not the recipient).
_REFUSAL: Final = re.compile(
    r"policy|spam|\bblock|blacklist|denylist|reputation|reject(ed)? (by|for|due)|abuse"
    r"|\brbl\b|spamhaus|dnsbl|relay(ing)? (denied|not permitted|access denied)"
    r"|not permitted|access denied|\bsender (address|domain|verif|rejected|unknown)"
    r"|envelope[- ]sender|\bmail from\b",
    re.IGNORECASE,
)


def is_generic(status: str | None) -> bool:
    """Whether an enhanced code gives no reason: ``X.0.0``, ``5.3.0``, ``5.2.0``, ``5.5.0``.

    ``None`` (no code at all) counts as generic too: in both cases the text has to decide.
    """
    if status is None:
        return True
    parts = status.split(".")
    if len(parts) != 3:
        return True
    _, subject, detail = parts
    return subject == "0" or (subject in _GENERIC_SUBJECTS and detail == "0")


def deciding_status(status: str | None, text: str) -> str | None:
    """The enhanced code that decides: ``status`` if it is specific, else the first specific
    code of the same class (5 when ``status`` is None) quoted in ``text`` — a relay's ``5.0.0``
    over the remote's ``550 5.1.1`` — else None: the text alone decides."""
    if not is_generic(status):
        return status
    klass = status[0] if status else "5"  # no code at all: a permanent failure's words
    for found in _CODE.finditer(text):
        code = ".".join(found.groups())
        if code[0] == klass and not is_generic(code):
            return code
    return None


def names_recipient(status: str) -> bool:
    """Whether a specific enhanced code says the *recipient's* address is bad (5.1.x)."""
    klass, _, rest = status.partition(".")
    subject, _, detail = rest.partition(".")
    return (
        klass == "5" and subject == "1" and detail.isdigit() and int(detail) in _RECIPIENT_DETAILS
    )


def dead_mailbox_phrase(text: str) -> str | None:
    """The name of the ``DEAD_MAILBOX`` row that ``text`` matches, unless it reads like a
    refusal; None otherwise. The status code is not looked at: see ``mailbox_does_not_exist``."""
    if _REFUSAL.search(text):
        return None
    for name, pattern in DEAD_MAILBOX:
        if pattern.search(text):
            return name
    return None


def mailbox_does_not_exist(status: str | None, text: str) -> bool:
    """Whether a permanent failure with enhanced code ``status`` (or None) and diagnostic
    ``text`` says the recipient's mailbox or domain does not exist.

    A specific code is authoritative (5.1.1 yes, 5.7.1 no, whatever the words); a generic one
    (``is_generic``) or none leaves it to the text. The caller has already decided that the
    failure is permanent and about the recipient (RCPT or later, a bounce report).
    """
    code = deciding_status(status, text)
    if code is not None:
        return names_recipient(code)
    return dead_mailbox_phrase(text) is not None

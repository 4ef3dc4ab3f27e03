"""One email address: validated by email-validator, in its display and SMTP forms, with its key.

``email_validator.validate_email`` costs about 40 µs, most of it a per-character UTS-46 check of
the domain, which makes a 1,000,000-row list take most of a minute. So the common address — an
ASCII dot-atom local part, one ``@``, a domain of plain letter-digit-hyphen labels — is recognised
with the library's own patterns and limits (``email_validator.rfc_constants``, the special-use
names) and assembled directly; domains are cached; every other address, and every invalid one,
goes through ``validate_email`` whole. Both paths give the same result (a property test compares
them with the library on generated addresses), so the library stays the authority.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import NamedTuple

import email_validator
from email_validator import EmailNotValidError, EmailSyntaxError, validate_email
from email_validator.rfc_constants import (
    CASE_INSENSITIVE_MAILBOX_NAMES,
    DNS_LABEL_LENGTH_LIMIT,
    DOMAIN_MAX_LENGTH,
    DOMAIN_NAME_REGEX,
    DOT_ATOM_TEXT,
    DOT_ATOM_TEXT_HOSTNAME,
    EMAIL_MAX_LENGTH,
)

__all__ = [
    "Address",
    "EmailNotValidError",
    "address_digest",
    "address_parts",
    "domain_forms",
    "explain_invalid",
    "parse_address",
]


class Address(NamedTuple):
    key: str
    """The dedupe key: ``email`` lower-cased. History and suppressions are looked up by it."""
    email: str
    """Normalized, Unicode domain: what templates and people see (``user@bücher.example``)."""
    smtp_address: str
    """For ``RCPT TO``: the domain as A-labels (``user@xn--bcher-kva.example``). The local part
    stays as written, so a non-ASCII local part still needs a server offering SMTPUTF8."""
    domain: str
    """Lower-case Unicode domain."""

    @property
    def needs_smtputf8(self) -> bool:
        return not self.smtp_address.isascii()


def parse_address(text: str) -> Address:
    """Validate ``text`` (surrounding whitespace ignored) without DNS.

    Raises ``EmailNotValidError`` whose message is email-validator's reason.
    """
    return Address._make(address_parts(text))


def address_parts(text: str) -> tuple[str, str, str, str]:
    """``parse_address`` as a plain tuple, for the loop over a million rows."""
    text = text.strip()
    if not text:
        raise EmailSyntaxError("There is no address (the cell is empty).")
    local, at, domain = text.partition("@")
    # validate_email lower-cases RFC 2142 role names (postmaster, abuse, …): leave those to it.
    if (
        at
        and "@" not in domain
        and DOT_ATOM_TEXT.match(local) is not None
        and (len(local) > _ROLE_MAX or local.lower() not in _ROLE_NAMES)
    ):
        forms = _domain(domain)
        # The three forms validate_email measures (as given, normalized, A-labels) all fit.
        if forms is not None and len(local) + forms[2] + 1 <= EMAIL_MAX_LENGTH:
            unicode_domain, ascii_domain, _ = forms
            email = f"{local}@{unicode_domain}"
            smtp = email if ascii_domain is unicode_domain else f"{local}@{ascii_domain}"
            return email.lower(), email, smtp, unicode_domain
    v = validate_email(text, check_deliverability=False)
    smtp = v.ascii_email or f"{v.local_part}@{v.ascii_domain}"
    return v.normalized.lower(), v.normalized, smtp, v.domain


def address_digest(key: str) -> int:
    """8 bytes of BLAKE2b: the set of 1,000,000 of these is a fraction of the set of the keys.

    Two different keys share a digest with probability about n²/2⁶⁵ (3e-8 for a million).
    """
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


_ROLE_NAMES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
_ROLE_MAX = max(map(len, _ROLE_NAMES))


def domain_forms(domain: str) -> tuple[str, str] | None:
    """(Unicode, A-label) forms of a valid domain, lower-case, or None if it is not valid."""
    forms = _domain(domain)
    return None if forms is None else (forms[0], forms[1])


# Lists repeat domains (free-mail providers, many contacts per company). 2^16 entries are about
# 15 MB; a miss costs ~2 µs for a plain domain and ~40 µs for one the library has to check.
@lru_cache(maxsize=1 << 16)
def _domain(domain: str) -> tuple[str, str, int] | None:
    """Unicode and A-label forms and the longest of the three spellings in bytes, or None to
    ask the library."""
    plain = _plain_domain(domain)
    if plain is not None:
        return plain, plain, len(plain)
    try:
        v = validate_email(f"a@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    longest = max(len(domain.encode()), len(v.domain.encode()), len(v.ascii_domain))
    return v.domain, v.ascii_domain, longest


def _plain_domain(domain: str) -> str | None:
    """The domain lower-cased if it is one that validate_email would return lower-cased as is.

    ASCII letter-digit-hyphen labels (the library's hostname pattern) of legal lengths, a dot,
    a top-level label ending in a letter, no ``--`` (R-LDH and Punycode labels go to the library),
    not a special-use name. For such a domain the library's UTS-46 mapping only lower-cases.
    """
    if not domain.isascii() or len(domain) > DOMAIN_MAX_LENGTH or "--" in domain:
        return None
    d = domain.lower()
    if (
        DOT_ATOM_TEXT_HOSTNAME.match(d) is None
        or "." not in d
        or DOMAIN_NAME_REGEX.search(d) is None
        or any(len(label) > DNS_LABEL_LENGTH_LIMIT for label in d.split("."))
        or any(d == s or d.endswith("." + s) for s in email_validator.SPECIAL_USE_DOMAIN_NAMES)
    ):
        return None
    return d


def explain_invalid(text: str, exc: EmailNotValidError) -> str:
    """email-validator's reason for refusing ``text``, and for a special-use domain (``.test``,
    ``.invalid``, ``.localhost``, …, RFC 6761) the plain words: it is a reserved domain that can
    never receive mail. (``parse_address`` keeps the library's message as it is.)"""
    reason = str(exc)
    domain = text.strip().rpartition("@")[2].rstrip(".").lower()
    for name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
        if domain == name or domain.endswith("." + name):
            return (
                f"{domain} is a reserved domain (.{name} is special-use, RFC 6761): no mail can "
                f"be delivered there — use a real address ({reason})"
            )
    return reason

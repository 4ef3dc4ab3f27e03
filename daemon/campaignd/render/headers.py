"""Header encoding of recipient data: one line, RFC 2047 words, folded; addresses and
Message-IDs. Recipient data never creates a header line (see render/message.py).
"""

from __future__ import annotations

import binascii
import re
import secrets
from functools import lru_cache

import idna

from ..config.model import LIST_ID_RE
from ..config.templates import CONTROL_CHARS


def make_message_id(domain: str) -> str:
    """A fresh ``<random@domain>``; 128 random bits, so unique without coordination."""
    domain = header_domain(domain, fallback=_NO_DOMAIN)
    if not _DOMAIN.fullmatch(domain):
        domain = _NO_DOMAIN
    return f"<{secrets.token_hex(16)}@{domain}>"


_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*(?: [A-Za-z0-9][A-Za-z0-9'-]*)*")
_ADDRESS = re.compile(r'([^\x00-\x20\x7f<>()\[\]\\,;:"@]+)@([^\x00-\x20\x7f<>()\[\]\\,;:"@]+)')
MESSAGE_ID = re.compile(r"<[!-;=?-~]+@[!-;=?-~]+>")
URL_UNSAFE = re.compile(r"[\x00-\x20\x7f<>\"]|[^\x00-\x7f]")
_DOMAIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_NO_DOMAIN = "campaignd.invalid"
_WORD_BYTES = 39  # 39 bytes → 52 base64 chars → a 64-char encoded word, one per folded line
_MAX_NAME_BYTES = 300  # a longer display name is a data error; it is cut, not refused
_FOLD_AT = 78


def one_line(value: str) -> str:
    """Control characters → one space each run; ends trimmed (the parser drops them anyway)."""
    return CONTROL_CHARS.sub(" ", value).strip()


def _utf8_cut(raw: bytes, end: int) -> int:
    """The largest index ≤ ``end`` that does not split a UTF-8 sequence."""
    if end >= len(raw):
        return len(raw)
    while 0x80 <= raw[end] < 0xC0:
        end -= 1
    return end


def _encoded_words(value: str) -> str:
    """RFC 2047 ``B`` words, each a whole number of characters, folded one per line."""
    raw = value.encode("utf-8")
    words = []
    start = 0
    while start < len(raw):
        end = _utf8_cut(raw, start + _WORD_BYTES)
        words.append(
            "=?utf-8?b?" + binascii.b2a_base64(raw[start:end], newline=False).decode() + "?="
        )
        start = end
    return "\r\n ".join(words)


def _fold_plain(value: str, used: int) -> str | None:
    """Fold printable ASCII at single spaces; None if that cannot be done cleanly."""
    if used + len(value) <= _FOLD_AT:
        return value
    if "  " in value:
        return None  # a fold there could leave a whitespace-only line
    lines: list[str] = []
    current = ""
    width = _FOLD_AT - used
    for word in value.split(" "):
        if len(word) > 900:
            return None
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current, width = word, _FOLD_AT - 1
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return "\r\n ".join(lines)


def unstructured(value: str, used: int) -> str:
    """A header value for Subject-like fields; ``value`` is already one line."""
    if value.isascii() and "=?" not in value:
        folded = _fold_plain(value, used)
        if folded is not None:
            return folded
    return _encoded_words(value)


def display_name(name: str) -> str:
    """The phrase of ``Name <addr>`` for a one-line, whitespace-collapsed name."""
    if _PLAIN_NAME.fullmatch(name) and len(name) < 60:
        return name
    if name.isascii() and "=?" not in name and len(name) < 60:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # Encoded words also for ASCII lookalikes of them: the stdlib decodes =?…?= even inside
    # quotes, so quoting would not keep the name as written. One word, even past RFC 2047's 75
    # characters: in a phrase the stdlib (and other lenient parsers) turn the folding space
    # between two encoded words into a space in the name, while every decoder we know accepts
    # a long word. ``_MAX_NAME_BYTES`` keeps the line far below 998.
    raw = name.encode("utf-8")
    if len(raw) > _MAX_NAME_BYTES:
        raw = raw[: _utf8_cut(raw, _MAX_NAME_BYTES)]
    return "=?utf-8?b?" + binascii.b2a_base64(raw, newline=False).decode() + "?="


@lru_cache(maxsize=4096)
def header_domain(domain: str, fallback: str | None = None) -> str:
    """A domain as it may appear in a header: A-labels for IDN."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError:
        if fallback is not None:
            return fallback
        raise


def header_address(address: str) -> str:
    """``local@domain`` for To; an IDN domain becomes A-labels.

    A non-ASCII local part stays UTF-8 (RFC 6532): there is no ASCII form of it, and the relay
    must offer SMTPUTF8 to take the message at all.
    """
    m = _ADDRESS.fullmatch(address)
    if m is None or not (address.isascii() or address.isprintable()):
        raise ValueError(address)
    local, domain = m.groups()
    if domain.isascii():
        return address
    try:
        return f"{local}@{header_domain(domain)}"
    except idna.IDNAError as exc:
        raise ValueError(address) from exc


def list_id(campaign_id: str, name: str, sender_address: str, override: str | None = None) -> str:
    """The value of a ``List-Id`` header (RFC 2919): ``Name <campaign-id.sender-domain>``.

    ``override`` is the campaign's ``list_id:`` (validated by the model). The name is a phrase
    encoded like a display name, so nothing from the config can start a new header line; an id
    that would not be a dot-atom (an odd sender domain) falls back to ``campaignd.invalid``.
    """
    ident = override
    if ident is None:
        domain = sender_address.rpartition("@")[2].strip().lower()
        ident = f"{campaign_id}.{header_domain(domain, fallback=_NO_DOMAIN) if domain else ''}"
    if len(ident) > 255 or not LIST_ID_RE.fullmatch(ident):
        ident = f"{campaign_id}.{_NO_DOMAIN}"
    phrase = " ".join(CONTROL_CHARS.sub(" ", name).split())
    return f"{display_name(phrase)} <{ident}>" if phrase else f"<{ident}>"


def replace_header(data: bytes, name: str, value: str) -> bytes:
    """``data`` with the first ``name`` field (and its folded continuation lines) replaced by
    ``name: value``; appended to the header block if there was none.

    ``value`` must already be encoded and folded (``unstructured``, ``header_address``); a CR
    or LF not followed by whitespace in it is a ``ValueError`` — it would start a new field.
    """
    if re.search(r"[\r\n](?![ \t])", value.replace("\r\n", "\n")) or value.endswith(("\r", "\n")):
        raise ValueError(f"{name}: the value would start a new header line")
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    wanted = name.lower().encode("ascii") + b":"
    new = f"{name}: {value}".encode()
    out: list[bytes] = []
    replaced = skipping = False
    for line in lines:
        if skipping and line[:1] in (b" ", b"\t"):
            continue
        skipping = False
        if not replaced and line.lower().startswith(wanted):
            out.append(new)
            replaced = skipping = True
            continue
        out.append(line)
    if not replaced:
        out.append(new)
    return b"\r\n".join(out) + sep + body

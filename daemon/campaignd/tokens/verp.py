"""VERP return paths: one envelope sender per message, so a bounce names the message it is about.

``return_path: "bounces+{token}@acme.example"`` (SPEC §3) becomes
``bounces+ab3xk2lq7cbvbi4xzmyq@acme.example`` for one message row. Bounces go to the envelope
sender, so the remote MTA hands the token back even when its report is unreadable.

The token is RFC 4648 base32, lowercase and unpadded, of ``row id ‖ tag`` where the row id is
big-endian in as few bytes as it needs and ``tag`` is the first 10 bytes of
HMAC-SHA256(key, ``b"verp" ‖ 0x00 ‖ row id``) — the same key and construction as the signed
links in ``web/links.py``, with its own purpose so no link token doubles as a return path.
Base32 rather than base64: local parts are case-insensitive in practice (some MTAs lowercase
them) and base32 survives that, using only letters and the digits 2-7.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from .links import LinkSigner

__all__ = ["MultiVerp", "VerpCodec", "VerpDecoder", "codec_for", "decoder_for", "signing_key"]

TAG_BYTES: Final = 10  # 80 bits: forging one bounce is out of reach; keeps local parts short
MAX_ROW_BYTES: Final = 8  # row ids are 64-bit database keys
_PURPOSE: Final = b"verp\x00"
_TOKEN_CHARS: Final = "[a-z2-7]"  # noqa: S105 - the base32 alphabet, not a secret


class VerpCodec:
    """Makes and reads the VERP address of a message row, for one ``return_path`` pattern."""

    def __init__(self, key: bytes, pattern: str) -> None:
        if not key:
            raise ValueError("the VERP signing key is empty")
        local, at, domain = pattern.rpartition("@")
        if not at or not local or not domain or pattern.count("{token}") != 1:
            raise ValueError(
                f"return_path {pattern!r} must be an address holding one {{token}}, like "
                '"bounces+{token}@acme.example"'
            )
        if "{token}" not in local:
            raise ValueError(
                f"return_path {pattern!r} has {{token}} in the domain — put it in the local "
                'part, like "bounces+{token}@acme.example"'
            )
        self._key = key
        self._pattern = pattern
        prefix, _, suffix = pattern.partition("{token}")
        # Case-insensitive as a whole: domains always are and many MTAs fold local parts too.
        self._match = re.compile(
            re.escape(prefix) + f"({_TOKEN_CHARS}+)" + re.escape(suffix), re.IGNORECASE
        )

    @property
    def pattern(self) -> str:
        return self._pattern

    def _tag(self, row: bytes) -> bytes:
        return hmac.new(self._key, _PURPOSE + row, hashlib.sha256).digest()[:TAG_BYTES]

    def token(self, message_row_id: int) -> str:
        row = _row_bytes(message_row_id)
        return base64.b32encode(row + self._tag(row)).decode("ascii").rstrip("=").lower()

    def address(self, message_row_id: int) -> str:
        return self._pattern.replace("{token}", self.token(message_row_id))

    def decode(self, address: str) -> int | None:
        """The row id in a VERP address of this pattern; None for anything forged or foreign.

        Accepts ``<addr>`` and surrounding whitespace, since headers such as Delivered-To and
        Original-Mail-From carry the address in both spellings.
        """
        found = self._match.fullmatch(address.strip().strip("<>").strip())
        return self.decode_token(found.group(1)) if found else None

    def decode_token(self, token: str) -> int | None:
        token = token.lower()
        if not 0 < len(token) <= 40:
            return None
        try:
            raw = base64.b32decode(token.upper() + "=" * (-len(token) % 8))
        except (binascii.Error, ValueError):
            return None
        # One row, one spelling: a token with stray trailing bits is not one we made.
        if base64.b32encode(raw).decode("ascii").rstrip("=").lower() != token:
            return None
        row, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not 0 < len(row) <= MAX_ROW_BYTES or not hmac.compare_digest(tag, self._tag(row)):
            return None
        value = int.from_bytes(row, "big")
        if _row_bytes(value) != row:  # leading zero bytes: not our (shortest) encoding
            return None
        return value


def _row_bytes(value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a message row id")
    if value.bit_length() > MAX_ROW_BYTES * 8:
        raise ValueError(f"{value} is too large for a message row id")
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


class VerpDecoder(Protocol):
    """What reading feedback needs: an address in, our message row id (or None) out."""

    def decode(self, address: str) -> int | None: ...


class MultiVerp:
    """Every ``return_path`` pattern in use at once: services may each have their own."""

    def __init__(self, codecs: Iterable[VerpCodec]) -> None:
        self.codecs = tuple(codecs)

    def decode(self, address: str) -> int | None:
        for codec in self.codecs:
            found = codec.decode(address)
            if found is not None:
                return found
        return None


@lru_cache(maxsize=64)
def codec_for(key: bytes, pattern: str) -> VerpCodec:
    """The codec of one pattern, built once: the send path asks for it per message."""
    return VerpCodec(key, pattern)


def decoder_for(key: bytes, patterns: Iterable[str]) -> MultiVerp | None:
    """A decoder for the VERP patterns of the configured services; None when none uses VERP.

    Patterns that are not valid VERP patterns (no ``{token}``) are skipped: such a service uses
    a fixed return path, which names no message.
    """
    codecs = []
    for pattern in sorted(set(patterns)):
        if "{token}" not in pattern:
            continue
        try:
            codecs.append(codec_for(key, pattern))
        except ValueError:
            continue  # validate reports it; the send path falls back to the From address
    return MultiVerp(codecs) if codecs else None


def signing_key(signer: LinkSigner) -> bytes:
    """The link-signing key, which VERP tokens share (with their own purpose in the MAC).

    One key to keep and rotate; the LinkSigner does not expose it because nothing else should
    sign with it.
    """
    return signer._key

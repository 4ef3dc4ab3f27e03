"""Signed link tokens: unsubscribe (``/u/``), open pixel (``/o/``) and click redirect (``/c/``).

A token is URL-safe base64 (no padding) of ``payload ‖ tag``, where ``tag`` is the first 16
bytes of HMAC-SHA256(key, purpose ‖ 0x00 ‖ payload). The purpose inside the MAC binds a token
to one use: an unsubscribe token is not a valid click token even though both decode. Nothing in
a token is secret — only unforgeable — so recipients can read their own address in it.

Open and click tokens name a message by a *reference*: its row id (an ``int``) or its
Message-ID (a ``str``, angle brackets dropped). The Composer only knows the Message-ID when it
renders — the row id is the worker's — and the Message-ID is also how replies find a message,
so tracked mail uses that form; row-id tokens stay valid for callers that have the row.

Pure apart from ``load_or_create_key``, which the daemon calls once at start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from ..errors import CampaigndError, ConfigError

__all__ = [
    "KEY_FILE",
    "BadToken",
    "LinkSigner",
    "MessageRef",
    "click_url",
    "load_or_create_key",
    "open_url",
    "unsubscribe_url",
]

KEY_FILE: Final = "secret.key"
TAG_BYTES: Final = 16  # 128-bit truncated HMAC-SHA256 (RFC 2104 §5): short links, no known attack
MAX_TOKEN: Final = 8192  # characters; a click token carries its URL, nothing needs more

_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_SEP = b"\x00"
# A Message-ID without its brackets: printable ASCII, one "@", as make_message_id writes them.
_MESSAGE_ID = re.compile(rb"[!-;=?-~]{1,200}@[!-;=?-~]{1,200}")

MessageRef = int | str
"""A message's row id, or its Message-ID (``"abc@acme.example"``, brackets optional)."""


class BadToken(CampaigndError, ValueError):
    """A link token was forged, truncated, altered, meant for another purpose, or is garbage."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(token: str) -> bytes:
    if not 0 < len(token) <= MAX_TOKEN or not _TOKEN.fullmatch(token) or len(token) % 4 == 1:
        raise BadToken("not a link token")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise BadToken("not a link token") from None
    if _b64(raw) != token:  # unused trailing bits set: one payload, one spelling
        raise BadToken("not a link token")
    return raw


def check_link_url(url: str) -> str:
    """``url`` if it is a plain absolute http(s) URL; ValueError naming the problem otherwise."""
    if not url or any(c <= " " or c == "\x7f" or c == "\\" for c in url):
        raise ValueError(f"{url!r} has spaces, control characters or backslashes")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL — only web links are tracked")
    return url


class LinkSigner:
    """Makes and checks tokens with one secret key (``load_or_create_key``)."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ValueError("the link-signing key is empty")
        self._key = key

    def _sign(self, purpose: bytes, payload: bytes) -> str:
        tag = hmac.new(self._key, purpose + _SEP + payload, hashlib.sha256).digest()
        return _b64(payload + tag[:TAG_BYTES])

    def _open(self, purpose: bytes, token: str) -> bytes:
        raw = _unb64(token)
        if len(raw) <= TAG_BYTES:
            raise BadToken("link token is truncated")
        payload, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        want = hmac.new(self._key, purpose + _SEP + payload, hashlib.sha256).digest()
        if not hmac.compare_digest(tag, want[:TAG_BYTES]):
            raise BadToken("link token signature does not match")
        return payload

    # -------------------------------------------------------------- unsubscribe

    def unsubscribe_token(self, campaign_id: str, recipient: str) -> str:
        """Token naming (campaign, recipient key); the recipient is suppressed globally."""
        if "\x00" in campaign_id or "\x00" in recipient or not campaign_id or not recipient:
            raise ValueError(f"cannot sign ({campaign_id!r}, {recipient!r})")
        return self._sign(b"unsubscribe", campaign_id.encode() + _SEP + recipient.encode())

    def verify_unsubscribe(self, token: str) -> tuple[str, str]:
        """(campaign_id, recipient) or ``BadToken``."""
        payload = self._open(b"unsubscribe", token)
        parts = payload.split(_SEP)
        if len(parts) != 2 or not all(parts):
            raise BadToken("unsubscribe token is malformed")
        try:
            return parts[0].decode(), parts[1].decode()
        except UnicodeDecodeError:
            raise BadToken("unsubscribe token is malformed") from None

    # -------------------------------------------------------------- tracking

    def open_token(self, message: MessageRef) -> str:
        return self._sign(b"open", _ref(message))

    def verify_open(self, token: str) -> MessageRef:
        """The message reference (row id or bare Message-ID), or ``BadToken``."""
        return _parse_ref(self._open(b"open", token))

    def click_token(self, message: MessageRef, url: str) -> str:
        """Token carrying the target URL, so ``/c/`` can never redirect anywhere unsigned."""
        check_link_url(url)
        return self._sign(b"click", _ref(message) + _SEP + url.encode())

    def verify_click(self, token: str) -> tuple[MessageRef, str]:
        """(message reference, http(s) URL) or ``BadToken``."""
        ref, sep, url = self._open(b"click", token).partition(_SEP)
        if not sep:
            raise BadToken("click token is malformed")
        try:
            target = check_link_url(url.decode())
        except (UnicodeDecodeError, ValueError):
            # Only a leaked key gets here; still refuse to become an open redirect.
            raise BadToken("click token does not hold an http(s) URL") from None
        return _parse_ref(ref), target


def _ref(value: MessageRef) -> bytes:
    if isinstance(value, str):
        bare = value.strip().removeprefix("<").removesuffix(">")
        raw = bare.encode("ascii", "replace")
        if not bare.isascii() or not _MESSAGE_ID.fullmatch(raw):
            raise ValueError(f"{value!r} is not a Message-ID like <id@domain>")
        return raw
    return _row_id(value)


def _parse_ref(raw: bytes) -> MessageRef:
    if b"@" in raw:
        if not _MESSAGE_ID.fullmatch(raw):
            raise BadToken("link token is malformed")
        return raw.decode("ascii")
    return _parse_row_id(raw)


def _row_id(value: int) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a message row id")
    return str(value).encode()


def _parse_row_id(raw: bytes) -> int:
    if not raw.isdigit() or (len(raw) > 1 and raw.startswith(b"0")) or len(raw) > 20:
        raise BadToken("link token is malformed")
    return int(raw)


def _link(public_url: str, kind: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/{kind}/{token}"


def unsubscribe_url(public_url: str, token: str) -> str:
    """``https://mail.acme.example/u/TOKEN``."""
    return _link(public_url, "u", token)


def open_url(public_url: str, token: str) -> str:
    """``…/o/TOKEN``: the open-tracking pixel."""
    return _link(public_url, "o", token)


def click_url(public_url: str, token: str) -> str:
    """``…/c/TOKEN``: the signed click redirect."""
    return _link(public_url, "c", token)


def load_or_create_key(state_dir: Path, env_value: str | None) -> bytes:
    """The link-signing key: ``env_value`` if set, else ``state_dir/secret.key``, made once.

    The generated file holds 64 hex characters and a newline, mode 0600; the key is its stripped
    content (exactly what ``campaignctl preview`` reads). Losing it invalidates every link sent.
    """
    if env_value:
        return env_value.encode()
    path = state_dir / KEY_FILE

    def cannot(exc: OSError) -> ConfigError:
        return ConfigError(
            f"{path}: cannot create the link-signing key ({exc.strerror}) — make {state_dir} "
            "a directory campaignd can write, or set secret_env in campaignd.yaml"
        )

    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:  # FileExistsError too: a file where the directory should be
        raise cannot(exc) from exc
    try:
        # O_EXCL: never overwrite a key that links have already been signed with.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)
    except OSError as exc:
        raise cannot(exc) from exc
    key = secrets.token_hex(32)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (key + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key.encode()


def _read_key(path: Path) -> bytes:
    try:
        key = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the link-signing key ({exc.strerror}) — fix its owner and "
            "mode (0600, owned by the campaignd user)"
        ) from exc
    if not key:
        raise ConfigError(
            f"{path}: the link-signing key file is empty — delete it to have a new one made "
            "(links already sent stop working) or restore it from backup"
        )
    return key

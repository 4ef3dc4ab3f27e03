"""feedback/verp.py: addresses round-trip, survive case folding, and reject anything forged."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaignd.tokens.verp import VerpCodec

KEY = b"test-verp-key"
PATTERN = "bounces+{token}@mail.acme.example"
CODEC = VerpCodec(KEY, PATTERN)


def forge(row: bytes, key: bytes = KEY, tag_bytes: int = 10) -> str:
    """A token made by hand from the documented format, to test the decoder's own checks."""
    tag = hmac.new(key, b"verp\x00" + row, hashlib.sha256).digest()[:tag_bytes]
    return base64.b32encode(row + tag).decode().rstrip("=").lower()


def test_documented_format() -> None:
    assert CODEC.token(4711) == forge((4711).to_bytes(2, "big"))
    # The fixture mails were addressed with these; a format change must be deliberate.
    assert CODEC.address(4711) == "bounces+cjt6w4myoaw4ghqybwya@mail.acme.example"
    assert CODEC.address(90210) == "bounces+afqgfn5w5yg3miipjoy7c@mail.acme.example"


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_round_trips_and_fits_a_local_part(row: int) -> None:
    address = CODEC.address(row)
    local = address.rpartition("@")[0]
    assert re.fullmatch(r"bounces\+[a-z2-7]+", local)
    assert len(local) <= 64  # RFC 5321 §4.5.3.1.1
    assert CODEC.decode(address) == row
    assert CODEC.decode(address.upper()) == row  # MTAs that fold case
    assert CODEC.decode(f" <{address}> ") == row


def test_token_position_is_free() -> None:
    codec = VerpCodec(KEY, "{token}-bounce@Bounces.Acme.Example")
    address = codec.address(12)
    assert address.endswith("-bounce@Bounces.Acme.Example")
    assert codec.decode(address.lower()) == 12
    assert CODEC.decode(address) is None


@pytest.mark.parametrize(
    "address",
    [
        "",
        "outreach@acme.example",
        "bounces+@mail.acme.example",
        "bounces+cjt6w4myoaw4ghqybwya@other.example",
        "bounces+cjt6w4myoaw4ghqybwya@mail.acme.example.evil",
        "xbounces+cjt6w4myoaw4ghqybwya@mail.acme.example",
        "bounces+cjt6w4myoaw4ghqybwy@mail.acme.example",  # truncated
        "bounces+cjt6w4myoaw4ghqybwyb@mail.acme.example",  # one character changed
        "bounces+cjt6w4myoaw4ghqybwya1@mail.acme.example",  # not base32
        "bounces+cjt6w4myoaw4ghqybwyaaa@mail.acme.example",  # extended
        "bounces+" + "a" * 200 + "@mail.acme.example",
    ],
)
def test_rejects_foreign_forged_and_damaged(address: str) -> None:
    assert CODEC.decode(address) is None


def test_rejects_another_key_and_non_canonical_spellings() -> None:
    assert VerpCodec(b"other-key", PATTERN).decode(CODEC.address(4711)) is None
    # A leading zero byte encodes the same number, but we never make it: refuse it.
    padded = forge(b"\x00" + (4711).to_bytes(2, "big"))
    assert CODEC.decode_token(padded) is None
    # Only the tag: no row bytes at all.
    assert CODEC.decode_token(forge(b"")) is None
    # More than 64 bits of row id.
    assert CODEC.decode_token(forge(b"\x01" * 9)) is None
    # Stray bits in the last base32 character: the same bytes, spelled another way.
    token = CODEC.token(7)  # 11 bytes = 88 bits in 18 characters: 2 unused bits
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    altered = token[:-1] + alphabet[alphabet.index(token[-1]) ^ 1]
    same = base64.b32decode(altered.upper() + "=" * (-len(altered) % 8), casefold=False)
    assert same == base64.b32decode(token.upper() + "=" * (-len(token) % 8))
    assert CODEC.decode_token(token) == 7
    assert CODEC.decode_token(altered) is None


def test_link_tokens_are_not_verp_tokens() -> None:
    from campaignd.tokens.links import LinkSigner

    link = LinkSigner(KEY).open_token(4711)
    assert CODEC.decode(f"bounces+{link.lower()}@mail.acme.example") is None


@pytest.mark.parametrize(
    ("key", "pattern", "message"),
    [
        (b"", PATTERN, "empty"),
        (KEY, "bounces@acme.example", "one {token}"),
        (KEY, "bounces+{token}+{token}@acme.example", "one {token}"),
        (KEY, "bounces+{token}", "one {token}"),
        (KEY, "bounces@{token}.acme.example", "local part"),
    ],
)
def test_bad_configuration_is_explained(key: bytes, pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        VerpCodec(key, pattern)


@pytest.mark.parametrize("row", [-1, True, 2**64, 1.5])
def test_refuses_non_row_ids(row: object) -> None:
    with pytest.raises(ValueError):
        CODEC.address(row)  # type: ignore[arg-type]


# ---------------------------------------------------------------- several patterns, the send path


def test_decoder_for_reads_every_configured_pattern() -> None:
    from campaignd.tokens.verp import decoder_for

    key = b"k"
    decoder = decoder_for(
        key, ["bounces+{token}@a.example", "rp-{token}@b.example", "fixed@c.example", ""]
    )
    assert decoder is not None and len(decoder.codecs) == 2
    assert decoder.decode(VerpCodec(key, "rp-{token}@b.example").address(42)) == 42
    assert decoder.decode(VerpCodec(key, "bounces+{token}@a.example").address(7)) == 7
    assert decoder.decode(VerpCodec(b"other", "bounces+{token}@a.example").address(7)) is None
    assert decoder_for(key, ["fixed@c.example"]) is None


def test_the_envelope_sender_of_a_message() -> None:
    from campaignd.config.model import Campaign, Config, Service
    from campaignd.delivery.worker import envelope_sender
    from campaignd.tokens.links import LinkSigner

    def sender(return_path: str | None, **kw: object) -> str:
        service = Service.model_validate({"from": "Acme <news@acme.example>",
                                          "return_path": return_path})  # fmt: skip
        campaign = Campaign.model_validate(
            {"audience": "x.csv", "services": "relay", "template": "t"}
        )
        config = Config(root=Path("."), services={"relay": service}, campaigns={"c": campaign})
        return envelope_sender(config, campaign, service, "relay", **kw)  # type: ignore[arg-type]

    signer = LinkSigner(b"link-key")
    verp = sender("bounces+{token}@mail.acme.example", message=4711, signer=signer)
    assert VerpCodec(b"link-key", "bounces+{token}@mail.acme.example").decode(verp) == 4711
    assert (
        sender("bounces@mail.acme.example", message=1, signer=signer) == "bounces@mail.acme.example"
    )
    assert sender(None, message=1, signer=signer) == "news@acme.example"
    # Without the row (a test send) a VERP pattern falls back to the From address.
    assert sender("bounces+{token}@mail.acme.example") == "news@acme.example"

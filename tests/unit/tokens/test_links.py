"""web/links.py: tokens round-trip, and every kind of tampering is a BadToken."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaignd.errors import CampaigndError, ConfigError
from campaignd.tokens.links import (
    BadToken,
    LinkSigner,
    click_url,
    load_or_create_key,
    open_url,
    unsubscribe_url,
)

KEY = b"k" * 32
SIGNER = LinkSigner(KEY)


def forge(purpose: bytes, payload: bytes, key: bytes = KEY) -> str:
    """A token made by hand from the documented format, to test the verifier's own checks."""
    tag = hmac.new(key, purpose + b"\x00" + payload, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(payload + tag).rstrip(b"=").decode()


def test_round_trips() -> None:
    token = SIGNER.unsubscribe_token("launch", "ann@example.com")
    assert SIGNER.verify_unsubscribe(token) == ("launch", "ann@example.com")
    assert SIGNER.verify_open(SIGNER.open_token(42)) == 42
    assert SIGNER.verify_open(SIGNER.open_token(0)) == 0
    url = "https://acme.example/boards?a=1&b=é#top"
    assert SIGNER.verify_click(SIGNER.click_token(7, url)) == (7, url)
    assert forge(b"open", b"42") == SIGNER.open_token(42)  # the format is as documented


def test_tokens_are_url_safe_and_short() -> None:
    token = SIGNER.unsubscribe_token("launch", "ann@example.com")
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert len(token) < 60
    assert len(SIGNER.open_token(123456789)) < 40


def test_bad_token_is_a_campaignd_error() -> None:
    assert issubclass(BadToken, CampaigndError)


def test_another_key_is_refused() -> None:
    other = LinkSigner(b"another key")
    with pytest.raises(BadToken):
        other.verify_unsubscribe(SIGNER.unsubscribe_token("launch", "ann@example.com"))
    with pytest.raises(BadToken):
        other.verify_open(SIGNER.open_token(1))


def test_every_truncation_is_refused() -> None:
    token = SIGNER.unsubscribe_token("launch", "ann@example.com")
    for n in range(len(token)):
        with pytest.raises(BadToken):
            SIGNER.verify_unsubscribe(token[:n])
    with pytest.raises(BadToken):
        SIGNER.verify_unsubscribe(token[1:])


def test_every_single_character_change_is_refused() -> None:
    token = SIGNER.click_token(5, "https://acme.example/")
    alphabet = "AZaz09-_"
    for i in range(len(token)):
        for c in alphabet:
            if c != token[i]:
                with pytest.raises(BadToken):
                    SIGNER.verify_click(token[:i] + c + token[i + 1 :])


def test_padding_and_noise_are_refused() -> None:
    token = SIGNER.open_token(9)
    for bad in (token + "=", token + "==", " " + token, token + "\n", token + ".", token + "A"):
        with pytest.raises(BadToken):
            SIGNER.verify_open(bad)


def test_purposes_cannot_be_swapped() -> None:
    unsub = SIGNER.unsubscribe_token("1", "2")
    opened = SIGNER.open_token(12)
    click = SIGNER.click_token(12, "https://a.example/")
    for token in (opened, click):
        with pytest.raises(BadToken):
            SIGNER.verify_unsubscribe(token)
    for token in (unsub, click):
        with pytest.raises(BadToken):
            SIGNER.verify_open(token)
    for token in (unsub, opened):
        with pytest.raises(BadToken):
            SIGNER.verify_click(token)
    # The same bytes signed for one purpose do not verify for another.
    with pytest.raises(BadToken):
        SIGNER.verify_click(forge(b"unsubscribe", b"12\x00https://a.example/"))


def test_swapped_fields_are_refused() -> None:
    a = SIGNER.unsubscribe_token("launch", "ann@example.com")
    b = SIGNER.unsubscribe_token("ann@example.com", "launch")
    assert a != b
    assert SIGNER.verify_unsubscribe(b) == ("ann@example.com", "launch")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " https://acme.example/",
        "java\tscript:alert(1)",
        "data:text/html,<script>x</script>",
        "//evil.example/",
        "https:\\\\evil.example",
        "https:///path-only",
        "ftp://acme.example/",
        "https://acme.example/a b",
        "https://acme.example/\r\nx",
        "",
    ],
)
def test_click_urls_must_be_http(url: str) -> None:
    with pytest.raises(ValueError):
        SIGNER.click_token(1, url)
    # Even correctly signed (only possible with the key), a verifier refuses to redirect there.
    with pytest.raises(BadToken):
        SIGNER.verify_click(forge(b"click", b"1\x00" + url.encode()))


def test_malformed_payloads_with_a_valid_signature_are_refused() -> None:
    for payload in (b"", b"-1", b"01", b"1a", b"9" * 21):
        with pytest.raises(BadToken):
            SIGNER.verify_open(forge(b"open", payload))
    for payload in (b"launch", b"a\x00b\x00c", b"\x00b", b"a\x00", b"\xff\x00b"):
        with pytest.raises(BadToken):
            SIGNER.verify_unsubscribe(forge(b"unsubscribe", payload))
    with pytest.raises(BadToken):
        SIGNER.verify_click(forge(b"click", b"1"))


def test_bad_inputs_to_the_signer() -> None:
    for bad in (-1, True, 1.5):
        with pytest.raises(ValueError):
            SIGNER.open_token(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        SIGNER.unsubscribe_token("a\x00b", "c")
    with pytest.raises(ValueError):
        SIGNER.unsubscribe_token("launch", "")
    with pytest.raises(ValueError):
        LinkSigner(b"")


@settings(max_examples=300)
@given(st.text(max_size=200))
def test_garbage_is_always_bad_token(garbage: str) -> None:
    for verify in (SIGNER.verify_unsubscribe, SIGNER.verify_open, SIGNER.verify_click):
        with pytest.raises(BadToken):
            verify(garbage)


@settings(max_examples=200)
@given(
    campaign=st.text(min_size=1).filter(lambda s: "\x00" not in s),
    recipient=st.emails() | st.text(min_size=1).filter(lambda s: "\x00" not in s),
    row=st.integers(0, 2**63),
)
def test_any_value_round_trips(campaign: str, recipient: str, row: int) -> None:
    try:
        token = SIGNER.unsubscribe_token(campaign, recipient)
    except UnicodeEncodeError:  # lone surrogates have no UTF-8 form; no list can hold them
        return
    assert SIGNER.verify_unsubscribe(token) == (campaign, recipient)
    assert SIGNER.verify_open(SIGNER.open_token(row)) == row


def test_message_ids_are_references_too() -> None:
    """Tracked mail names its message by Message-ID (what the composer knows); brackets are
    optional and dropped, and the row-id and Message-ID forms cannot be confused."""
    token = SIGNER.open_token("<0f1e2d@acme.example>")
    assert SIGNER.verify_open(token) == "0f1e2d@acme.example"
    assert SIGNER.open_token("0f1e2d@acme.example") == token
    url = "https://acme.example/pricing?utm=x"
    assert SIGNER.verify_click(SIGNER.click_token("<a.b@c>", url)) == ("a.b@c", url)
    assert isinstance(SIGNER.verify_open(SIGNER.open_token(7)), int)
    for bad in ("no-at-sign", "a>b@c", "a b@c", "ä@b.example", "@", "a@", "x" * 300 + "@b"):
        with pytest.raises(ValueError):
            SIGNER.open_token(bad)
    # Correctly signed but not a Message-ID (only with the key): still refused.
    for payload in (b"a@b\x01", b"a@", b"<a@b>", b"a@b c"):
        with pytest.raises(BadToken):
            SIGNER.verify_open(forge(b"open", payload))


@settings(max_examples=200)
@given(
    left=st.text("abcdef0123456789.-_$", min_size=1, max_size=60),
    right=st.text("abcdefghijklmnop.-", min_size=1, max_size=60),
    path=st.text("abcxyz/?=&%-._~", max_size=200),
)
def test_any_message_id_and_url_round_trip(left: str, right: str, path: str) -> None:
    ref = f"{left}@{right}"
    url = f"https://shop.example/{path}"
    assert SIGNER.verify_open(SIGNER.open_token(f"<{ref}>")) == ref
    assert SIGNER.verify_click(SIGNER.click_token(ref, url)) == (ref, url)


def test_urls() -> None:
    assert unsubscribe_url("https://mail.acme.example", "T") == "https://mail.acme.example/u/T"
    assert unsubscribe_url("https://mail.acme.example/", "T") == "https://mail.acme.example/u/T"
    assert open_url("http://127.0.0.1:8470", "T") == "http://127.0.0.1:8470/o/T"
    assert click_url("https://x.example/base/", "T") == "https://x.example/base/c/T"


# ---------------------------------------------------------------- the key


def test_configured_secret_wins_and_creates_no_file(tmp_path: Path) -> None:
    assert load_or_create_key(tmp_path / "state", "s3cret") == b"s3cret"
    assert not (tmp_path / "state").exists()


def test_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    state = tmp_path / "state" / "nested"
    old = os.umask(0)  # a careless umask must not make the key world-readable
    try:
        first = load_or_create_key(state, None)
    finally:
        os.umask(old)
    path = state / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and bytes.fromhex(first.decode())
    assert load_or_create_key(state, None) == first
    assert load_or_create_key(state, "") == first  # an empty variable counts as unset
    assert path.read_bytes().strip() == first  # what campaignctl preview reads
    # Tokens made before a restart still verify after it.
    token = LinkSigner(first).open_token(3)
    assert LinkSigner(load_or_create_key(state, None)).verify_open(token) == 3


def test_empty_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_or_create_key(tmp_path, None)


def test_unusable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    with pytest.raises(ConfigError, match="secret_env"):
        load_or_create_key(blocker, None)

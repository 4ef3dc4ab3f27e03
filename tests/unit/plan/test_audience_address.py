"""Addresses: display and SMTP forms, keys, and the fast path agreeing with email-validator."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from campaignd.plan.audience_address import Address, address_digest, domain_forms, parse_address


def test_idn_domain_has_a_unicode_and_an_ascii_form() -> None:
    a = parse_address("user@bücher.example")
    assert a == Address(
        key="user@bücher.example",
        email="user@bücher.example",
        smtp_address="user@xn--bcher-kva.example",
        domain="bücher.example",
    )
    assert not a.needs_smtputf8
    # the A-label spelling is the same recipient
    assert parse_address("User@XN--BCHER-KVA.example").key == a.key


def test_case_is_kept_for_display_and_dropped_from_the_key() -> None:
    a = parse_address("  Ann.Lee@Example.COM ")
    assert (a.email, a.smtp_address, a.domain, a.key) == (
        "Ann.Lee@example.com",
        "Ann.Lee@example.com",
        "example.com",
        "ann.lee@example.com",
    )


def test_unicode_local_part_needs_smtputf8() -> None:
    a = parse_address("chloé@example.net")
    assert a.smtp_address == "chloé@example.net"
    assert a.needs_smtputf8


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "no address"),
        ("ann.example.com", "must have an @-sign"),
        ("ann@example", "should have a period"),
        ("ann@@example.com", "@-sign"),
        ("ann@localhost.test", "special-use or reserved"),
        ("Ann <ann@example.com>", "display name"),
        ("a..b@example.com", "two periods in a row"),
    ],
)
def test_invalid_addresses_carry_email_validators_reason(text: str, reason: str) -> None:
    with pytest.raises(EmailNotValidError, match=reason):
        parse_address(text)


def test_domain_forms() -> None:
    assert domain_forms("XN--BCHER-KVA.example") == ("bücher.example", "xn--bcher-kva.example")
    assert domain_forms("Acme.Example") == ("acme.example", "acme.example")
    assert domain_forms("-bad.example") is None


def test_digest_is_a_stable_64_bit_integer() -> None:
    d = address_digest("ann@example.com")
    assert d == address_digest("ann@example.com") and 0 <= d < 2**64
    assert d != address_digest("ann@example.org")


def _library(text: str) -> Address | str:
    """What email-validator alone says (the reference for the fast path)."""
    try:
        v = validate_email(text.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        return str(exc)
    smtp = v.ascii_email or f"{v.local_part}@{v.ascii_domain}"
    return Address(v.normalized.lower(), v.normalized, smtp, v.domain)


def _ours(text: str) -> Address | str:
    try:
        return parse_address(text)
    except EmailNotValidError as exc:
        return str(exc)


# Mostly near-valid input, so that both paths and both outcomes are exercised often.
ATEXT = st.from_regex(r"[a-zA-Z0-9!#$%&'*+/=?^_`{|}~.-]{1,20}", fullmatch=True)
PLAIN = st.from_regex(r"[a-zA-Z0-9_+-]{1,10}(\.[a-zA-Z0-9_-]{1,8})?", fullmatch=True)
LOCAL = st.one_of(
    PLAIN,
    PLAIN,
    ATEXT,
    st.text(st.sampled_from("abcXYZ09.+-_!#'\"é ()<>[]\\@"), max_size=12),
    st.sampled_from(["postmaster", "Abuse", "ann", "a" * 64, "a" * 65]),
    st.integers(1, 90).map(lambda n: "l" * n),
)
LDH = st.from_regex(
    r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?|[a-zA-Z0-9-]{1,5}", fullmatch=True
)
LABEL = st.one_of(
    LDH,
    LDH,
    LDH,
    st.text(st.sampled_from("abzAZ09-é_üß.。"), max_size=8),
    st.sampled_from(
        [
            "xn--bcher-kva",
            "xn--zz",
            "ab--cd",
            "a" * 63,
            "a" * 64,
            "123",
            "test",
            "localhost",
            "arpa",
            "ONION",
            "example",
            "com",
            "Com",
            "invalid",
            "local",
            "x1",
        ]
    ),
)
TLD = st.sampled_from(["com", "example", "DE", "c0m", "1", "x-y", "", "test", "xn--p1ai"])
DOMAIN = st.one_of(
    st.builds(lambda labels, tld: ".".join([*labels, tld]), st.lists(LABEL, max_size=3), TLD),
    st.lists(LABEL, min_size=1, max_size=4).map(".".join),
    st.integers(150, 260).map(lambda n: ("d" * 60 + ".") * (n // 61) + "c" * (n % 61) + ".com"),
)
AT = st.sampled_from(["@", "@", "@", "@", "@@", " @", "", "@ "])


@settings(max_examples=1500, deadline=None)
@given(LOCAL, AT, DOMAIN)
@example("a" * 64, "@", ("d" * 60 + ".") * 3 + "c" * 4 + ".com")
@example("abuse", "@", "Example.com")
def test_fast_path_agrees_with_email_validator(local: str, at: str, domain: str) -> None:
    text = local + at + domain
    assume(text.strip())  # empty cells have their own message
    assert _ours(text) == _library(text)

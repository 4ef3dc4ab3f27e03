"""feedback/mailparse.py: the defensive readers every recogniser relies on."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaignd.feedback.mailparse import (
    address_of,
    header,
    mail_identity,
    message_ids,
    parse_mail,
    referenced_ids,
)


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("rfc822; Ann@Example.COM", "Ann@example.com"),
        ("rfc822;ann@example.com", "ann@example.com"),
        ("x-local; ann@example.com", "ann@example.com"),
        ("Ann <ann@example.com>", "ann@example.com"),
        ("<ann@example.com>", "ann@example.com"),
        ('"Lee; Jr" <lee@example.com>', "lee@example.com"),
        ("ann@example.com, bob@example.com", "ann@example.com"),
        ("<redacted>", None),
        ("undisclosed-recipients:;", None),
        ("", None),
        (None, None),
    ],
)
def test_address_of(value: str | None, want: str | None) -> None:
    assert address_of(value) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("<a@b.example>", ["a@b.example"]),
        ("<a@b.example> <c@d.example>", ["a@b.example", "c@d.example"]),
        ("<a@b.example>,<c@d.example>", ["a@b.example", "c@d.example"]),
        ("a@b.example", ["a@b.example"]),  # some clients drop the brackets
        ("not an id", []),
        ("", []),
    ],
)
def test_message_ids(value: str, want: list[str]) -> None:
    assert message_ids(value) == want


def test_referenced_ids_nearest_first_without_repeats() -> None:
    msg = parse_mail(b"In-Reply-To: <c@x>\nReferences: <a@x>\n <b@x>\n <c@x>\n\n")
    assert referenced_ids(msg) == ("c@x", "b@x", "a@x")
    assert referenced_ids(parse_mail(b"Subject: new\n\n")) == ()


def test_headers_are_decoded_and_unfolded() -> None:
    msg = parse_mail(
        b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\n  aus Berlin\n"
        b"X-Raw: Stra\xc3\x9fe\n"
        b"X-Latin: Stra\xdfe\n"
        b"X-Broken: =?nonsense?Q?abc?=\n\n"
    )
    assert header(msg, "subject") == "Grüße aus Berlin"
    assert header(msg, "X-Raw") == "Straße"
    assert header(msg, "X-Latin") == "Straße"
    assert header(msg, "X-Broken") == "=?nonsense?Q?abc?="
    assert header(msg, "X-Missing") is None


def test_mail_identity_prefers_the_message_id() -> None:
    a = b"Message-ID: <m1@x>\nSubject: a\n\n"
    b = b"Received: by y\nMessage-ID: <m1@x>\nSubject: a\n\n"
    assert mail_identity(parse_mail(a), a) == mail_identity(parse_mail(b), b) == "id:m1@x"
    c = b"Subject: a\n\n"
    assert mail_identity(parse_mail(c), c).startswith("sha256:")
    assert mail_identity(parse_mail(c), c) != mail_identity(parse_mail(c + b"x"), c + b"x")


def test_event_rejects_naive_times_and_unknown_kinds() -> None:
    from campaignd.feedback.event import FeedbackEvent

    good = {
        "kind": "bounced",
        "recipient": None,
        "message_id": None,
        "message_ref": None,
        "detail": "",
        "status": None,
        "permanent": True,
        "at": datetime(2026, 1, 1, tzinfo=UTC),
        "source": "t",
        "dedupe_key": "k",
    }
    FeedbackEvent(**good)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        FeedbackEvent(**{**good, "at": datetime(2026, 1, 1)})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        FeedbackEvent(**{**good, "kind": "bounce"})  # type: ignore[arg-type]


def test_dedupe_key_parts_cannot_run_together() -> None:
    from campaignd.feedback.event import make_dedupe_key

    assert make_dedupe_key("ab", "c") != make_dedupe_key("a", "bc")
    assert make_dedupe_key(None) != make_dedupe_key("None")
    assert make_dedupe_key("x", 1) == make_dedupe_key("x", 1)

"""feedback/recognize.py on real-world mails (mails/*.eml) and on hand-made edge cases."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaignd.feedback import FeedbackEvent, VerpCodec, recognize

MAILS = Path(__file__).parent / "mails"
VERP = VerpCodec(b"test-verp-key", "bounces+{token}@mail.acme.example")
NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def run(raw: bytes, *, verp: VerpCodec | None = VERP, now: datetime = NOW) -> list[FeedbackEvent]:
    return recognize(raw, source="maildir:/var/mail/campaignd", now=now, verp=verp)


def fixture(name: str) -> bytes:
    return (MAILS / name).read_bytes()


def mail(headers: str, body: str = "Hello.\n") -> bytes:
    """A small mail from header lines written one per line, no indentation."""
    return (headers.strip() + "\n\n" + body).encode()


@dataclass(frozen=True)
class Want:
    kind: str
    recipient: str | None
    message_id: str | None
    message_ref: int | None
    status: str | None
    permanent: bool
    detail_has: str


FIXTURES = {
    "postfix-dsn-user-unknown.eml": Want(
        "bounced", "jdoe@agency.example", "campaignd.4711.q4-outreach@mail.acme.example",
        4711, "5.1.1", True, "User unknown in virtual mailbox table",
    ),
    "postfix-dsn-delayed.eml": Want(
        "deferred_bounce", "mark@studio.example", "campaignd.4720.q4-outreach@mail.acme.example",
        None, "4.4.1", False, "Connection timed out",
    ),
    "gmail-dsn.eml": Want(
        "bounced", "no.such.person@gmail.com", "campaignd.4712.q4-outreach@mail.acme.example",
        4712, "5.1.1", True, "does not exist",
    ),
    "exchange-dsn.eml": Want(
        "bounced", "Lee.Chen@contoso.example", "campaignd.4740.q4-outreach@mail.acme.example",
        None, "5.1.10", True, "RESOLVER.ADR.RecipientNotFound",
    ),
    "exim-prose-bounce.eml": Want(
        "bounced", "kim@oldhost.example", "campaignd.4730.q4-outreach@mail.acme.example",
        None, "5.1.1", True, "No such user here",
    ),
    "qmail-prose-bounce.eml": Want(
        "bounced", "sam@legacy.example", "campaignd.4731.q4-outreach@mail.acme.example",
        None, "5.1.1", True, "no mailbox here",
    ),
    "mangled-verp-bounce.eml": Want(
        "bounced", None, None, 4714, None, True, "550 Host unknown",
    ),
    "yahoo-arf.eml": Want(
        "complained", "pat.lee@yahoo.com", "campaignd.4715.q4-outreach@mail.acme.example",
        4715, None, False, "Yahoo!-Mail-Feedback",
    ),
    "microsoft-arf.eml": Want(
        "complained", None, "campaignd.90210.q4-outreach@mail.acme.example",
        90210, None, False, "Microsoft Junk Mail Reporting Program",
    ),
    "outlook-ooo.eml": Want(
        "auto_reply", "robin.meyer@fabrikam.example",
        "campaignd.4750.q4-outreach@mail.acme.example", None, None, False, "Auto-Submitted",
    ),
    "thunderbird-reply.eml": Want(
        "replied", "ana@studio.example", "campaignd.4761.q4-followup@mail.acme.example",
        None, None, False, "Re: Quick question about Studio",
    ),
    "unrelated.eml": Want(
        "unmatched", "billing@vendor.example", None, None, None, False, "invoice for November",
    ),
}  # fmt: skip


def test_every_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in MAILS.glob("*.eml")) == sorted(FIXTURES)


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_fixture_mails(name: str) -> None:
    want = FIXTURES[name]
    events = run(fixture(name))
    assert len(events) == 1
    e = events[0]
    got = Want(e.kind, e.recipient, e.message_id, e.message_ref, e.status, e.permanent, "")
    assert got == replace(want, detail_has="")
    assert want.detail_has in e.detail
    assert e.source == "maildir:/var/mail/campaignd"
    assert e.at.tzinfo is not None and e.at <= NOW
    assert len(e.dedupe_key) == 64


def test_report_time_is_the_mails_date() -> None:
    (e,) = run(fixture("postfix-dsn-user-unknown.eml"))
    assert e.at == datetime(2026, 12, 1, 9, 2, 11, tzinfo=UTC)


def test_reply_lists_every_candidate_nearest_first() -> None:
    (e,) = run(fixture("thunderbird-reply.eml"))
    assert e.candidates == (
        "campaignd.4761.q4-followup@mail.acme.example",
        "campaignd.4760.q4-outreach@mail.acme.example",
    )


def test_without_a_codec_nothing_is_decoded() -> None:
    (e,) = run(fixture("postfix-dsn-user-unknown.eml"), verp=None)
    assert (e.kind, e.message_ref, e.recipient) == ("bounced", None, "jdoe@agency.example")
    # A VERP-only bounce without the codec is just mail nobody can place.
    (e,) = run(fixture("mangled-verp-bounce.eml"), verp=None)
    assert e.kind == "unmatched"


def test_a_codec_with_another_key_does_not_match() -> None:
    other = VerpCodec(b"another-key", "bounces+{token}@mail.acme.example")
    (e,) = run(fixture("postfix-dsn-user-unknown.eml"), verp=other)
    assert e.message_ref is None


# ------------------------------------------------------------------ dedupe


def test_same_mail_twice_gives_the_same_keys() -> None:
    raw = fixture("gmail-dsn.eml")
    assert [e.dedupe_key for e in run(raw)] == [e.dedupe_key for e in run(raw)]
    # The IMAP copy of the same mail carries other delivery headers: still the same mail.
    imap_copy = b"X-IMAP-Flags: \\Seen\r\nReceived: from relay by imap\r\n" + raw
    assert run(imap_copy)[0].dedupe_key == run(raw)[0].dedupe_key
    # Processed at another time, too.
    assert run(raw, now=NOW + timedelta(days=1))[0].dedupe_key == run(raw)[0].dedupe_key


def test_different_mails_give_different_keys() -> None:
    keys = {run(fixture(name))[0].dedupe_key for name in FIXTURES}
    assert len(keys) == len(FIXTURES)


def test_without_message_id_the_bytes_identify_the_mail() -> None:
    a = mail("From: a@x.example\nSubject: hello")
    b = mail("From: a@x.example\nSubject: hello again")
    assert run(a)[0].dedupe_key == run(a)[0].dedupe_key
    assert run(a)[0].dedupe_key != run(b)[0].dedupe_key


MULTI_DSN = b"""\
From: MAILER-DAEMON@mail.acme.example
To: outreach@acme.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <multi-1@mail.acme.example>
Date: Tue, 1 Dec 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b"

--b
Content-Type: text/plain

Several recipients.

--b
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.acme.example

Final-Recipient: rfc822; a@one.example
Action: failed
Status: 5.1.1

Final-Recipient: rfc822; b@two.example
Action: failed
Status: 4.4.7
Diagnostic-Code: X-Postfix; delivery temporarily suspended

Final-Recipient: rfc822; c@three.example
Action: delivered
Status: 2.0.0

Final-Recipient: x-local; d@four.example
Action: failed

--b--
"""


def test_one_event_per_dsn_recipient() -> None:
    events = run(MULTI_DSN)
    assert [(e.kind, e.recipient, e.status, e.permanent) for e in events] == [
        ("bounced", "a@one.example", "5.1.1", True),
        # Given up after temporary errors: final for the message, no proof the address is bad.
        ("deferred_bounce", "b@two.example", "4.4.7", False),
        ("delivered", "c@three.example", "2.0.0", False),
        ("bounced", "d@four.example", None, True),
    ]
    assert len({e.dedupe_key for e in events}) == 4
    assert events[1].detail.startswith("4.4.7 delivery temporarily suspended")


def test_a_dsn_without_action_uses_the_status_class() -> None:
    raw = MULTI_DSN.replace(b"Action: failed\nStatus: 5.1.1", b"Status: 4.2.2")
    assert run(raw)[0].kind == "deferred_bounce"


# ------------------------------------------------------------------ auto-replies


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ("Subject: Re: Quick question\nAuto-Submitted: auto-replied", "Auto-Submitted"),
        ("Subject: Re: Quick question\nAuto-Submitted: auto-generated; owner-email=x", "auto-"),
        ("Subject: Re: Quick question\nX-Autoreply: yes", "X-Autoreply"),
        ("Subject: Re: Quick question\nX-Autorespond: Quick question", "X-Autorespond"),
        ("Subject: Re: Quick question\nX-Autogenerated: Reply", "X-Autogenerated"),
        ("Subject: Re: Quick question\nPrecedence: auto_reply", "Precedence"),
        ("Subject: I am on vacation (was: Quick question)\nPrecedence: bulk", "Precedence: bulk"),
        ("Subject: Out of Office: Quick question", "out-of-office"),
        ("Subject: Automatic reply: Quick question", "out-of-office"),
        ("Subject: AUTO: Kim Lee is out of the office (returning 12/07/2026)", "out-of-office"),
        ("Subject: Abwesenheitsnotiz: Quick question", "out-of-office"),
        ("Subject: Automatische Antwort: Quick question", "out-of-office"),
        ("Subject: Réponse automatique : Quick question", "out-of-office"),
        ("Subject: =?UTF-8?Q?R=C3=A9ponse_automatique_:_Quick?=", "out-of-office"),
        ("Subject: Absent du bureau", "out-of-office"),
        ("Subject: Respuesta automática: Quick question", "out-of-office"),
        ("Subject: Fuera de la oficina", "out-of-office"),
    ],
)
def test_auto_replies(headers: str, reason: str) -> None:
    raw = mail(
        "From: Kim <kim@client.example>\nTo: outreach@acme.example\n"
        "In-Reply-To: <campaignd.1.c@mail.acme.example>\n" + headers
    )
    (e,) = run(raw)
    assert e.kind == "auto_reply"
    assert reason in e.detail
    assert e.recipient == "kim@client.example"
    assert e.candidates == ("campaignd.1.c@mail.acme.example",)


@pytest.mark.parametrize(
    "headers",
    [
        "Subject: Re: Quick question\nAuto-Submitted: no",
        "Subject: Re: our out of office policy",  # a person, not an autoresponder
        "Subject: Re: Quick question\nPrecedence: bulk",  # bulk alone is a newsletter habit
        "Subject: Re: Quick question\nX-Autogenerated: Forward",
        "Subject: Re: Quick question\nX-Autoreply: no",
    ],
)
def test_people_are_not_autoresponders(headers: str) -> None:
    raw = mail(
        "From: kim@client.example\nTo: outreach@acme.example\n"
        "In-Reply-To: <campaignd.1.c@mail.acme.example>\n" + headers
    )
    assert run(raw)[0].kind == "replied"


def test_an_auto_reply_to_the_verp_address_is_not_a_bounce() -> None:
    raw = mail(
        f"From: kim@client.example\nTo: {VERP.address(31)}\n"
        "Subject: Out of office\nAuto-Submitted: auto-replied"
    )
    (e,) = run(raw)
    assert (e.kind, e.message_ref, e.permanent) == ("auto_reply", 31, False)


# ------------------------------------------------------------------ VERP edge cases


def test_unreadable_delay_warning_to_verp_is_temporary() -> None:
    raw = mail(
        f"Return-Path: <>\nFrom: postmaster@mx.example\nTo: {VERP.address(8)}\n"
        "Subject: Delivery delayed: Quick question",
        "We are still trying to deliver your message. Do not resend it.\n",
    )
    (e,) = run(raw)
    assert (e.kind, e.message_ref, e.permanent, e.status) == ("deferred_bounce", 8, False, None)


def test_verp_bounce_status_comes_from_the_text() -> None:
    raw = mail(
        f"From: Mail System <system@gw.example>\nDelivered-To: {VERP.address(9)}\nSubject: Report",
        "Remote said: 552 5.2.2 Quota exceeded\n",
    )
    (e,) = run(raw)
    assert (e.kind, e.message_ref, e.status, e.permanent) == ("bounced", 9, "5.2.2", True)


def test_a_person_writing_to_the_verp_address_with_references_is_a_reply() -> None:
    raw = mail(
        f"From: kim@client.example\nTo: {VERP.address(10)}\nSubject: Re: Quick question\n"
        "In-Reply-To: <campaignd.10.c@mail.acme.example>"
    )
    (e,) = run(raw)
    assert (e.kind, e.message_ref, e.message_id) == (
        "replied",
        10,
        "campaignd.10.c@mail.acme.example",
    )


def test_a_forged_verp_address_is_ignored() -> None:
    token = VERP.token(10)
    forged = f"bounces+{token[:-1]}{'b' if token[-1] != 'b' else 'c'}@mail.acme.example"
    raw = mail(f"From: kim@client.example\nTo: {forged}\nSubject: hello")
    (e,) = run(raw)
    assert (e.kind, e.message_ref) == ("unmatched", None)


# ------------------------------------------------------------------ ARF variants

ARF = """\
From: reports@isp.example
To: fbl@acme.example
Subject: report
Message-ID: <arf-{n}@isp.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="b"

--b
Content-Type: text/plain

A report.

--b
Content-Type: message/feedback-report

Feedback-Type: {kind}
User-Agent: ISP-FBL/1.0
Version: 1
Original-Rcpt-To: <lee@isp.example>

--b
Content-Type: text/rfc822-headers

From: outreach@acme.example
To: someone-else@isp.example
Message-ID: <campaignd.55.c@mail.acme.example>

--b--
"""


@pytest.mark.parametrize("kind", ["abuse", "fraud", "virus", "other"])
def test_complaint_types(kind: str) -> None:
    (e,) = run(ARF.format(kind=kind, n=1).encode())
    assert (e.kind, e.recipient, e.message_id) == (
        "complained",
        "lee@isp.example",  # Original-Rcpt-To wins over the original's To
        "campaignd.55.c@mail.acme.example",
    )


@pytest.mark.parametrize("kind", ["auth-failure", "not-spam"])
def test_feedback_reports_that_are_not_complaints(kind: str) -> None:
    (e,) = run(ARF.format(kind=kind, n=2).encode())
    assert e.kind == "unmatched"
    assert kind in e.detail


# ------------------------------------------------------------------ robustness


def test_mail_dates_that_cannot_be_right_give_way_to_now() -> None:
    future = mail("From: a@x.example\nDate: Fri, 1 Jan 2100 00:00:00 +0000")
    ancient = mail("From: a@x.example\nDate: Thu, 1 Jan 1970 00:00:00 +0000")
    garbage = mail("From: a@x.example\nDate: yesterday-ish")
    assert [run(m)[0].at for m in (future, ancient, garbage)] == [NOW, NOW, NOW]
    naive = mail("From: a@x.example\nDate: Wed, 2 Dec 2026 10:00:00 -0000")
    assert run(naive)[0].at == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\xff\xfe garbage",
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\n\n--x\n",
        b"Content-Type: multipart/report; report-type=feedback-report\n\nno parts",
        b"From: =?bogus-charset?Q?x?= <a@b>\nIn-Reply-To: <<<>>>\n\n",
        b"Content-Type: message/rfc822\n\n",
    ],
)
def test_broken_mail_is_unmatched_not_an_error(raw: bytes) -> None:
    events = run(raw)
    assert [e.kind for e in events] == ["unmatched"]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=2000).map(str.encode))
def test_never_raises_and_always_answers(raw: bytes) -> None:
    events = run(raw)
    assert len(events) >= 1
    assert all(e.at.tzinfo is not None for e in events)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "Auto-Submitted: auto-replied",
                "In-Reply-To: <a@b.example>",
                "Return-Path: <>",
                "Subject: Undeliverable: x",
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b",
                f"To: {VERP.address(3)}",
                "From: MAILER-DAEMON@x.example",
            ]
        ),
        max_size=5,
    ),
    st.sampled_from(["", "550 5.1.1 user unknown <x@y.example>\n", "\n--b\n\n--b--\n"]),
)
def test_header_soup_never_raises(headers: list[str], body: str) -> None:
    events = run(mail("\n".join(headers) or "X-Nothing: 1", body))
    assert events and all(len(e.dedupe_key) == 64 for e in events)

"""feedback/recognize.py on real-world mails (mails/*.eml) and on hand-made edge cases."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaignd.feedback import FeedbackEvent, VerpCodec, recognize
from campaignd.feedback.apply import suppresses_address
from campaignd.feedback.mailparse import parse_mail
from campaignd.feedback.nonstandard import diagnostic, looks_like_bounce

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
    # Postfix's DSN for a remote reply without an enhanced code: Status 5.0.0, the words decide.
    "postfix-dsn-5.0.0-unknown-user.eml": Want(
        "bounced", "ann@oldmail.example", "campaignd.4716.q4-outreach@mail.acme.example",
        4716, "5.0.0", True, "550 unknown user <ann@oldmail.example>",
    ),
    "postfix-dsn-5.0.0-sendmail-user-unknown.eml": Want(
        "bounced", "lee@mailhost.example", "campaignd.4717.q4-outreach@mail.acme.example",
        4717, "5.0.0", True, "550 <lee@mailhost.example>... User unknown",
    ),
    "postfix-dsn-5.3.0-no-such-user.eml": Want(
        "bounced", "kai@corp.example", "campaignd.4718.q4-outreach@mail.acme.example",
        None, "5.3.0", True, "553 5.3.0 <kai@corp.example>... No such user here",
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


# ------------------------------------------------------------------ dead addresses


# Which fixture bounces say the address is dead, by the rule events.py applies.
SUPPRESSES = {
    "postfix-dsn-user-unknown.eml": True,
    "postfix-dsn-5.0.0-unknown-user.eml": True,  # Status 5.0.0 + "550 unknown user"
    "postfix-dsn-5.0.0-sendmail-user-unknown.eml": True,
    "postfix-dsn-5.3.0-no-such-user.eml": True,  # Sendmail's generic 5.3.0
    "gmail-dsn.eml": True,
    "exchange-dsn.eml": True,
    "exim-prose-bounce.eml": True,
    "qmail-prose-bounce.eml": True,
    "postfix-dsn-delayed.eml": False,
}


@pytest.mark.parametrize("name", sorted(SUPPRESSES))
def test_dead_addresses_are_suppressed(name: str) -> None:
    (e,) = run(fixture(name))
    assert suppresses_address(e) is SUPPRESSES[name]


def test_a_policy_block_behind_a_generic_status_keeps_the_address() -> None:
    raw = fixture("postfix-dsn-5.0.0-unknown-user.eml").replace(
        b"550 unknown user <ann@oldmail.example>",
        b"550 unknown user <ann@oldmail.example> blocked by policy",
    )
    (e,) = run(raw)
    assert (e.kind, e.status) == ("bounced", "5.0.0")
    assert not suppresses_address(e)


OPENSMTPD_DSN = b"""\
Return-Path: <>
Subject: Delivery status notification: error
From: Mailer Daemon <MAILER-DAEMON@mx.relay.example>
To: bounces@mail.acme.example
Date: Tue, 1 Dec 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/mixed;boundary="99/mx.relay.example"
Message-ID: <f778c4a058120b20@mx.relay.example>

This is a MIME-encapsulated message.

--99/mx.relay.example
Content-Type: text/plain; charset=us-ascii

    An error has occurred while attempting to deliver a message for
    the following list of recipients:

sam@gone.example: Domain does not exist

--99/mx.relay.example
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.relay.example

Final-Recipient: rfc822; sam@gone.example
Action: error
Status: 5.0.0

--99/mx.relay.example--
"""


def test_a_dsn_without_diagnostic_code_takes_the_reason_from_its_prose() -> None:
    # OpenSMTPD says why only in the human-readable part.
    (e,) = run(OPENSMTPD_DSN)
    assert (e.kind, e.recipient, e.status) == ("bounced", "sam@gone.example", "5.0.0")
    assert e.detail == "5.0.0 Domain does not exist"
    assert suppresses_address(e)
    quota = OPENSMTPD_DSN.replace(b"Domain does not exist", b"Mailbox quota exceeded")
    (e,) = run(quota)
    assert e.detail == "5.0.0 Mailbox quota exceeded" and not suppresses_address(e)


# ------------------------------------------------------------------ the non-standard gate


@pytest.mark.parametrize(
    ("headers", "is_bounce"),
    [
        ("Return-Path: <>\nFrom: x@relay.example\nSubject: hi", True),
        ("Return-Path: <MAILER-DAEMON>\nFrom: Mail Delivery Subsystem <admin@d.example>\n"
         "Subject: Automatically rejected mail", True),
        ("Return-Path: <MAILER-DAEMON@sb7.example>\nSubject: Utilisateur non recensé", True),
        ("Return-Path: <postmaster@btconnect.example>\nSubject: Report", True),
        ("From: MDaemon@webmail.example\nSubject: Warning: x@y.example - User unknown!", True),
        ("From: Mailer_Daemon@relay.example\nSubject: hi", True),
        ("From: \"Mail Delivery System\" <bounce-handler@relay.example>\nSubject: x", True),
        ("From: <Postmaster\\@example.com@xxx.example>\nSubject: Mail Delivery Warning", True),
        ("From: relay@x.example\nSubject: Delivery Status Notification (Delay)", True),
        # People, and people's subjects that mention mail.
        ("Return-Path: <ann@studio.example>\nFrom: ann@studio.example\nSubject: Re: hello",
         False),
        ("From: postmaster-fan@x.example\nSubject: about our mail delivery", False),
        ("From: daemon.tools@x.example\nSubject: warning about your invoice", False),
    ],
)  # fmt: skip
def test_the_bounce_gate(headers: str, is_bounce: bool) -> None:
    assert looks_like_bounce(parse_mail(mail(headers))) is is_bounce


def test_a_mailer_daemon_return_path_alone_lets_a_prose_bounce_through() -> None:
    raw = mail(
        "Return-Path: <MAILER-DAEMON@relay.example>\nDate: Tue, 1 Dec 2026 10:00:00 +0000\n"
        "From: Relay <notices@relay.example>\nSubject: Returned\nTo: bounces@mail.acme.example",
        "Hi. This is the qmail-send program at relay.example.\n"
        "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
        "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
        "<sam@legacy.example>:\nSorry, no mailbox here by that name. (#5.1.1)\n",
    )
    (e,) = run(raw)
    assert (e.kind, e.recipient, e.status) == ("bounced", "sam@legacy.example", "5.1.1")
    assert suppresses_address(e)
    # The same mail from a person's address, with a person's subject, is left alone.
    person = raw.replace(b"<MAILER-DAEMON@relay.example>", b"<ann@studio.example>")
    assert run(person)[0].kind == "unmatched"


# ------------------------------------------------------------------ the diagnostic line


def test_the_diagnostic_skips_mime_headers_and_preambles() -> None:
    # A mail reader that could not split the parts leaves them in the text (microsoft_02).
    text = (
        "This message is in MIME format. Since your mail reader does not understand\n"
        "this format, some or all of this message may not be legible.\n\n"
        "------_=_NextPart_000_01C276B8.EB5EB90E\n"
        'Content-Type: text/plain;\n\tcharset="iso-8859-1"\n'
        "Content-Transfer-Encoding: 7bit\n\n"
        "Your message did not reach the following recipient(s):\n\n"
        "userx@example.com on Fri, 18 Oct 2002 09:13:24 -0600\n"
        "    The recipient name is not recognized\n"
    )
    assert diagnostic(text) == "The recipient name is not recognized"
    # The returned original's MIME header, with a 506 in its boundary, is not a reply code.
    pasted = (
        "The following message, addressed to 'userx@example.uk',\n"
        "failed because it has not been collected after 30 days\n\n"
        "Content-type: multipart/mixed; boundary=10.0.11.1.506.27298.1035738004\n"
    )
    found = diagnostic(pasted)
    assert "Content" not in found and found.startswith("The following message")
    # A line with a reply code still wins over everything else.
    assert diagnostic("Hello.\nContent-Type: text/plain\n550 5.1.1 user unknown\n") == (
        "550 5.1.1 user unknown"
    )


@given(st.text(max_size=2000))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_the_diagnostic_is_one_short_line(text: str) -> None:
    found = diagnostic(text)
    assert "\n" not in found and len(found) <= 300

"""The reply table: what each SMTP reply means for a message (RFC 5321, RFC 3463)."""

from __future__ import annotations

import socket
import ssl

import pytest
from aiosmtplib.errors import (
    SMTPAuthenticationError,
    SMTPConnectError,
    SMTPConnectResponseError,
    SMTPConnectTimeoutError,
    SMTPReadTimeoutError,
    SMTPServerDisconnected,
)
from hypothesis import given
from hypothesis import strategies as st

from campaignd.delivery.classify import Reply, classify, parse_enhanced
from campaignd.delivery.mailbox import (
    DEAD_MAILBOX,
    dead_mailbox_phrase,
    deciding_status,
    is_generic,
    mailbox_does_not_exist,
    names_recipient,
)
from campaignd.delivery.smtp import connection_failure
from campaignd.errors import SecretError

# (code, text, stage) → (kind, enhanced, close_session, slow_down)
TABLE = [
    (250, "2.0.0 Ok: queued as 4FQ1", "eod", "sent", "2.0.0", False, False),
    (250, "OK", "rcpt", "sent", None, False, False),
    (251, "User not local; will forward", "rcpt", "sent", None, False, False),
    (421, "4.7.0 Too many connections, closing", "mail", "deferred", "4.7.0", True, True),
    (421, "Service not available", "eod", "deferred", None, True, True),
    (450, "4.2.1 mailbox busy", "rcpt", "deferred", "4.2.1", False, False),
    (451, "4.7.1 Greylisted, please try again later", "rcpt", "deferred", "4.7.1", False, False),
    (451, "4.7.650 temporarily rate limited due to IP reputation", "eod", "deferred",
     "4.7.650", False, True),
    (450, "too many messages from your IP", "mail", "deferred", None, False, True),
    (452, "4.5.3 Too many recipients", "rcpt", "deferred", "4.5.3", False, False),
    (452, "4.2.2 Mailbox full", "rcpt", "deferred", "4.2.2", False, False),
    (550, "5.1.1 <x@example.com>: Recipient address rejected: User unknown", "rcpt",
     "bounced", "5.1.1", False, False),
    (550, "5.1.2 Host unknown", "rcpt", "bounced", "5.1.2", False, False),
    (553, "5.1.3 Bad destination mailbox address syntax", "rcpt", "bounced", "5.1.3",
     False, False),
    (550, "5.1.10 Recipient address has null MX", "rcpt", "bounced", "5.1.10", False, False),
    (550, "5.1.1 The email account that you tried to reach does not exist", "eod",
     "bounced", "5.1.1", False, False),
    (550, "No such user here", "rcpt", "bounced", None, False, False),
    (550, "Requested action not taken: user unknown", "rcpt", "bounced", None, False, False),
    (550, "User unknown; rejected by policy", "rcpt", "failed", None, False, False),
    # RFC 5321's stock text: servers use it for blocks as well, so it does not suppress.
    (550, "Requested action not taken: mailbox unavailable", "rcpt", "failed", None, False,
     False),
    (554, "5.7.1 Service unavailable; client host blocked using Spamhaus", "rcpt", "failed",
     "5.7.1", False, False),
    (550, "5.7.1 Message rejected as spam", "eod", "failed", "5.7.1", False, False),
    (553, "5.1.8 Sender address rejected: Domain not found", "mail", "failed", "5.1.8",
     False, False),
    (550, "5.1.1 sender unknown", "mail", "failed", "5.1.1", False, False),
    (550, "5.1.7 Bad sender's mailbox address syntax", "rcpt", "failed", "5.1.7", False, False),
    (552, "5.3.4 Message size exceeds fixed limit", "eod", "failed", "5.3.4", False, False),
    (554, "Transaction failed", "eod", "failed", None, False, False),
    (550, "4.1.1 class contradicts the code", "rcpt", "failed", None, False, False),
    (None, "", "eod", "deferred", None, True, False),
    (None, "connection lost during DATA — will retry", "eod", "deferred", None, True, False),
    (354, "End data with <CR><LF>.<CR><LF>", "eod", "deferred", None, True, False),
]  # fmt: skip


@pytest.mark.parametrize(("code", "text", "stage", "kind", "enhanced", "close", "slow"), TABLE)
def test_table(
    code: int | None,
    text: str,
    stage: str,
    kind: str,
    enhanced: str | None,
    close: bool,
    slow: bool,
) -> None:
    reply = classify(code, text, stage=stage)  # type: ignore[arg-type]
    assert (reply.kind, reply.code, reply.enhanced) == (kind, code, enhanced)
    assert (reply.close_session, reply.slow_down) == (close, slow)
    assert reply.stage == stage


def test_summary_and_text_cleanup() -> None:
    reply = classify(550, "5.1.1 <x@example.com>: user unknown", stage="rcpt")
    assert reply.summary() == "550 5.1.1 <x@example.com>: user unknown"
    multi = classify(
        550,
        "5.1.1 The email account that you tried to reach does\n5.1.1 not exist. Please\n"
        "5.1.1 check the address https://support.example/?p=NotFound x1si",
        stage="rcpt",
    )
    assert multi.text == (
        "The email account that you tried to reach does not exist. Please check the address "
        "https://support.example/?p=NotFound x1si"
    )
    long = classify(451, "4.3.0 " + "x" * 1000 + "\x00\x1b", stage="rcpt")
    assert len(long.text) <= 300 and long.text.endswith("…") and long.text.isprintable()
    assert classify(None, "", stage="rcpt").summary() == "no reply at RCPT TO"
    assert Reply("sent", 250, None, "").summary() == "250"
    # The code inside a word is not the code quoted (an outbox file stamped …T135250.58…Z).
    stamped = Reply("sent", 250, None, "written to out/20261204T135250.586513Z-4.eml")
    assert stamped.summary() == "250 written to out/20261204T135250.586513Z-4.eml"
    assert Reply("failed", 535, "5.7.8", "AUTH rejected: 535 5.7.8 bad").summary() == (
        "AUTH rejected: 535 5.7.8 bad"
    )


def test_parse_enhanced() -> None:
    assert parse_enhanced("5.1.1 user unknown") == ("5.1.1", "user unknown")
    assert parse_enhanced("  4.7.650 slow") == ("4.7.650", "slow")
    assert parse_enhanced("5.1.1") == ("5.1.1", "")
    assert parse_enhanced("5.1.1user") == (None, "5.1.1user")
    assert parse_enhanced("3.1.1 not a class") == (None, "3.1.1 not a class")
    assert parse_enhanced("user unknown") == (None, "user unknown")


PEER = "127.0.0.1:2526"


def _wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("exc", "stage", "text", "code"),
    [
        (
            _wrapped(SMTPConnectError("Error connecting"), ConnectionRefusedError(111, "x")),
            "connect",
            "connection refused by 127.0.0.1:2526",
            None,
        ),
        (
            SMTPConnectTimeoutError("Timed out connecting"),
            "connect",
            "timed out after 0.5s at connect talking to 127.0.0.1:2526",
            None,
        ),
        (SMTPReadTimeoutError("x"), "ehlo", "timed out after 0.5s at EHLO talking to "
         "127.0.0.1:2526", None),
        (
            _wrapped(SMTPConnectError("x"), socket.gaierror(-2, "Name or service not known")),
            "connect",
            "cannot resolve 127.0.0.1: Name or service not known",
            None,
        ),
        (
            SMTPConnectResponseError(554, "5.3.2 no SMTP service here"),
            "connect",
            "connect refused by 127.0.0.1:2526: 554 5.3.2 no SMTP service here",
            554,
        ),
        (
            SMTPAuthenticationError(535, "5.7.8 Authentication credentials invalid"),
            "auth",
            "AUTH rejected: 535 5.7.8 Authentication credentials invalid",
            535,
        ),
        (
            SecretError("password_env: environment variable X is not set — export it"),
            "auth",
            "AUTH not attempted: password_env: environment variable X is not set — export it",
            None,
        ),
        (
            SMTPServerDisconnected("Connection lost"),
            "starttls",
            "connection closed by 127.0.0.1:2526 during STARTTLS",
            None,
        ),
        (OSError(101, "Network is unreachable"), "connect",
         "cannot connect to 127.0.0.1:2526: Network is unreachable", None),
        (RuntimeError("boom"), "ehlo", "EHLO failed: RuntimeError: boom", None),
    ],
)  # fmt: skip
def test_connection_failure_texts(
    exc: BaseException, stage: str, text: str, code: int | None
) -> None:
    reply = connection_failure(exc, stage, peer=PEER, timeout=0.5)  # type: ignore[arg-type]
    assert reply.kind == "deferred" and reply.close_session
    assert (reply.text, reply.code) == (text, code)


def test_connection_failure_tls() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] …")
    verify.verify_message = "self-signed certificate"
    reply = connection_failure(verify, "starttls")
    assert reply.text == "TLS handshake failed: certificate verify failed: self-signed certificate"
    wrong = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    wrong.reason = "WRONG_VERSION_NUMBER"
    reply = connection_failure(_wrapped(SMTPConnectError("x"), wrong), "connect", peer=PEER)
    assert reply.text == "TLS handshake failed with 127.0.0.1:2526: wrong version number"


@given(
    code=st.one_of(st.none(), st.integers(min_value=100, max_value=699)),
    text=st.text(max_size=600),
    stage=st.sampled_from(["connect", "ehlo", "starttls", "auth", "mail", "rcpt", "data", "eod"]),
)
def test_classify_is_total_and_consistent(code: int | None, text: str, stage: str) -> None:
    reply = classify(code, text, stage=stage)  # type: ignore[arg-type]
    assert "\n" not in reply.text and len(reply.text) <= 300 and reply.text.isprintable()
    if code is None or not 200 <= code < 600 or 300 <= code < 400:
        assert reply.kind == "deferred" and reply.close_session
    elif code < 300:
        assert reply.kind == "sent"
    elif code < 500:
        assert reply.kind == "deferred"  # a temporary reply never loses the message
        assert reply.close_session == (code == 421)
    else:
        assert reply.kind in ("failed", "bounced")
        if reply.kind == "bounced":  # only a recipient can bounce, never the session
            assert stage in ("rcpt", "data", "eod")
            # a generic code (5.0.0, 5.3.0) leaves it to the words (delivery.mailbox)
            assert (
                reply.enhanced is None
                or reply.enhanced.startswith("5.1.")
                or (is_generic(reply.enhanced))
            )
    if reply.enhanced is not None:
        assert reply.enhanced[0] == str(code)[0]


# ------------------------------------------- "the mailbox does not exist" (delivery.mailbox)

# Real-world replies and DSN diagnostics as (enhanced status or None, text, dead?). The same
# table decides for an SMTP reply at RCPT (classify) and for a bounce report (events, through
# classify with the report's Status): a generic status (X.0.0, 5.3.0) leaves it to the text.
PHRASINGS = [
    # Postfix DSN for a remote reply without an enhanced code: Status 5.0.0.
    ("5.0.0", "host mx.oldmail.example[198.51.100.7] said: 550 unknown user "
     "<ann@oldmail.example> (in reply to RCPT TO command)", True),
    ("5.0.0", "host mx.dom.example[192.0.2.1] said: 550 {mx001-rz3} <anne@dom.example>... "
     "User unknown or not available - Empfaenger unbekannt oder nicht erreichbar", True),
    ("5.0.0", "550 <lee@mailhost.example>... User unknown", True),
    # Sendmail: 553 with the generic 5.3.0.
    ("5.3.0", "553 5.3.0 <kai@corp.example>... No such user here", True),
    ("5.3.0", "553 5.3.0 <a@example.net>... Addressee unknown, relay=[205.208.202.10]", True),
    # Exim.
    (None, "550 Unrouteable address", True),
    ("5.0.0", "550-Verification failed for <x@example.org>\n550 unknown local-part", True),
    # Exchange / Office 365.
    ("5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
     True),
    (None, "The recipient name is not recognized", True),
    ("5.0.0", "550 5.0.0 RESOLVER.ADR.RecipNotFound; not found", True),
    (None, "The email address you entered couldn't be found.", True),
    # Gmail.
    ("5.1.1", "The email account that you tried to reach does not exist. Please try "
     "double-checking the recipient's email address", True),
    ("5.0.0", "550-The email account that you tried to reach does not exist.", True),
    # qmail, MDaemon, Domino, Yahoo.
    (None, "Sorry, no mailbox here by that name. (#5.1.1)", True),
    (None, "There is no user by that name at this server.", True),
    (None, "This user doesn't have a yahoo.com account (x@example.com) [0]", True),
    (None, "userx@example.it, but this email address is wrong or no longer valid.", True),
    (None, "550 Benutzer unbekannt", True),
    (None, "550 utente inesistente", True),
    ("5.0.0", "Domain does not exist", True),
    (None, "550 Host unknown", True),
    (None, "553 invalid recipient", True),
    (None, "L'adresse de messagerie référencée ci-dessus n'existe pas.", True),
    (None, "El buzón no existe", True),
    # A relay's generic Status over the remote's specific code: the specific code decides.
    ("5.0.0", "host mx.example[192.0.2.9] said: 550 5.1.1 <x@example.com>: Recipient "
     "address rejected: User unknown in virtual mailbox table", True),
    ("5.0.0", "host mx.example[192.0.2.9] said: 550 5.7.1 unknown user? spam suspected",
     False),
    # A specific code is authoritative, whatever the words.
    ("5.7.1", "550 5.7.1 User unknown; blocked by policy", False),
    ("5.2.2", "552 5.2.2 Mailbox full: user unknown quota", False),
    ("5.1.1", "550 5.1.1 Recipient address rejected", True),
    # Not the address: policy, full mailboxes, RFC 5321's stock text, the sender's domain.
    ("5.0.0", "550 Requested action not taken: mailbox unavailable", False),
    ("5.0.0", "550 unknown user; rejected by policy", False),
    ("5.3.0", "553 5.3.0 Message rejected due to spam content", False),
    (None, "552 Quota violation for userx@example.com", False),
    ("5.0.0", "554 No Resent-From field given", False),
    ("5.0.0", "553 Sender address rejected: Domain not found", False),
    ("5.0.0", "550 Recipient address rejected: Access denied", False),
    ("5.0.0", "failed", False),
]  # fmt: skip


@pytest.mark.parametrize(("status", "text", "dead"), PHRASINGS)
def test_mailbox_phrasings(status: str | None, text: str, dead: bool) -> None:
    assert mailbox_does_not_exist(status, text) is dead
    # The SMTP reply path reads the same table: the code in front of the text, at RCPT.
    reply = classify(550, f"{status} {text}" if status else text, stage="rcpt")
    assert reply.kind == ("bounced" if dead else "failed")
    # Never at MAIL FROM: there a 5xx is about our sender or the session.
    assert classify(550, f"{status} {text}" if status else text, stage="mail").kind == "failed"


def test_every_table_row_is_exercised_by_a_real_phrasing() -> None:
    used = {dead_mailbox_phrase(text) for _, text, dead in PHRASINGS if dead}
    assert {name for name, _ in DEAD_MAILBOX} <= used


@pytest.mark.parametrize(
    ("status", "generic"),
    [(None, True), ("5.0.0", True), ("4.0.0", True), ("5.3.0", True), ("5.5.0", True),
     ("5.2.0", True), ("5.1.0", False), ("5.1.1", False), ("5.7.0", False), ("5.4.0", False),
     ("5.3.4", False), ("5.2.2", False)],
)  # fmt: skip
def test_generic_statuses(status: str | None, generic: bool) -> None:
    assert is_generic(status) is generic


def test_the_deciding_status() -> None:
    assert deciding_status("5.1.1", "550 5.7.1 blocked") == "5.1.1"
    assert deciding_status("5.0.0", "said: 550 5.1.1 user unknown") == "5.1.1"
    assert deciding_status("5.0.0", "said: 550 5.0.0 user unknown") is None
    # Another class, IP addresses and version numbers are not status codes.
    assert deciding_status("5.0.0", "4.4.1 then 192.5.1.10 and Exim 4.92.3") is None
    assert deciding_status(None, "#5.1.1") == "5.1.1"


@given(status=st.one_of(st.none(), st.from_regex(r"\A5\.\d{1,3}\.\d{1,3}\Z")), text=st.text())
def test_specific_codes_decide_alone(status: str | None, text: str) -> None:
    dead = mailbox_does_not_exist(status, text)  # total: never raises
    if status is not None and not is_generic(status):
        assert dead == names_recipient(status)

"""Each server reply becomes the right Reply, and the server got exactly what it should."""

from __future__ import annotations

import time

import pytest

from campaignd.delivery.smtp import Envelope

from .conftest import MakePool, MakeServer, envelope
from .servers import RecordingServer


async def test_accepted_message_arrives_byte_for_byte(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service())
    # A line that starts with a dot must survive dot-stuffing; LF-only input gets CRLF.
    body = b"From: a@acme.test\nTo: ann@example.com\nSubject: x\n\n.hidden dot\n..two\nend\n"
    reply = await pool.send(Envelope("outreach@acme.test", "ann@example.com", body, "example.com"))
    assert (reply.kind, reply.code, reply.enhanced) == ("sent", 250, "2.0.0")
    assert reply.summary() == "250 2.0.0 Ok: queued as 1"
    [got] = server.messages
    assert got.mail_from == "outreach@acme.test" and got.rcpt_tos == ["ann@example.com"]
    assert got.data == body.replace(b"\n", b"\r\n")
    assert f"SIZE={len(body)}" in got.mail_options


@pytest.mark.parametrize(
    ("stage", "status", "kind", "code", "enhanced", "closes"),
    [
        ("rcpt", "550 5.1.1 <gone@example.com>: user unknown", "bounced", 550, "5.1.1", False),
        ("rcpt", "550 No such user here", "bounced", 550, None, False),
        ("rcpt", "554 5.7.1 rejected by policy", "failed", 554, "5.7.1", False),
        ("rcpt", "452 4.5.3 Too many recipients", "deferred", 452, "4.5.3", False),
        ("rcpt", "451 4.3.0 try again later", "deferred", 451, "4.3.0", False),
        ("rcpt", "421 4.7.0 too busy, closing", "deferred", 421, "4.7.0", True),
        ("mail", "553 5.1.8 sender domain unknown", "failed", 553, "5.1.8", False),
        ("mail", "421 4.3.2 shutting down", "deferred", 421, "4.3.2", True),
        ("data", "554 5.7.1 message looks like spam", "failed", 554, "5.7.1", False),
        ("data", "550 5.1.1 mailbox gone", "bounced", 550, "5.1.1", False),
        ("data", "451 4.7.1 greylisted, come back later", "deferred", 451, "4.7.1", False),
        ("data", "421 4.4.2 timeout, bye", "deferred", 421, "4.4.2", True),
    ],
)
async def test_reply_maps_to_outcome(
    server: RecordingServer,
    make_pool: MakePool,
    stage: str,
    status: str,
    kind: str,
    code: int,
    enhanced: str | None,
    closes: bool,
) -> None:
    server.reply(stage, status, times=1)  # type: ignore[arg-type]
    pool = make_pool(server.service())
    reply = await pool.send(envelope("gone@example.com"))
    assert (reply.kind, reply.code, reply.enhanced) == (kind, code, enhanced)
    assert reply.close_session is closes and reply.slow_down is (code == 421)
    assert reply.stage == ("eod" if stage == "data" else stage)
    assert server.messages == []  # nothing was accepted
    # The next message goes through: on the same session unless the reply closed it.
    follow = await pool.send(envelope("ann@example.com"))
    assert follow.kind == "sent"
    assert [m.rcpt_tos for m in server.messages] == [["ann@example.com"]]
    assert server.sessions == (2 if closes else 1)
    assert server.ehlo_count == server.sessions  # EHLO once per session, never per message
    # A refused MAIL leaves no transaction open; a refused RCPT or DATA needs one RSET.
    assert server.rset_count == (1 if stage == "rcpt" and not closes else 0)


async def test_per_recipient_rules_leave_others_alone(
    server: RecordingServer, make_pool: MakePool
) -> None:
    server.reply("rcpt", "550 5.1.1 user unknown", address="gone@example.com")
    pool = make_pool(server.service())
    kinds = [(await pool.send(envelope(to))).kind for to in ("a@x.test", "gone@example.com") * 2]
    assert kinds == ["sent", "bounced", "sent", "bounced"]
    assert [m.rcpt_tos[0] for m in server.messages] == ["a@x.test", "a@x.test"]
    assert server.sessions == 1


async def test_connection_dropped_mid_data_is_deferred(
    server: RecordingServer, make_pool: MakePool
) -> None:
    server.drop("data", times=1)
    pool = make_pool(server.service())
    reply = await pool.send(envelope())
    assert (reply.kind, reply.code, reply.stage) == ("deferred", None, "eod")
    assert reply.text.startswith("connection lost during DATA — will retry")
    assert reply.close_session
    assert (await pool.send(envelope())).kind == "sent"  # a fresh session
    assert server.sessions == 2 and len(server.messages) == 1


async def test_connection_dropped_at_rcpt_is_deferred(
    server: RecordingServer, make_pool: MakePool
) -> None:
    server.drop("rcpt", times=1)
    pool = make_pool(server.service())
    reply = await pool.send(envelope())
    assert (reply.kind, reply.code, reply.stage) == ("deferred", None, "rcpt")
    assert reply.summary() == "connection lost at RCPT TO — will retry"


async def test_stalled_server_times_out_as_deferred(
    server: RecordingServer, make_pool: MakePool
) -> None:
    server.stall("data", times=1)
    pool = make_pool(server.service(timeout="0.5s"))
    started = time.monotonic()
    reply = await pool.send(envelope())
    elapsed = time.monotonic() - started
    assert (reply.kind, reply.code, reply.stage) == ("deferred", None, "eod")
    assert reply.text.startswith("no reply within 0.5s during DATA — will retry")
    assert 0.4 < elapsed < 3.0
    assert server.max_stalled == 1
    server.release()
    assert (await pool.send(envelope())).kind == "sent"
    assert server.sessions == 2


async def test_session_closed_while_idle_is_replaced_without_deferring(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service())
    assert (await pool.send(envelope())).kind == "sent"
    # The server hangs up when the reused session's MAIL arrives (as an idle timeout would):
    # nothing was accepted yet, so the pool retries once on a fresh session.
    server.drop("mail", times=1)
    reply = await pool.send(envelope("bob@example.com"))
    assert reply.kind == "sent"
    assert server.sessions == 2
    assert [m.rcpt_tos[0] for m in server.messages] == ["ann@example.com", "bob@example.com"]


async def test_utf8_address_uses_smtputf8_when_offered(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service())
    reply = await pool.send(envelope("jürgen@example.com"))
    assert reply.kind == "sent"
    assert server.messages[0].rcpt_tos == ["jürgen@example.com"]
    assert "SMTPUTF8" in server.messages[0].mail_options


async def test_utf8_address_fails_when_the_server_lacks_smtputf8(
    make_server: MakeServer, make_pool: MakePool
) -> None:
    plain = make_server(smtputf8=False)
    pool = make_pool(plain.service())
    reply = await pool.send(envelope("jürgen@example.com"))
    assert reply.kind == "failed" and "needs SMTPUTF8" in reply.text
    assert (await pool.send(envelope())).kind == "sent"  # the session is still fine
    assert plain.sessions == 1 and len(plain.messages) == 1


async def test_address_with_line_break_fails_without_touching_the_wire(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service())
    reply = await pool.send(envelope("evil@example.com\r\nRCPT TO:<x@y.test>"))
    assert reply.kind == "failed" and reply.code is None and reply.stage == "rcpt"
    assert (await pool.send(envelope())).kind == "sent"
    assert [m.rcpt_tos for m in server.messages] == [["ann@example.com"]]

"""campaignctl sink: accepts everything, prints a line per message, stores into a Maildir."""

from __future__ import annotations

import asyncio
import io
import mailbox
import os
import re
import signal
import sys
from email.header import Header
from pathlib import Path

import pytest

from campaignd.ctl.sink import parse_listen, start_sink, subject_of
from campaignd.delivery.smtp import Envelope, SmtpPool

from .conftest import MakePool, envelope
from .servers import refused_port, service_for

RUN_SINK = (
    "import sys; from campaignd.ctl.sink import run_sink; sys.exit(run_sink(sys.argv[1], None))"
)
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def line_pattern(to: str, subject: str) -> str:
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    who = f"from=<{re.escape('outreach@acme.test')}> to=<{re.escape(to)}>"
    return rf"^{stamp} {who} size=\d+ subject={re.escape(subject)}$"


async def test_prints_lines_and_stores_to_maildir(tmp_path: Path, make_pool: MakePool) -> None:
    out = io.StringIO()
    sink = await start_sink("127.0.0.1:0", tmp_path / "Maildir", out=out)
    try:
        pool = make_pool(service_for(sink.port, max_connections=2))
        encoded = Header("Grüße aus Köln", "utf-8").encode()
        replies = await asyncio.gather(
            pool.send(envelope("ann@example.com", subject="Plain subject")),
            pool.send(envelope("bob@example.com", subject=encoded, body=".leading dot")),
            pool.send(envelope("cy@example.com", subject="Three")),
        )
        assert [r.kind for r in replies] == ["sent"] * 3
        async with asyncio.timeout(5):
            await sink.wait_for(3)
        assert sink.count == 3
    finally:
        await sink.stop()
    lines = sorted(out.getvalue().splitlines())
    assert len(lines) == 3
    assert re.match(line_pattern("ann@example.com", "'Plain subject'"), lines[0])
    assert re.match(line_pattern("bob@example.com", "'Grüße aus Köln'"), lines[1])
    box = mailbox.Maildir(tmp_path / "Maildir", create=False)
    stored = {m["X-Original-To"]: m for m in box}
    assert set(stored) == {"ann@example.com", "bob@example.com", "cy@example.com"}
    bob = stored["bob@example.com"]
    assert bob["Return-Path"] == "<outreach@acme.test>"
    assert str(bob.get_payload()).strip() == ".leading dot"  # dot-stuffing undone


async def test_many_parallel_sessions(make_pool: MakePool) -> None:
    sink = await start_sink()
    try:
        pool = make_pool(service_for(sink.port, max_connections=32, messages_per_connection=20))
        data = envelope().data
        replies = await asyncio.gather(
            *(
                pool.send(Envelope("a@acme.test", f"r{i}@example.com", data, "example.com"))
                for i in range(600)
            )
        )
        assert {r.kind for r in replies} == {"sent"}
        assert sink.count == 600 and pool.stats.sessions_opened >= 30
    finally:
        await sink.stop()


def test_subject_and_listen_parsing() -> None:
    assert subject_of(b"From: a\r\nSubject: =?utf-8?q?caf=C3=A9?=\r\n  folded\r\n\r\nx") == (
        "café folded"
    )
    assert subject_of(b"From: a\r\n\r\nSubject: in the body") == "(no subject)"
    assert parse_listen("127.0.0.1:2525") == ("127.0.0.1", 2525)
    assert parse_listen("[::1]:25") == ("::1", 25)
    with pytest.raises(ValueError, match="is not host:port"):
        parse_listen("2525")


async def test_run_sink_process_stops_cleanly_on_sigterm() -> None:
    port = refused_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", RUN_SINK, f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=CHILD_ENV,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(20):
            banner = (await proc.stderr.readline()).decode()
            assert banner.startswith(f"campaignd sink listening on 127.0.0.1:{port}")
            pool = SmtpPool("sink", service_for(port), local_hostname="c.test")
            assert (await pool.send(envelope())).kind == "sent"
            await pool.close()
            line = (await proc.stdout.readline()).decode()
            assert "to=<ann@example.com>" in line and "subject='Hi'" in line
            proc.send_signal(signal.SIGTERM)
            assert await proc.wait() == 0
            assert "stopped after 1 messages" in (await proc.stderr.read()).decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_run_sink_reports_a_busy_port() -> None:
    sink = await start_sink()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", RUN_SINK, sink.listen,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=CHILD_ENV,
        )  # fmt: skip
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
        assert proc.returncode == 1
        assert f"cannot listen on {sink.listen}" in err.decode()
    finally:
        await sink.stop()

"""The IMAP feedback source against a real Dovecot: IMAPS and STARTTLS, IDLE and polling,
the done folder, reconnecting, and bad credentials (SPEC §3 ``feedback: - imap:``)."""

from __future__ import annotations

import asyncio
import imaplib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from campaignd.config.model import Campaign, Config, ImapFeedback, ImapSource, Service, Settings
from campaignd.feedback.imap import ImapReader
from campaignd.queue.store import Outcome, Store
from campaignd.runtime.feedback_runner import FeedbackRunner
from campaignd.tokens.links import LinkSigner
from tests.integration.store.factory import T0, WORKER, seed

from .conftest import MakeDovecot
from .dovecot import PASSWORD, USER, Dovecot
from .samples import personalize
from .waits import eventually, holds


def imap(server: Dovecot) -> imaplib.IMAP4_SSL:
    """A second client, the test's own eyes on the mailbox (stdlib imaplib)."""
    context = ssl.create_default_context(cafile=str(server.tls.ca_file))
    client = imaplib.IMAP4_SSL("127.0.0.1", server.tls_port, ssl_context=context)
    client.login(USER, PASSWORD)
    return client


def append(server: Dovecot, *mails: bytes) -> None:
    client = imap(server)
    try:
        for raw in mails:
            typ, _ = client.append("INBOX", None, None, raw)
            assert typ == "OK"
    finally:
        client.logout()


def folder_sizes(server: Dovecot, *folders: str) -> dict[str, int]:
    client = imap(server)
    try:
        out = {}
        for folder in folders:
            typ, data = client.select(folder, readonly=True)
            out[folder] = int(data[0] or 0) if typ == "OK" else -1
        return out
    finally:
        client.logout()


def spec(server: Dovecot, security: str = "tls", **kw: Any) -> ImapSource:
    port = server.tls_port if security == "tls" else server.port
    values: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "security": security, "username": USER,
        "tls_ca_file": str(server.tls.ca_file), "password_env": "IMAP_TEST_PASSWORD",
        "poll": "30s", **kw,
    }  # fmt: skip
    return ImapSource.model_validate(values)


@asynccontextmanager
async def running(reader: ImapReader) -> AsyncIterator[ImapReader]:
    task = asyncio.create_task(reader.run())
    try:
        yield reader
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def collector(
    keep: bytes = b"Subject: keep",
) -> tuple[list[bytes], Callable[[bytes, str], Awaitable[bool]]]:
    seen: list[bytes] = []

    async def handle(raw: bytes, source: str) -> bool:
        seen.append(raw)
        return keep not in raw

    return seen, handle


async def test_imaps_with_idle_through_the_runner_into_the_database(
    dovecot: Dovecot, sqlite_store: Store, tmp_path: Path
) -> None:
    await seed(sqlite_store, n=2)
    got = await sqlite_store.claim(
        worker=WORKER, now=T0, lease=60, limit=10, campaign_ids=["launch"]
    )
    await sqlite_store.record(
        [Outcome(id=c.id, status="sent", service="relay", at=T0, message_id=f"<m{c.id}@acme.test>")
         for c in got]
    )  # fmt: skip
    mid = got[0].id
    secret = tmp_path / "imap-password"
    secret.write_text(PASSWORD + "\n")  # as editors write it: the newline is not the secret
    source = spec(dovecot, password_env=None, password_file=str(secret), poll="1m")
    config = Config(
        root=tmp_path,
        settings=Settings(feedback=(ImapFeedback(imap=source),)),
        services={"relay": Service.model_validate({"from": "a@acme.example"})},
        campaigns={"launch": Campaign.model_validate(
            {"audience": "x.csv", "services": "relay", "template": "t", "kind": "transactional"})},
    )  # fmt: skip
    runner = FeedbackRunner(
        sqlite_store, lambda: config, signer=LinkSigner(b"k"), on_pause=lambda *a: None,
        clock=lambda: T0 + 600,
    )  # fmt: skip
    await runner.start()
    try:
        [reader] = runner.readers.values()
        await eventually("the reader to IDLE", lambda: holds(reader.stats.state == "idle"))
        assert isinstance(reader, ImapReader) and reader.sessions == 1
        reply = personalize("thunderbird-reply.eml", message_id=f"m{mid}@acme.test")
        await asyncio.to_thread(append, dovecot, reply, personalize("unrelated.eml"))

        async def replied() -> bool:
            row = await sqlite_store.get_message(mid)
            return row is not None and row.replied_at is not None

        # Well inside the 1-minute poll: IDLE woke the reader.
        await eventually("the reply to be applied", replied, within=5)
        await eventually(
            "the unmatched mail to be counted", lambda: holds(reader.stats.unmatched == 1)
        )
        sizes = await asyncio.to_thread(folder_sizes, dovecot, "INBOX", "campaignd-done")
        assert sizes == {"INBOX": 1, "campaignd-done": 1}  # created, and the reply moved there
        assert (await runner.status())["unmatched"] == 1
    finally:
        await runner.close()


async def test_starttls_and_polling_without_idle_or_move(
    make_dovecot: MakeDovecot, monkeypatch: Any
) -> None:
    # Post-login capabilities without IDLE and MOVE: polling, and COPY + \\Deleted + EXPUNGE.
    server = make_dovecot(extra="imap_capability = IMAP4rev1 LITERAL+ UIDPLUS")
    monkeypatch.setenv("IMAP_TEST_PASSWORD", PASSWORD)
    seen, handle = collector()
    source = spec(server, "starttls", poll="1s", done_folder="Handled Mail")
    ref = source.secret_ref("password")
    assert ref is not None
    from campaignd.config.secrets import resolve_secret

    reader = ImapReader(source, handle, password=lambda: resolve_secret(ref), root=Path("."))
    await asyncio.to_thread(append, server, b"Subject: first\r\n\r\nhello\r\n")
    async with running(reader):
        await eventually("the first mail", lambda: holds(len(seen) == 1))
        await eventually("polling", lambda: holds(reader.stats.state == "polling"))
        await asyncio.to_thread(append, server, b"Subject: keep\r\n\r\nme\r\n")
        await eventually("the second mail, by polling", lambda: holds(len(seen) == 2), within=5)
    sizes = await asyncio.to_thread(folder_sizes, server, "INBOX", '"Handled Mail"')
    assert sizes == {"INBOX": 1, '"Handled Mail"': 1}
    assert len(seen) == 2  # the kept one was not read again on later polls


async def test_reconnects_with_backoff_after_the_server_goes_away(
    make_dovecot: MakeDovecot,
) -> None:
    server = make_dovecot()
    seen, handle = collector()
    reader = ImapReader(
        spec(server), handle, password=lambda: PASSWORD, root=Path("."), backoff=(0.1, 0.5)
    )
    async with running(reader):
        await eventually("the first session", lambda: holds(reader.stats.state == "idle"))
        server.stop()
        await eventually(
            "the loss to be noticed", lambda: holds(reader.stats.state == "reconnecting")
        )
        await asyncio.to_thread(server.start)
        await eventually("a new session", lambda: holds(reader.sessions == 2), within=10)
        await asyncio.to_thread(append, server, b"Subject: after the restart\r\n\r\nhi\r\n")
        await eventually("mail after the restart", lambda: holds(len(seen) == 1))
    assert reader.stats.errors >= 1


async def test_wrong_password_and_untrusted_certificate_are_reported(
    dovecot: Dovecot, other_ca: Path
) -> None:
    seen, handle = collector()
    bad = ImapReader(spec(dovecot), handle, password=lambda: "wrong", root=Path("."),
                     backoff=(5.0, 5.0))  # fmt: skip
    async with running(bad):
        await eventually("the refusal", lambda: holds(bad.stats.errors >= 1))
    assert "LOGIN" in (bad.stats.last_error or "") and bad.sessions == 0
    untrusted = ImapReader(
        spec(dovecot, tls_ca_file=str(other_ca)), handle, password=lambda: PASSWORD,
        root=Path("."), backoff=(5.0, 5.0),
    )  # fmt: skip
    async with running(untrusted):
        await eventually("the TLS failure", lambda: holds(untrusted.stats.errors >= 1))
    assert "certificate" in (untrusted.stats.last_error or "") and untrusted.sessions == 0
    assert seen == []


async def test_starttls_is_required_when_configured(tmp_path: Path) -> None:
    """A server that does not offer STARTTLS never gets the password."""
    received: list[bytes] = []

    async def fake_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
        await writer.drain()
        while line := await reader.readline():
            received.append(line)
            tag = line.split(b" ", 1)[0]
            if b"CAPABILITY" in line:
                writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            else:
                writer.write(tag + b" BAD no\r\n")
            await writer.drain()

    srv = await asyncio.start_server(fake_server, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    _, handle = collector()
    source = ImapSource.model_validate(
        {"host": "127.0.0.1", "port": port, "security": "starttls", "username": USER,
         "password_env": "X"}
    )  # fmt: skip
    reader = ImapReader(source, handle, password=lambda: PASSWORD, root=tmp_path, backoff=(5, 5))
    async with running(reader):
        await eventually("the refusal", lambda: holds(reader.stats.errors >= 1))
    srv.close()
    await srv.wait_closed()
    assert "does not offer STARTTLS" in (reader.stats.last_error or "")
    assert not any(PASSWORD.encode() in line for line in received)


_ = timedelta  # poll values above are given as the operator writes them

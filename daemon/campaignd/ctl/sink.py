"""``campaignctl sink``: a local SMTP server that accepts every message, for trying things out.

One line per message goes to stdout (time, envelope sender and recipients, size, subject);
with ``--maildir`` each message is also stored in a Maildir, readable by any mail client.
Any AUTH is accepted so a service with ``username:`` can point at it; there is no TLS, so
such a service uses ``security: none``. Built for load as well: benchmarks push tens of
thousands of messages through it over many parallel sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any, TextIO

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session, syntax

DEFAULT_LISTEN = "127.0.0.1:2525"
_SUBJECT = re.compile(rb"^subject:[ \t]*(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:2525`` for IPv6) → (host, port), or ValueError saying how."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {listen!r} is not host:port — write it like {DEFAULT_LISTEN}")
    return host, int(port)


def subject_of(content: bytes) -> str:
    """The decoded Subject, reading only the header block (cheap on large messages)."""
    end = content.find(b"\r\n\r\n")
    if end < 0:
        end = content.find(b"\n\n")
    m = _SUBJECT.search(content, 0, len(content) if end < 0 else end + 2)
    if m is None:
        return "(no subject)"
    raw = m.group(1).decode("utf-8", errors="replace")
    if "=?" in raw:  # RFC 2047 encoded words
        with contextlib.suppress(HeaderParseError, LookupError, UnicodeError, ValueError):
            raw = str(make_header(decode_header(raw)))
    return " ".join(raw.split())


def _accept_any_login(*_: Any) -> AuthResult:
    return AuthResult(success=True)


@dataclass
class _Waiter:
    count: int
    future: asyncio.Future[None]


@dataclass
class SinkHandler:
    """aiosmtpd handler: print a line, store to the Maildir, count, wake waiters."""

    out: TextIO | None = None
    maildir: mailbox.Maildir | None = None
    count: int = 0
    bytes: int = 0
    _waiters: list[_Waiter] = field(default_factory=list)
    _stamp_at: int = -1
    _stamp: str = ""

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        rcpts = ", ".join(envelope.rcpt_tos)
        if self.out is not None:
            when = self._clock()
            self.out.write(
                f"{when} from=<{envelope.mail_from}> to=<{rcpts}> size={len(content)} "
                f"subject={subject_of(content)!r}\n"
            )
            self.out.flush()
        if self.maildir is not None:
            # What a final MTA adds; LF line ends as Maildir readers expect.
            head = f"Return-Path: <{envelope.mail_from}>\nX-Original-To: {rcpts}\n".encode()
            self.maildir.add(head + content.replace(b"\r\n", b"\n"))
        self.count += 1
        self.bytes += len(content)
        if self._waiters:
            self._wake()
        return f"250 2.0.0 Ok: accepted by campaignd sink as #{self.count}"

    def _clock(self) -> str:
        # strftime per message shows up under load; the line only needs the second.
        now = int(time.time())
        if now != self._stamp_at:
            self._stamp_at = now
            self._stamp = datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S")
        return self._stamp

    def _wake(self) -> None:
        still = []
        for w in self._waiters:
            if self.count >= w.count:
                if not w.future.done():
                    w.future.set_result(None)
            else:
                still.append(w)
        self._waiters = still

    async def wait_for(self, count: int) -> None:
        if self.count >= count:
            return
        waiter = _Waiter(count, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        await waiter.future


@dataclass
class SinkHandle:
    """A running sink: where it listens, what it received, and how to stop it."""

    host: str
    port: int
    handler: SinkHandler
    server: asyncio.AbstractServer
    sessions: set[SMTP]

    @property
    def count(self) -> int:
        return self.handler.count

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"

    async def wait_for(self, count: int) -> None:
        """Until at least ``count`` messages were accepted (wrap in asyncio.timeout)."""
        await self.handler.wait_for(count)

    async def stop(self) -> None:
        self.server.close()
        for smtp in list(self.sessions):  # clients keep sessions open: cut them off
            if smtp.transport is not None:
                smtp.transport.close()
        await self.server.wait_closed()


async def start_sink(
    listen: str = "127.0.0.1:0", maildir: Path | None = None, *, out: TextIO | None = None
) -> SinkHandle:
    """Start a sink on the running loop (port 0: any free port, see ``handle.port``)."""
    host, port = parse_listen(listen)
    box = mailbox.Maildir(maildir, create=True) if maildir is not None else None
    handler = SinkHandler(out=out, maildir=box)
    loop = asyncio.get_running_loop()
    sessions: set[SMTP] = set()

    def factory() -> SMTP:
        smtp = _TrackedSMTP(
            handler,
            sessions,
            hostname="campaignd-sink",  # a fixed name: no DNS lookup per connection
            ident="campaignd sink",
            enable_SMTPUTF8=True,
            auth_require_tls=False,
            authenticator=_accept_any_login,
            loop=loop,
        )
        return smtp

    server = await loop.create_server(factory, host=host, port=port, backlog=1024)
    bound = server.sockets[0].getsockname()[1] if server.sockets else port
    return SinkHandle(host, int(bound), handler, server, sessions)


_SIMPLE_ADDRESS = re.compile(r"\s*<([^<>\s\"(),:;\\]*)>(.*)$")
_STUFFED_DOT = re.compile(rb"^\.", re.MULTILINE)
_END_OF_DATA = b"\r\n.\r\n"


class _TrackedSMTP(SMTP):
    """aiosmtpd's SMTP, remembered while connected so stop() can close open sessions.

    Two hot paths are replaced for load tests: plain ``<addr>`` arguments skip the RFC 5322
    parser, and DATA is read in chunks up to the terminator instead of line by line (aiosmtpd
    awaits every line), which roughly halves the sink's CPU per message.
    """

    def __init__(self, handler: SinkHandler, sessions: set[SMTP], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._tracked = sessions

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tracked.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._tracked.discard(self)
        super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        m = _SIMPLE_ADDRESS.match(arg)
        if m is None or not m.group(1):
            result: tuple[str | None, str | None] = super()._getaddr(arg)
            return result
        return m.group(1), m.group(2)

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self.envelope
        assert envelope is not None
        if not envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        buffer = bytearray(b"\r\n")  # so a message that is just "." is found too
        searched = 0
        while True:
            chunk = await self._reader.read(1 << 20)
            if not chunk:  # the client went away mid-message
                self._writer.close()
                return
            buffer += chunk
            end = buffer.find(_END_OF_DATA, searched)
            if end >= 0:
                break
            searched = max(0, len(buffer) - len(_END_OF_DATA) + 1)
        rest = bytes(buffer[end + len(_END_OF_DATA) :])
        if rest:  # a pipelining client's next command: hand it back to the reader
            self._reader.feed_data(rest)
        body = bytes(buffer[2 : end + 2])
        limit = self.data_size_limit
        if limit and len(body) > limit:
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            await self.push("552 Error: Too much mail data")
            return
        content = _STUFFED_DOT.sub(b"", body)
        envelope.content = content
        envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(status)


def run_sink(listen: str, maildir: Path | None) -> int:
    """``campaignctl sink``: serve until SIGINT or SIGTERM, then exit 0."""
    try:
        parse_listen(listen)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    runner_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    with contextlib.suppress(ImportError):
        import uvloop

        runner_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=runner_factory) as runner:
        return runner.run(_serve(listen, maildir))


async def _serve(listen: str, maildir: Path | None) -> int:
    try:
        handle = await start_sink(listen, maildir, out=sys.stdout)
    except OSError as exc:
        print(
            f"error: cannot listen on {listen}: {exc.strerror or exc} — pick another address "
            "with --listen",
            file=sys.stderr,
        )
        return 1
    stored = f", storing into {maildir}" if maildir is not None else ""
    print(
        f"campaignd sink listening on {handle.listen}{stored} — one line per message; Ctrl-C stops",
        file=sys.stderr,
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await handle.stop()
    print(f"campaignd sink stopped after {handle.count} messages", file=sys.stderr, flush=True)
    return 0

"""Reading a feedback mailbox over IMAP (SPEC §3 ``feedback: - imap:``), with aioimaplib.

One session at a time: connect (implicit TLS, STARTTLS or — on loopback only, say — plain),
log in, make sure ``done_folder`` exists, select ``folder``, then repeat: read every message
not read yet (``BODY.PEEK[]``, so nothing is marked seen by reading), hand it to the handler,
and move handled mail to ``done_folder`` (``UID MOVE``, else ``COPY`` + ``\\Deleted`` +
expunge). Between passes the reader waits in IDLE when the server offers it — new mail wakes
it at once — else sleeps ``poll``. Whatever breaks the session (the server restarts, the
network drops, a command times out) ends it; the reader reconnects with exponential backoff.

Certificates are always verified (system CAs plus ``tls_ca_file``); STARTTLS that the server
does not offer is an error, never a silent fallback to sending the password in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import aioimaplib  # type: ignore[import-untyped]

from ..config.model import ImapSource
from .sources import MailHandler, SourceStats

__all__ = ["ImapError", "ImapReader", "listed", "literal_of", "quote_mailbox", "search_uids"]

log = logging.getLogger("campaignd.feedback")

TIMEOUT: Final = 30.0  # seconds for one IMAP command
IDLE_MAX: Final = 25 * 60.0  # RFC 2177: re-issue IDLE before the server's 30-minute timeout
BACKOFF: Final = (1.0, 60.0)  # first and longest wait before reconnecting
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]", re.IGNORECASE)


class ImapError(Exception):
    """The server said NO/BAD, or does not offer what the configuration asks for."""


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP quoted string (RFC 3501 §4.3)."""
    if any(c in name for c in "\r\n\x00"):
        raise ImapError(f"mailbox name {name!r} has a line break")
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _untagged(lines: list[Any]) -> list[bytes]:
    """The untagged answer lines of a command; the last line is the tagged completion text.

    aioimaplib strips the ``* `` and, for commands it runs concurrently (SEARCH, LIST), the
    response name as well: ``* SEARCH 3 4`` arrives as ``3 4``.
    """
    return [bytes(x) for x in lines[:-1] if isinstance(x, bytes | bytearray)]


def search_uids(lines: list[Any]) -> list[str]:
    """The UIDs of a ``UID SEARCH`` answer (``* SEARCH 3 4 9``)."""
    out: list[str] = []
    for line in _untagged(lines):
        out.extend(p.decode("ascii") for p in line.split() if p.isdigit())
    return out


def listed(lines: list[Any]) -> bool:
    """Whether a ``LIST`` answer names a mailbox (``* LIST (\\HasNoChildren) "." name``)."""
    return any(line.lstrip().startswith((b"(", b"LIST (")) for line in _untagged(lines))


def literal_of(lines: list[Any]) -> bytes | None:
    """The message bytes in a ``UID FETCH … BODY.PEEK[]`` answer (aioimaplib's bytearray)."""
    for line in lines:
        if isinstance(line, bytearray):
            return bytes(line)
    return None


def _check(response: Any, what: str) -> Any:
    if response.result != "OK":
        text = b" ".join(
            bytes(x) for x in response.lines if isinstance(x, bytes | bytearray)
        ).decode("utf-8", "replace")
        raise ImapError(f"{what}: {response.result} {text}".strip())
    return response


class ImapReader:
    def __init__(
        self,
        spec: ImapSource,
        handle: MailHandler,
        *,
        password: Callable[[], str],
        root: Path,
        backoff: tuple[float, float] = BACKOFF,
        timeout: float = TIMEOUT,
    ) -> None:
        self.spec = spec
        self.handle = handle
        self.password = password
        self.root = root
        self.backoff = backoff
        self.timeout = timeout
        self.name = f"imap:{spec.username}@{spec.host}:{spec.port}/{spec.folder}"
        self.stats = SourceStats(self.name)
        self.sessions = 0  # sessions that got as far as SELECT (tests watch reconnects)
        self._left: set[tuple[bytes, str]] = set()  # (UIDVALIDITY, UID) of unmatched mail
        self._tls: ssl.SSLContext | None = None
        self._healthy_session = False

    # ------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        delay = self.backoff[0]
        try:
            while True:
                try:
                    await self._session()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    message = _describe(exc)
                    self.stats.failed(message)
                    self.stats.state = "reconnecting"
                    if self._healthy_session:
                        delay = self.backoff[0]  # it worked until now: start over gently
                    log.warning(
                        "feedback %s: %s — reconnecting in %.1fs", self.name, message, delay
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.backoff[1])
        finally:
            self.stats.state = "stopped"

    def _context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
            if self.spec.tls_ca_file:
                path = Path(self.spec.tls_ca_file)
                context.load_verify_locations(
                    cafile=path if path.is_absolute() else self.root / path
                )
            self._tls = context
        return self._tls

    async def _connect(self, lost: asyncio.Future[None]) -> Any:
        def on_lost(exc: Exception | None) -> None:
            if not lost.done():
                lost.set_result(None)

        spec = self.spec
        tls = self._context() if spec.security == "tls" else None
        client = aioimaplib.IMAP4(
            host=spec.host, port=spec.port, timeout=self.timeout, conn_lost_cb=on_lost,
            ssl_context=tls,
        )  # fmt: skip
        await client.wait_hello_from_server()
        if spec.security == "starttls":
            await self._starttls(client)
        return client

    async def _starttls(self, client: Any) -> None:
        protocol = client.protocol
        if "STARTTLS" not in protocol.capabilities:
            raise ImapError(
                f"{self.spec.host} does not offer STARTTLS — use security: tls (port 993), "
                "or check that you reach the real server"
            )
        command = aioimaplib.Command("STARTTLS", protocol.new_tag(), loop=protocol.loop)
        _check(await asyncio.wait_for(protocol.execute(command), self.timeout), "STARTTLS")
        # aioimaplib has no STARTTLS of its own: upgrade the transport under the same protocol.
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            protocol.transport, protocol, self._context(), server_hostname=self.spec.host
        )
        protocol.transport = transport
        # RFC 3501 §6.2.1: capabilities learnt before TLS must be asked again.
        await asyncio.wait_for(protocol.capability(), self.timeout)

    async def _session(self) -> None:
        self._healthy_session = False
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        client = await self._connect(lost)
        try:
            _check(await client.login(self.spec.username, self.password()), "LOGIN")
            # Servers offer more (or less) once logged in; aioimaplib only adds to the old list.
            await asyncio.wait_for(client.protocol.capability(), self.timeout)
            await self._ensure_folder(client, self.spec.done_folder)
            selected = _check(await client.select(quote_mailbox(self.spec.folder)), "SELECT")
            validity = next(
                (m.group(1) for x in selected.lines if (m := _UIDVALIDITY.search(bytes(x)))),
                b"0",
            )
            self.sessions += 1
            self._healthy_session = True
            self.stats.state = "connected"
            idle = client.has_capability("IDLE")
            log.info("feedback %s: connected (%s)", self.name, "IDLE" if idle else "polling")
            while True:
                await self._drain(client, validity)
                if idle:
                    self.stats.state = "idle"
                    await self._idle(client, lost)
                else:
                    self.stats.state = "polling"
                    await self._sleep(lost, self.spec.poll.total_seconds())
                if lost.done():
                    raise ImapError("the server closed the connection")
        finally:
            await self._close(client)

    async def _sleep(self, lost: asyncio.Future[None], seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(lost), timeout=seconds)

    async def _idle(self, client: Any, lost: asyncio.Future[None]) -> None:
        # The poll interval doubles as the safety net: IDLE ends and a full pass runs anyway.
        wait = min(max(self.spec.poll.total_seconds(), 1.0), IDLE_MAX)
        idle = await client.idle_start(timeout=wait)
        push = asyncio.ensure_future(client.wait_server_push(timeout=wait + 5))
        try:
            await asyncio.wait({push, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            push.cancel()
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await push
        if lost.done():
            return
        client.idle_done()
        await asyncio.wait_for(idle, self.timeout)

    async def _ensure_folder(self, client: Any, folder: str) -> None:
        quoted = quote_mailbox(folder)
        # LIST with an exact name (no wildcards) answers that mailbox or nothing.
        if listed(_check(await client.list('""', quoted), "LIST").lines):
            return
        _check(await client.create(quoted), f"CREATE {folder}")
        log.info("feedback %s: created folder %s for handled mail", self.name, folder)

    async def _drain(self, client: Any, validity: bytes) -> None:
        found = _check(
            await asyncio.wait_for(
                client.protocol.search("UNDELETED", by_uid=True, charset=None), self.timeout
            ),
            "UID SEARCH",
        )
        for uid in search_uids(found.lines):
            if (validity, uid) in self._left:
                continue
            fetched = _check(await client.uid("fetch", uid, "BODY.PEEK[]"), f"FETCH {uid}")
            raw = literal_of(fetched.lines)
            if raw is None:
                continue  # expunged meanwhile
            try:
                handled = await self.handle(raw, self.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The database is away, say: the mail stays and the next pass tries again.
                log.exception("feedback %s: handling UID %s failed", self.name, uid)
                self.stats.failed(f"handling UID {uid} failed: {exc}")
                continue
            self.stats.mail(handled)
            if handled:
                await self._file_away(client, uid)
            else:
                self._left.add((validity, uid))

    async def _file_away(self, client: Any, uid: str) -> None:
        target = quote_mailbox(self.spec.done_folder)
        if client.has_capability("MOVE"):
            _check(await client.uid("move", uid, target), f"MOVE {uid}")
            return
        _check(await client.uid("copy", uid, target), f"COPY {uid}")
        _check(await client.uid("store", uid, "+FLAGS.SILENT", r"(\Deleted)"), f"STORE {uid}")
        if client.has_capability("UIDPLUS"):
            _check(await client.uid("expunge", uid), f"EXPUNGE {uid}")
        else:
            _check(await client.expunge(), "EXPUNGE")

    async def _close(self, client: Any) -> None:
        with contextlib.suppress(Exception):
            if client.has_pending_idle():
                client.idle_done()  # LOGOUT would queue behind the open IDLE otherwise
            if client.protocol.state in ("AUTH", "SELECTED"):
                await asyncio.wait_for(client.logout(), 2.0)
        with contextlib.suppress(Exception):
            transport = client.protocol.transport
            if transport is not None:
                transport.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "the server did not answer in time"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return (
            f"TLS certificate not trusted: {exc.verify_message} — set tls_ca_file for a private CA"
        )
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused — is the server running on that host and port?"
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ImapError) and "LOGIN" in text:
        return f"{text} — check username and the password secret"
    return text

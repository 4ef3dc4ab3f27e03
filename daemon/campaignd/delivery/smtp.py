"""Speaking SMTP to one service: a pool of reusable aiosmtplib sessions (the only SMTP client).

A session is opened once (connect, EHLO, STARTTLS or implicit TLS, AUTH) and then carries up to
``messages_per_connection`` transactions: MAIL FROM, RCPT TO, DATA, message, final reply — no
EHLO, no DNS and no RSET between successful messages, because per-message round trips are what
limits throughput. Every per-message reply becomes a :class:`Reply` (never an exception); only
"no session could be opened" raises, as :class:`ConnectionFailed`, so the worker's circuit
breaker can fail over to another service.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiosmtplib import SMTP, SMTPResponse
from aiosmtplib.errors import (
    SMTPAuthenticationError,
    SMTPException,
    SMTPHeloError,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from ..config.model import Service
from ..config.secrets import resolve_secret
from ..errors import DeliveryError, SecretError
from .classify import (
    STAGE_NAMES,
    Reply,
    Stage,
    classify,
    find_cause,
    one_line,
    parse_enhanced,
)

# The aiosmtplib errors other modules catch, named here: this is the one SMTP client module.
__all__ = ["SMTPAuthenticationError", "SMTPException", "connection_failure"]

# Close a session nobody used for this long: relays drop idle clients anyway (often after a
# minute or less), and a dead idle session costs a failed MAIL before we notice.
IDLE_CLOSE = 15.0
CLOSE_WAIT = 30.0  # how long close() waits for in-flight transactions by default

# Steps of opening a session, as test-service reports them ("tls" is implicit TLS).
Step = Literal["connect", "tls", "ehlo", "starttls", "auth"]
Observer = Callable[[Step, str], None]
Tracer = Callable[[Stage, str], None]
After = Literal["reuse", "reset", "close", "dead"]
# Awaited with a session ready, right before MAIL FROM (the worker's rate permit).
Gate = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # MAIL FROM (envelope; may be a VERP address)
    recipient: str  # RCPT TO (ASCII/A-label form)
    data: bytes  # the full message, CRLF line ends
    domain: str  # the recipient's domain (per-domain connection limits)


class Transport(Protocol):
    """What the worker needs from a service: send one message, and close when replaced."""

    async def send(self, env: Envelope) -> Reply: ...
    async def close(self) -> None: ...


class ConnectionFailed(DeliveryError, ConnectionError):
    """No session could be opened (refused, timeout, TLS, AUTH, …): not the message's fault.

    ``stage`` is the SMTP stage that failed, ``step`` the test-service step ("tls" for an
    implicit-TLS handshake), ``reply`` a deferred Reply with the operator-readable reason.
    """

    def __init__(self, service: str, reply: Reply, *, peer: str, step: Step) -> None:
        super().__init__(
            f"service {service} ({peer}): {reply.text}",
            code=reply.code,
            enhanced=reply.enhanced,
            temporary=True,
            service=service,
        )
        self.reply = reply
        self.stage: Stage = reply.stage or "connect"
        self.step: Step = step
        self.reason = reply.text  # connection-failure texts quote the server's code themselves
        self.peer = peer


# ---------------------------------------------------------------- opening a session


_FQDN: str | None = None


async def local_fqdn() -> str:
    """This host's name for EHLO, looked up once per process (getfqdn may query DNS)."""
    global _FQDN
    if _FQDN is None:
        name = await asyncio.to_thread(socket.getfqdn)
        _FQDN = name if name.isascii() and name and " " not in name else "localhost"
    return _FQDN


class Connector:
    """Opens authenticated sessions to one service; knows nothing of pooling or messages."""

    def __init__(
        self,
        service_id: str,
        service: Service,
        *,
        env: Mapping[str, str] | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.service_id = service_id
        self.service = service
        self.env = env
        self.local_hostname = local_hostname
        self.host = service.host
        self.port = service.effective_port
        self.peer = f"{self.host}:{self.port}"
        self.timeout = service.timeout.total_seconds()
        self._tls: ssl.SSLContext | None = None

    def _fail(self, exc: BaseException, stage: Stage, step: Step) -> ConnectionFailed:
        reply = connection_failure(exc, stage, peer=self.peer, timeout=self.timeout)
        if step == "connect" and find_cause(exc, ssl.SSLError) is not None:
            step = "tls"  # implicit TLS: the handshake is part of connecting
        return ConnectionFailed(self.service_id, reply, peer=self.peer, step=step)

    def refuse(self, text: str, stage: Stage, step: Step) -> ConnectionFailed:
        """A ConnectionFailed for a reason we found ourselves (no exception to map)."""
        reply = Reply("deferred", None, None, text, close_session=True, stage=stage)
        return ConnectionFailed(self.service_id, reply, peer=self.peer, step=step)

    async def tls_context(self) -> ssl.SSLContext:
        """Verifying context (system CAs plus ``tls_ca_file``), built once: loading CAs is slow."""
        if self._tls is None:
            self._tls = await asyncio.to_thread(self._build_tls)
        return self._tls

    def _build_tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.service.tls_ca_file:
            context.load_verify_locations(cafile=self.service.tls_ca_file)
        return context

    async def open(self, observe: Observer | None = None) -> SMTP:
        """A ready session (greeted, EHLO done, TLS and AUTH as configured), or ConnectionFailed."""
        security = self.service.security
        tls: ssl.SSLContext | None = None
        if security != "none":
            step: Step = "tls" if security == "tls" else "starttls"
            try:
                tls = await self.tls_context()
            except (OSError, ssl.SSLError) as exc:
                why = exc.strerror or str(exc)
                text = f"cannot load tls_ca_file {self.service.tls_ca_file}: {why}"
                stage: Stage = "starttls" if step == "starttls" else "connect"
                raise self.refuse(text, stage, step) from exc
        smtp = SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=security == "tls",
            start_tls=False,  # done below, so each step fails with its own name
            tls_context=tls,
            local_hostname=self.local_hostname or await local_fqdn(),
            timeout=self.timeout,
        )
        stage = "connect"
        step = "connect"
        try:
            greeting = await smtp.connect()
            _tell(observe, "connect", _said(greeting))
            if security == "tls":
                _tell(observe, "tls", _tls_info(smtp, self.host))
            stage = step = "ehlo"
            _tell(observe, "ehlo", _offers(await _ehlo(smtp), smtp))
            if security == "starttls":
                stage = step = "starttls"
                if not smtp.supports_extension("starttls"):
                    smtp.close()
                    text = f"{self.peer} does not offer STARTTLS, which security: starttls requires"
                    raise self.refuse(text, stage, step)
                answer = await smtp.starttls(tls_context=tls)
                _tell(observe, "starttls", f"{_said(answer)}; {_tls_info(smtp, self.host)}")
                stage = step = "ehlo"
                await smtp.ehlo()
            ref = self.service.secret_ref("password")
            if self.service.username and ref is not None:
                stage = step = "auth"
                password = resolve_secret(ref, self.env)
                answer = await smtp.login(self.service.username, password)
                _tell(observe, "auth", f"{_said(answer)} (as {self.service.username})")
        except ConnectionFailed:
            raise
        except (SMTPException, OSError, ValueError) as exc:
            # ValueError covers SecretError and certificate verification (SSLCertVerificationError).
            smtp.close()
            raise self._fail(exc, stage, step) from exc
        except BaseException:
            smtp.close()
            raise
        return smtp


async def _ehlo(smtp: SMTP) -> SMTPResponse:
    try:
        return await smtp.ehlo()
    except SMTPHeloError:
        if not smtp.is_connected:
            raise
        return await smtp.helo()  # a pre-ESMTP server: plain HELO still carries mail


def _tell(observe: Observer | None, step: Step, detail: str) -> None:
    if observe is not None:
        observe(step, detail)


def _said(resp: SMTPResponse) -> str:
    return f"{resp.code} {one_line(resp.message)}".strip()


def _offers(resp: SMTPResponse, smtp: SMTP) -> str:
    first = one_line(resp.message.splitlines()[0] if resp.message else "")
    exts = " ".join(
        f"{k.upper()}{' ' + v if k == 'auth' and v else ''}".strip()
        for k, v in smtp.esmtp_extensions.items()
    )
    return f"{resp.code} {first}; offers {exts or 'no extensions'}"


def _tls_info(smtp: SMTP, host: str) -> str:
    obj = smtp.get_transport_info("ssl_object")
    if not isinstance(obj, ssl.SSLObject | ssl.SSLSocket):
        return "TLS active"
    cipher = obj.cipher()
    return f"{obj.version()} {cipher[0] if cipher else ''}, certificate verified for {host}"


# ---------------------------------------------------------------- one transaction

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"^\.", re.MULTILINE)


def _payload(data: bytes) -> bytes:
    """The message as sent after 354: CRLF line ends, dot-stuffed, terminated (RFC 5321 §4.5.2).

    Composed messages already have CRLF ends and rarely a leading dot, so the common case is
    a few C-speed scans rather than two regex rewrites.
    """
    if b"\r" not in data:
        body = data.replace(b"\n", b"\r\n")
    elif data.count(b"\r\n") == data.count(b"\n") == data.count(b"\r"):
        body = data
    else:
        body = _LINE_ENDS.sub(b"\r\n", data)
    if body.startswith(b".") or b"\n." in body:
        body = _LEADING_DOT.sub(b"..", body)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


def _mail_options(smtp: SMTP, env: Envelope) -> tuple[list[bytes], str] | str:
    """MAIL FROM parameters and the address encoding, or why this server cannot take it."""
    options: list[bytes] = []
    encoding = "ascii"
    if not (env.sender.isascii() and env.recipient.isascii()):
        if not smtp.supports_extension("smtputf8"):
            who = env.recipient if not env.recipient.isascii() else env.sender
            return f"{who} needs SMTPUTF8, which the server does not offer — use another service"
        options.append(b"SMTPUTF8")
        encoding = "utf-8"
    if not env.data.isascii() and smtp.supports_extension("8bitmime"):
        options.append(b"BODY=8BITMIME")
    if smtp.supports_extension("size"):
        options.append(b"SIZE=%d" % len(env.data))
    return options, encoding


async def transact(
    smtp: SMTP, env: Envelope, *, reply_wait: float, trace: Tracer | None = None
) -> tuple[Reply, After]:
    """Send one message on an open session: its Reply, and what the session is fit for next.

    ``reuse``: ready for the next MAIL; ``reset``: needs RSET first; ``close``: gone or unsafe;
    ``dead``: the connection was found closed at MAIL, before the server accepted anything.
    ``trace`` hears each accepted stage's reply (test-service shows them).
    """
    prepared = _mail_options(smtp, env)
    if isinstance(prepared, str):
        return Reply("failed", None, None, prepared, stage="mail"), "reuse"
    options, encoding = prepared
    stage: Stage = "mail"
    loop = asyncio.get_running_loop()
    try:
        # One deadline moved before each reply (rather than aiosmtplib's per-command
        # ``wait_for``, which adds a future and a timer to every command of every message).
        async with asyncio.timeout_at(loop.time() + reply_wait) as deadline:
            # execute_command rather than smtp.mail()/rcpt(): those re-parse every address
            # with email.utils, a measurable share of the per-message cost; these are bare.
            answer = await smtp.execute_command(
                b"MAIL", b"FROM:<" + env.sender.encode(encoding) + b">", *options, timeout=None
            )
            if answer.code != 250:
                reply = classify(answer.code, answer.message, stage="mail")
                return reply, _after(smtp, reply, "reuse")
            if trace is not None:
                trace("mail", _said(answer))
            stage = "rcpt"
            deadline.reschedule(loop.time() + reply_wait)
            answer = await smtp.execute_command(
                b"RCPT", b"TO:<" + env.recipient.encode(encoding) + b">", timeout=None
            )
            if answer.code not in (250, 251):
                reply = classify(answer.code, answer.message, stage="rcpt")
                return reply, _after(smtp, reply, "reset")
            if trace is not None:
                trace("rcpt", _said(answer))
            stage = "data"
            deadline.reschedule(loop.time() + reply_wait)
            started = await smtp.execute_command(b"DATA", timeout=None)
            if started.code != 354:
                reply = classify(started.code, started.message, stage="data")
                return reply, _after(smtp, reply, "reset")
            if trace is not None:
                trace("data", _said(started))
            stage = "eod"
            protocol = smtp.protocol
            if protocol is None:
                raise SMTPServerDisconnected("connection lost")
            # Written straight to the protocol (rather than smtp.data()) so a refusal of the
            # DATA command and a refusal of the message itself are told apart.
            deadline.reschedule(loop.time() + reply_wait)
            protocol.write(_payload(env.data))
            final = await protocol.read_response(timeout=None)
    except (SMTPTimeoutError, TimeoutError):
        smtp.close()  # the reply may still come: the session is out of step for good
        return _lost(stage, f"no reply within {reply_wait:g}s"), "close"
    except (SMTPServerDisconnected, ConnectionError, ssl.SSLError):
        smtp.close()
        return _lost(stage, "connection lost"), "dead" if stage == "mail" else "close"
    except SMTPException as exc:  # an unreadable reply: the session is out of step
        smtp.close()
        return _lost(stage, f"unreadable reply ({one_line(str(exc))})"), "close"
    except ValueError as exc:
        # An address that cannot go on the wire (control characters, not encodable): nothing
        # was sent for it, and no server will take it.
        text = f"{STAGE_NAMES[stage]} not sent: {one_line(str(exc)) or type(exc).__name__}"
        return Reply("failed", None, None, text, stage=stage), "reset"
    reply = classify(final.code, final.message, stage="eod")
    if final.code == 421:  # aiosmtplib closes on 421 only for commands it sent itself
        smtp.close()
    return reply, _after(smtp, reply, "reuse")


def _after(smtp: SMTP, reply: Reply, otherwise: After) -> After:
    return "close" if reply.close_session or not smtp.is_connected else otherwise


def _lost(stage: Stage, what: str) -> Reply:
    where = "during DATA" if stage in ("data", "eod") else f"at {STAGE_NAMES[stage]}"
    text = f"{what} {where} — will retry"
    if stage == "eod":
        text += " (the server may have accepted the message)"
    return Reply("deferred", None, None, text, close_session=True, stage=stage)


# ---------------------------------------------------------------- the pool


@dataclass(eq=False)
class _Session:
    smtp: SMTP
    opened_at: float
    used: int = 0
    needs_reset: bool = False
    idle_timer: asyncio.TimerHandle | None = None


@dataclass
class PoolStats:
    """Counters and health of one pool (the worker's breaker keeps its own state)."""

    sessions_opened: int = 0
    messages: int = 0
    in_flight: int = 0
    open_sessions: int = 0
    idle_sessions: int = 0
    consecutive_failures: int = 0
    connection_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    replies: dict[str, int] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.consecutive_failures == 0


class SmtpPool:
    """Up to ``max_connections`` reusable sessions to one service; implements :class:`Transport`.

    Per recipient domain, ``domains[d].max_connections`` bounds the transactions in flight for
    that domain. A session is reused for ``messages_per_connection`` messages, closed after a
    421, a lost connection or a timeout, and closed when idle for ``IDLE_CLOSE`` seconds.
    """

    def __init__(
        self,
        service_id: str,
        service: Service,
        *,
        env: Mapping[str, str] | None = None,
        local_hostname: str | None = None,
    ) -> None:
        self.service_id = service_id
        self.service = service
        self.connector = Connector(service_id, service, env=env, local_hostname=local_hostname)
        self.timeout = service.timeout.total_seconds()
        self._slots = asyncio.Semaphore(service.max_connections)
        self._domain_slots = {
            domain: asyncio.Semaphore(shaping.max_connections)
            for domain, shaping in service.domains.items()
            if shaping.max_connections is not None
        }
        self._idle: list[_Session] = []  # LIFO: the most recently used session is warmest
        self._sessions: set[_Session] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._closed = False
        self._stats = PoolStats()

    # ------------------------------------------------------------ observation

    @property
    def stats(self) -> PoolStats:
        s = self._stats
        s.in_flight = self._in_flight
        s.open_sessions = len(self._sessions)
        s.idle_sessions = len(self._idle)
        return s

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ sending

    async def send(self, env: Envelope, *, gate: Gate | None = None) -> Reply:
        """Send ``env``; ``gate`` (if given) is awaited once a session is ready, right before
        ``MAIL FROM`` — the caller's rate permit. If it raises, the session goes back unused."""
        if self._closed:
            raise self.connector.refuse(
                "the pool is closed (config reload or shutdown) — the message goes back to the "
                "queue",
                "connect",
                "connect",
            )
        domain_slot = self._domain_slots.get(env.domain.lower()) if self._domain_slots else None
        if domain_slot is None:
            return await self._send_in_slot(env, gate)
        async with domain_slot:
            return await self._send_in_slot(env, gate)

    async def _send_in_slot(self, env: Envelope, gate: Gate | None) -> Reply:
        async with self._slots:
            self._in_flight += 1
            self._drained.clear()
            try:
                return await self._send_on_session(env, gate)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0:
                    self._drained.set()

    async def _send_on_session(self, env: Envelope, gate: Gate | None) -> Reply:
        for attempt in (1, 2):
            session = await self._checkout()
            if gate is not None and attempt == 1:
                try:
                    await gate()
                except BaseException:
                    await self._checkin(session, "reuse")
                    raise
            try:
                reply, after = await transact(session.smtp, env, reply_wait=self.timeout)
            except BaseException:  # cancelled mid-transaction: the session is out of step
                self._forget(session)
                raise
            if after == "dead" and session.used > 0 and attempt == 1:
                # The server dropped a session while it sat idle; nothing was sent: retry once
                # on a fresh session rather than defer the message.
                self._forget(session)
                continue
            if reply.code == 530 and reply.stage == "mail":
                # RFC 4954 "authentication required": the service's settings are wrong, not
                # the message — fail the session so the breaker can try another service.
                self._forget(session)
                failed = self.connector.refuse(
                    f"the server requires AUTH ({reply.summary()}) — set username: and a "
                    "password in the service",
                    "auth",
                    "auth",
                )
                self._record_failure(failed)
                raise failed
            session.used += 1
            self._count(reply)
            await self._checkin(session, after)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    def _count(self, reply: Reply) -> None:
        s = self._stats
        s.messages += 1
        s.replies[reply.kind] = s.replies.get(reply.kind, 0) + 1

    async def _checkout(self) -> _Session:
        while self._idle:
            session = self._idle.pop()
            if session.idle_timer is not None:
                session.idle_timer.cancel()
                session.idle_timer = None
            if not session.smtp.is_connected:
                self._forget(session)
                continue
            if session.needs_reset:
                try:
                    await session.smtp.rset()
                except (SMTPException, OSError):
                    self._forget(session)
                    continue
                session.needs_reset = False
            return session
        try:
            smtp = await self.connector.open()
        except ConnectionFailed as exc:
            self._record_failure(exc)
            raise
        self._stats.consecutive_failures = 0
        self._stats.sessions_opened += 1
        session = _Session(smtp, time.monotonic())
        self._sessions.add(session)
        return session

    def _record_failure(self, exc: ConnectionFailed) -> None:
        s = self._stats
        s.consecutive_failures += 1
        s.connection_failures += 1
        s.last_error = exc.reason
        s.last_error_at = time.time()

    async def _checkin(self, session: _Session, after: After) -> None:
        if after in ("close", "dead") or not session.smtp.is_connected:
            self._forget(session)
        elif self._closed or session.used >= self.service.messages_per_connection:
            # QUIT inside the caller's slot, so the server never sees more than max_connections.
            self._sessions.discard(session)
            await self._quit(session)
        else:
            session.needs_reset = after == "reset"
            loop = asyncio.get_running_loop()
            session.idle_timer = loop.call_later(IDLE_CLOSE, self._expire, session)
            self._idle.append(session)

    def _expire(self, session: _Session) -> None:
        session.idle_timer = None
        if session in self._idle:
            self._idle.remove(session)
            self._sessions.discard(session)
            self._spawn(self._quit(session))

    def _forget(self, session: _Session) -> None:
        self._sessions.discard(session)
        session.smtp.close()

    async def _quit(self, session: _Session) -> None:
        with contextlib.suppress(SMTPException, OSError):
            await session.smtp.quit(timeout=min(self.timeout, 5.0))
        session.smtp.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=f"smtp-quit-{self.service_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------ closing

    async def close(self, grace: float | None = None) -> None:
        """Stop taking messages; QUIT idle sessions; wait (bounded) for in-flight transactions."""
        self._closed = True
        idle, self._idle = self._idle, []
        for session in idle:
            if session.idle_timer is not None:
                session.idle_timer.cancel()
            self._sessions.discard(session)
        limit = CLOSE_WAIT if grace is None else grace
        await asyncio.gather(*(self._quit(s) for s in idle))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), limit)
        for session in list(self._sessions):  # still busy after the wait: cut them off
            self._forget(session)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


# ---------------------------------------------------------------- failures without a reply


def connection_failure(
    exc: BaseException, stage: Stage, *, peer: str | None = None, timeout: float | None = None
) -> Reply:
    """A deferred Reply saying, for an operator, why a session could not be opened or went away.

    ``peer`` (``host:port``) and ``timeout`` (seconds) make the text concrete when known.
    """
    where = f" {peer}" if peer else ""
    step = STAGE_NAMES[stage]
    code: int | None = None
    enhanced: str | None = None
    if isinstance(exc, SecretError):
        text = f"AUTH not attempted: {exc}"
    elif isinstance(exc, SMTPAuthenticationError):
        enhanced, rest = parse_enhanced(exc.message)
        code = exc.code
        text = f"AUTH rejected: {code} {enhanced + ' ' if enhanced else ''}{one_line(rest)}"
    elif (tls := find_cause(exc, ssl.SSLError)) is not None:
        text = f"TLS handshake failed{' with' + where if where else ''}: {_tls_reason(tls)}"
    elif isinstance(exc, SMTPResponseException) and exc.code >= 0:
        enhanced, rest = parse_enhanced(exc.message)
        code = exc.code
        said = " ".join(p for p in (str(code), enhanced or "", one_line(rest, enhanced)) if p)
        text = f"{step} refused{' by' + where if where else ''}: {said}"
    elif find_cause(exc, ConnectionRefusedError) is not None:
        text = f"connection refused by{where or ' the server'}"
    elif (gai := find_cause(exc, socket.gaierror)) is not None:
        host = peer.rpartition(":")[0] if peer else "the host"
        text = f"cannot resolve {host}: {gai.strerror or gai}"
    elif isinstance(exc, SMTPTimeoutError | TimeoutError):
        after = f" after {timeout:g}s" if timeout is not None else ""
        text = f"timed out{after} at {step}{' talking to' + where if where else ''}"
    elif isinstance(exc, SMTPServerDisconnected | ConnectionError | EOFError):
        text = f"connection closed by{where or ' the server'} during {step}"
    elif (os_err := find_cause(exc, OSError)) is not None:
        reason = os_err.strerror or str(os_err)
        text = f"cannot connect to{where or ' the server'}: {reason}"
    elif isinstance(exc, SMTPException):
        text = f"{step} failed: {one_line(str(exc))}"
    else:
        text = f"{step} failed: {type(exc).__name__}: {one_line(str(exc))}"
    return Reply("deferred", code, enhanced, one_line(text), close_session=True, stage=stage)


def _tls_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or "unknown reason"
        return f"certificate verify failed: {detail}"
    reason = exc.reason or exc.strerror or str(exc)
    return str(reason).replace("_", " ").lower()

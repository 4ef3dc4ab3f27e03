"""Real, misbehaving SMTP servers for tests (import these from any suite).

:class:`RecordingServer` is an aiosmtpd ``Controller`` on a free 127.0.0.1 port, in its own
thread and event loop, that records what it receives and can be told — per recipient or for
the next N messages — to answer 421/451/452/550/554, to drop the connection, or to stall
until released. It can require AUTH, offer STARTTLS or speak implicit TLS with a certificate
from :func:`make_tls` (a throw-away CA generated with ``cryptography``).
:func:`refused_port` gives a port nobody listens on.

    with RecordingServer() as server:
        server.reply("rcpt", "550 5.1.1 user unknown", address="gone@example.com")
        server.stall("data", times=1)           # the next DATA never answers …
        ...
        server.release()                        # … until released
        assert server.messages[0].rcpt_tos == ["ok@example.com"]
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from campaignd.config.model import Service

Stage = Literal["mail", "rcpt", "data"]
Action = Literal["reply", "drop", "stall"]
HOST = "127.0.0.1"


# ---------------------------------------------------------------- certificates


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it."""

    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def make_tls(directory: Path, *, name: str = "campaignd test CA") -> TlsFiles:
    """Write ca.pem, server.pem and server.key into ``directory`` (EC keys: fast to make)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


# ---------------------------------------------------------------- helpers


def refused_port() -> int:
    """A loopback port that was just bound and closed: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def service_for(port: int, **overrides: Any) -> Service:
    """A Service pointing at 127.0.0.1:port, plain SMTP and short timeouts unless overridden."""
    data: dict[str, Any] = {
        "from": "Acme <outreach@acme.test>",
        "host": HOST,
        "port": port,
        "security": "none",
        "timeout": "5s",
    }
    data.update(overrides)
    return Service.model_validate(data)


# ---------------------------------------------------------------- the recording server


@dataclass
class Rule:
    stage: Stage
    action: Action
    status: str | None  # the reply for "reply" (and after a released "stall")
    address: str | None  # MAIL: the sender; RCPT/DATA: a recipient; None: any
    times: int | None  # None: every time


@dataclass
class Received:
    """One message the server accepted (250 after DATA)."""

    session: int
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    mail_options: list[str]
    tls: bool
    login: str | None
    mail_at: float = 0.0
    """When MAIL FROM arrived (time.time()): the start of the SMTP transaction."""


@dataclass
class _SessionInfo:
    number: int
    login: str | None = None


class RecordingServer:
    """An aiosmtpd server in a thread. All counters are read after the client is done."""

    def __init__(
        self,
        *,
        starttls: TlsFiles | None = None,
        implicit_tls: TlsFiles | None = None,
        auth: tuple[str, str] | None = None,
        smtputf8: bool = True,
    ) -> None:
        self.messages: list[Received] = []
        self.rules: list[Rule] = []
        self.sessions = 0  # connections accepted
        self.concurrent = 0
        self.max_concurrent = 0
        self.ehlo_count = 0
        self.rset_count = 0
        self.quit_count = 0
        self.logins: list[tuple[str, str, bool]] = []  # (user, password, accepted)
        self.stalled = 0  # handlers waiting in a stall right now
        self.max_stalled = 0
        self._credentials = auth
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # stalls and closes notify it
        self._release = asyncio.Event()  # set from the test thread via call_soon_threadsafe
        kwargs: dict[str, Any] = {
            "hostname": HOST,
            "port": 0,
            "server_hostname": "mx.test",  # fixed: no getfqdn() per connection
            "enable_SMTPUTF8": smtputf8,
            "ready_timeout": 5.0,
        }
        if starttls is not None:
            kwargs["tls_context"] = starttls.server_context()
        if implicit_tls is not None:
            kwargs["ssl_context"] = implicit_tls.server_context()
        if auth is not None:
            kwargs["authenticator"] = self._authenticate
            # Over plain TCP aiosmtpd hides AUTH unless told otherwise (tests only).
            kwargs["auth_require_tls"] = starttls is not None or implicit_tls is not None
        self.controller = _Controller(self, _Handler(self), **kwargs)
        self.tls_files = starttls or implicit_tls

    # ------------------------------------------------------------ lifecycle

    def start(self) -> RecordingServer:
        self.controller.start()
        # aiosmtpd's own readiness probe is not a client session: wait until it is gone.
        with self._changed:
            self._changed.wait_for(lambda: self.concurrent == 0, timeout=5.0)
        self.reset_counters()
        return self

    def stop(self) -> None:
        self.release()
        self.controller.stop()

    def __enter__(self) -> RecordingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def service(self, **overrides: Any) -> Service:
        """A Service for this server: security and tls_ca_file follow how it was started."""
        data: dict[str, Any] = {}
        if self.tls_files is not None:
            data["tls_ca_file"] = str(self.tls_files.ca_file)
            data["security"] = "tls" if self.controller.ssl_context else "starttls"
        data.update(overrides)
        return service_for(self.port, **data)

    def reset_counters(self) -> None:
        with self._lock:
            self.sessions = self.max_concurrent = self.concurrent = 0
            self.ehlo_count = self.rset_count = self.quit_count = 0
            self.messages.clear()
            self.logins.clear()

    # ------------------------------------------------------------ scripting

    def reply(
        self, stage: Stage, status: str, *, address: str | None = None, times: int | None = None
    ) -> None:
        """Answer ``status`` (e.g. "550 5.1.1 user unknown") at ``stage``."""
        self._add(Rule(stage, "reply", status, address, times))

    def drop(self, stage: Stage, *, address: str | None = None, times: int | None = None) -> None:
        """Close the connection instead of answering (at "data": after the whole message)."""
        self._add(Rule(stage, "drop", None, address, times))

    def stall(
        self,
        stage: Stage,
        *,
        address: str | None = None,
        times: int | None = None,
        then: str | None = None,
    ) -> None:
        """Give no answer until :meth:`release`; then answer ``then`` (default: go on)."""
        self._add(Rule(stage, "stall", then, address, times))

    def release(self) -> None:
        """Let every stalled (and future stalled) handler go on."""
        loop = self.controller.loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(self._release.set)

    def wait_stalled(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``count`` handlers are stalled at once (thread-safe, no polling)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.stalled >= count, timeout)

    def wait_all_closed(self, timeout: float = 5.0) -> bool:
        """Block until no client session is open (thread-safe, no polling)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.concurrent == 0, timeout)

    def _add(self, rule: Rule) -> None:
        with self._lock:
            self.rules.append(rule)

    def _take(self, stage: Stage, addresses: list[str]) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.stage != stage or rule.times == 0:
                    continue
                if rule.address is not None and rule.address not in addresses:
                    continue
                if rule.times is not None:
                    rule.times -= 1
                return rule
        return None

    # ------------------------------------------------------------ server-thread side

    def _authenticate(
        self, server: SMTP, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        ok = self._credentials == (user, password)
        with self._lock:
            self.logins.append((user, password, ok))
        if ok:
            info = getattr(server, "info", None)
            if isinstance(info, _SessionInfo):
                info.login = user
        return AuthResult(success=ok, handled=False)

    def _opened(self) -> int:
        with self._lock:
            self.sessions += 1
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
            return self.sessions

    def _closed(self) -> None:
        with self._changed:
            self.concurrent -= 1
            self._changed.notify_all()

    async def _act(self, rule: Rule, server: SMTP) -> str | None:
        """Carry out a rule; the reply to give, or None to go on normally."""
        if rule.action == "reply":
            return rule.status
        if rule.action == "drop":
            assert server.transport is not None
            server.transport.close()
            await asyncio.get_running_loop().create_future()  # cancelled by connection_lost
            return None  # pragma: no cover
        with self._changed:
            self.stalled += 1
            self.max_stalled = max(self.max_stalled, self.stalled)
            self._changed.notify_all()
        try:
            await self._release.wait()
        finally:
            with self._lock:
                self.stalled -= 1
        return rule.status


class _Handler:
    def __init__(self, owner: RecordingServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: SMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        with self.owner._lock:
            self.owner.ehlo_count += 1
        session.host_name = hostname
        return responses

    async def handle_RSET(self, server: SMTP, session: Any, envelope: Any) -> str:
        with self.owner._lock:
            self.owner.rset_count += 1
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Any, envelope: Any) -> str:
        with self.owner._lock:
            self.owner.quit_count += 1
        return "221 Bye"

    async def handle_MAIL(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        rule = self.owner._take("mail", [address])
        if rule is not None and (answer := await self.owner._act(rule, server)) is not None:
            return answer
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        envelope.campaignd_mail_at = time.time()
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        rule = self.owner._take("rcpt", [address])
        if rule is not None and (answer := await self.owner._act(rule, server)) is not None:
            return answer
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        rule = self.owner._take("data", list(envelope.rcpt_tos))
        if rule is not None and (answer := await self.owner._act(rule, server)) is not None:
            return answer
        info = getattr(server, "info", None)
        received = Received(
            session=info.number if isinstance(info, _SessionInfo) else 0,
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=envelope.original_content,
            mail_options=list(envelope.mail_options),
            tls=server.transport is not None
            and server.transport.get_extra_info("sslcontext") is not None,
            login=info.login if isinstance(info, _SessionInfo) else None,
            mail_at=getattr(envelope, "campaignd_mail_at", 0.0),
        )
        with self.owner._lock:
            self.owner.messages.append(received)
            n = len(self.owner.messages)
        return f"250 2.0.0 Ok: queued as {n}"


class _CountingSMTP(SMTP):
    """Counts connections (once each, also across a STARTTLS re-handshake)."""

    def __init__(self, owner: RecordingServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.info: _SessionInfo | None = None
        # With AUTH configured, MAIL without it is refused (530). Set here rather than through
        # auth_required=, which warns when AUTH is also offered without TLS.
        self._auth_required = owner._credentials is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.info is None:
            self.info = _SessionInfo(self.owner._opened())
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self.info is not None:
            self.owner._closed()
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, owner: RecordingServer, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.owner = owner

    def factory(self) -> SMTP:
        return _CountingSMTP(self.owner, self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Bound to port 0: learn the real port before aiosmtpd's readiness probe uses it.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


@contextmanager
def running(**kwargs: Any) -> Iterator[RecordingServer]:
    server = RecordingServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()

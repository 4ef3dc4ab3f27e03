"""``campaignctl test-service`` and ``POST /api/services/{id}/test``: try a service step by step.

Connect, EHLO, STARTTLS or TLS, AUTH and — only when asked with ``--to`` — MAIL, RCPT and DATA
with a small test message. Each step reports the server's own words, and a failed step says
what to change in ``services.d/ID.yaml``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr
from typing import Literal

from ..config.model import Service
from ..errors import SecretError
from .classify import Stage, find_cause
from .smtp import (
    ConnectionFailed,
    Connector,
    Envelope,
    SMTPAuthenticationError,
    SMTPException,
    Step,
    transact,
)

Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class StepResult:
    name: str  # connect, tls, ehlo, starttls, auth, mail, rcpt, data
    status: Status
    detail: str
    hint: str | None = None

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class ServiceTestReport:
    service_id: str
    peer: str
    security: str
    to: str | None = None
    steps: list[StepResult] = field(default_factory=list)
    command: str = "test-service"
    """Names the report's first line: ``test-service`` or ``send-test``."""

    @property
    def ok(self) -> bool:
        return any(s.status == "ok" for s in self.steps) and all(s.ok for s in self.steps)

    def add(self, name: str, status: Status, detail: str, hint: str | None = None) -> None:
        self.steps.append(StepResult(name, status, detail, hint))

    def render(self) -> str:
        """Plain lines for a terminal (no markup: server replies may contain brackets)."""
        lines = [f"{self.command} {self.service_id}: {self.peer} (security: {self.security})"]
        width = max((len(s.name) for s in self.steps), default=0)
        for s in self.steps:
            mark = {"ok": "ok  ", "failed": "FAIL", "skipped": "skip"}[s.status]
            lines.append(f"  {mark}  {s.name.ljust(width)}  {s.detail}")
            if s.hint:
                lines.append(f"        {' ' * width}  hint: {s.hint}")
        failed = next((s for s in self.steps if s.status == "failed"), None)
        if failed is not None:
            lines.append(f"result: FAILED at {failed.name}")
        elif self.to:
            lines.append(f"result: ok — a test message to {self.to} was accepted")
        else:
            lines.append("result: ok — add --to ADDR to also send a test message")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "service": self.service_id,
            "peer": self.peer,
            "security": self.security,
            "to": self.to,
            "ok": self.ok,
            "steps": [
                {"name": s.name, "status": s.status, "detail": s.detail, "hint": s.hint}
                for s in self.steps
            ],
        }


async def test_service(
    service_id: str,
    service: Service,
    *,
    to: str | None,
    env: Mapping[str, str] | None = None,
    local_hostname: str | None = None,
    message: bytes | None = None,
    mail_from: str | None = None,
    command: str = "test-service",
) -> ServiceTestReport:
    """Run the steps against the real server; never raises for anything the server does.

    ``message`` (with ``mail_from``) replaces the small generic test message: ``campaignctl
    send-test`` sends a campaign's real message this way, through the same steps and report.
    """
    if service.transport == "outbox":
        report = ServiceTestReport(service_id, f"outbox {service.outbox}", "none", to)
        report.command = command
        report.add("outbox", "ok", f"transport: outbox writes .eml files to {service.outbox}")
        return report
    connector = Connector(service_id, service, env=env, local_hostname=local_hostname)
    report = ServiceTestReport(service_id, connector.peer, service.security, to, command=command)

    def observe(step: Step | Stage, detail: str) -> None:
        report.add(step, "ok", detail)

    try:
        smtp = await connector.open(observe)
    except ConnectionFailed as exc:
        report.add(exc.step, "failed", exc.reason, _open_hint(exc, service_id, service))
        return report
    if not service.username:
        report.add("auth", "skipped", "no username: in the service, so no AUTH")
    try:
        if to is None:
            return report
        recipient = _ascii_address(to)
        if recipient is None:
            report.add("rcpt", "failed", f"{to!r} is not an email address", "give --to ADDR")
            return report
        sender = mail_from or _sender(service)
        data = message if message is not None else _test_message(service_id, service, to, connector)
        envelope = Envelope(sender, recipient, data, recipient.rpartition("@")[2])
        reply, _ = await transact(smtp, envelope, reply_wait=connector.timeout, trace=observe)
        if reply.kind != "sent":
            stage = reply.stage or "data"
            name = "data" if stage == "eod" else stage
            hint = _send_hint(name, sender, service_id, service, reply.code)
            report.add(name, "failed", reply.summary(), hint)
        else:
            report.steps[-1] = _merge(report.steps[-1], reply.summary())
        return report
    finally:
        try:
            await smtp.quit()
        except (SMTPException, OSError):
            smtp.close()


def _merge(data_step: StepResult, final: str) -> StepResult:
    """One "data" line: the 354 and the final reply to the message."""
    if data_step.name != "data":
        return data_step
    return StepResult("data", "ok", f"{data_step.detail}; message: {final}")


def _sender(service: Service) -> str:
    if service.return_path and "{token}" not in service.return_path:
        return service.return_path
    return parseaddr(service.from_)[1]


def _ascii_address(address: str) -> str | None:
    local, at, domain = address.strip().rpartition("@")
    if not at or not local or not domain:
        return None
    try:
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return f"{local}@{ascii_domain.lower()}"


def _test_message(service_id: str, service: Service, to: str, connector: Connector) -> bytes:
    msg = EmailMessage()
    msg["From"] = service.from_
    msg["To"] = to
    msg["Subject"] = f"campaignd test-service {service_id}"
    msg["Date"] = formatdate(localtime=True)
    domain = parseaddr(service.from_)[1].rpartition("@")[2] or "campaignd.invalid"
    msg["Message-ID"] = make_msgid("test-service", domain=domain)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to a test, please
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    msg.set_content(
        f"This is a test message from campaignd, sent by `campaignctl test-service {service_id}`\n"
        f"through {connector.peer} at {now}. No reply is needed.\n"
    )
    return msg.as_bytes(policy=SMTP_POLICY)


def _open_hint(exc: ConnectionFailed, sid: str, service: Service) -> str:
    file = f"services.d/{sid}.yaml"
    cause = exc.__cause__
    text = exc.reply.text
    if exc.step == "connect":
        if cause is not None and find_cause(cause, ConnectionRefusedError) is not None:
            return f"is the relay listening on {exc.peer}? Check host: and port: in {file}"
        if text.startswith("cannot resolve"):
            return f"check host: in {file}"
        if text.startswith("timed out"):
            return (
                f"no answer from {exc.peer} within {service.timeout.total_seconds():g}s — check "
                f"host: and port: in {file}, and any firewall between here and the relay"
            )
        if exc.reply.code is not None:
            return "the server turned the session away; try later or ask the relay's operator"
        return f"check host:, port: and security: in {file}"
    if exc.step in ("tls", "starttls"):
        if "does not offer STARTTLS" in text:
            return "server does not offer STARTTLS — set security: none or tls"
        if text.startswith("cannot load tls_ca_file"):
            return f"fix tls_ca_file: in {file} — it must be a readable PEM file of CA certificates"
        if cause is not None and find_cause(cause, ssl.SSLCertVerificationError) is not None:
            return (
                f"the relay's certificate is not trusted: set tls_ca_file: in {file} to the CA "
                f"that signed it (a private relay), or fix the certificate; its name must match "
                f"host: {service.host}"
            )
        if exc.step == "tls":
            return (
                "does this port speak implicit TLS (usually 465)? For port 587 use "
                "security: starttls"
            )
        return "the TLS upgrade failed; check security: and port:"
    if exc.step == "auth":
        ref = service.secret_ref("password")
        if cause is not None and find_cause(cause, SecretError) is not None:
            return "provide the secret, then run test-service again"
        if cause is not None and find_cause(cause, SMTPAuthenticationError) is not None:
            where = ref.describe() if ref is not None else "the password"
            return f"check username: in {file} and the password in {where}"
        return (
            "the server offers no AUTH on this connection — remove username:, or use "
            "security: starttls or tls (servers often offer AUTH only over TLS)"
        )
    return "the server refused the greeting; check it is an SMTP server (host:, port:)"


def _send_hint(step: str, sender: str, sid: str, service: Service, code: int | None) -> str:
    file = f"services.d/{sid}.yaml"
    if code == 530:
        return f"the server requires AUTH — set username: and password_env: in {file}"
    if step == "mail":
        return (
            f"the relay refused the sender {sender}: check from: (and return_path:) in {file} — "
            "relays usually accept only their own domains"
        )
    if step == "rcpt":
        if not service.username:
            return f"most relays refuse to relay without AUTH — set username: in {file}"
        return "the address may not exist, or the relay refuses it by policy"
    return "the relay refused the message itself; its reply says why"

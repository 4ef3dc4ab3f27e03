"""The HTTP walk of tests/unit/web/test_walk.py once more, against campaignd as a process:
every route, without a token and with hostile headers and bodies, every webhook configured;
no answer is a 5xx and the daemon's log holds no traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from campaignd.config.load import load_root
from campaignd.stats import DeliveryStats
from campaignd.tokens.links import LinkSigner
from campaignd.web.api import make_app
from tests.integration.smtp.servers import RecordingServer
from tests.unit.web.test_walk import BODIES, HEADERS, MAX_BODY, J, sg, walk

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess

pytestmark = pytest.mark.system

SETTINGS = f"""timezone: UTC
drain_timeout: 10s
http: {{client_max_size: {MAX_BODY}}}
webhooks:
  ses: {{topic_arn: "arn:aws:sns:eu-west-1:123456789012:campaignd"}}
  sendgrid: {{public_key: "{sg.PUBLIC_DER}"}}
  mailgun: {{signing_key: "mailgun-key"}}
  postmark: {{basic_auth: "user:pass"}}
"""
# A well-formed SNS notification makes the daemon fetch its certificate from AWS: without a
# network that is a 503 on purpose (SNS retries it), so it is left to the unit walk.
SYSTEM_BODIES = [(b, h) for b, h in BODIES if b"amazonaws.com" not in b]


class RoutesOnly:
    """Just enough of a DaemonView for make_app to list its routes."""

    def __init__(self, root: Path) -> None:
        self.config = load_root(root, env={}).config
        self.stats = DeliveryStats()
        self.signer = LinkSigner(b"not the daemon's key")


def send(d: DaemonProcess, head: bytes, body: bytes = b"") -> int:
    """One request as raw bytes; the status of its answer (0: the connection was closed)."""
    with socket.create_connection(("127.0.0.1", d.port), timeout=15) as s:
        s.sendall(head + b"\r\nConnection: close\r\n\r\n" + body)
        s.shutdown(socket.SHUT_WR)
        line = s.makefile("rb").readline()
    return int(line.split()[1]) if line.startswith(b"HTTP/") else 0


def request(
    d: DaemonProcess, method: str, path: str, body: bytes, headers: dict[str, str]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{d.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


def test_no_hostile_request_gets_a_5xx_from_the_daemon(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=3, extra_files={"campaignd.yaml": SETTINGS})
    daemon = make_daemon(root).start()
    daemon.wait_state("news", "completed")
    app = make_app(RoutesOnly(root))  # type: ignore[arg-type]
    token = {"Authorization": f"Bearer {daemon.token}"}
    failures = []
    sent = 0
    for method, path, first in walk(app):
        cases = [(b, {**h, **t}) for b, h in SYSTEM_BODIES for t in (token, {})] if first else []
        cases += [(b"{}", {**J, **extra}) for extra in (HEADERS if first else HEADERS[:2])]
        for body, headers in cases:
            status = send(daemon, request(daemon, method, path, body, headers), body)
            sent += 1
            if status >= 500:
                failures.append((method, path[:80], body[:40], headers, status))
        line = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1".encode()
        for head in (
            line + b"\r\nAuthorization: Bearer \xff\xfe" + str(daemon.token).encode(),
            line + b"\r\nX-Big: " + b"h" * 20_000,
            line + b"\r\nContent-Type: application/json\r\nContent-Length: 99999999",
        ):
            status = send(daemon, head)
            sent += 1
            if status >= 500:
                failures.append((method, path[:80], head[-40:], status))
    for target in (b"/api/campaigns/\x00", b"/u/\x00abc", b"/healthz?\x00=\xff", b"/\xff\xfe"):
        assert send(daemon, b"GET " + target + b" HTTP/1.1\r\nHost: x") < 500
    assert not failures, failures[:20]
    assert sent > 1000
    assert daemon.get("/healthz")["ok"] is True
    assert "Traceback" not in daemon.log()
    assert daemon.stop() == 0

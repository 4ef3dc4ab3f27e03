"""Every route of ``make_app`` walked with hostile input — with and without the token, the
public routes (``/``, ``/healthz``, ``/hooks/{provider}`` for each provider configured and
not, ``/u/``, ``/o/``, ``/c/``) as much as ``/api`` and ``/metrics`` — and none answers a 5xx
or writes a traceback to the log.

The app is the real one; behind it a fake ``DaemonView`` (web/ports.py) over a real SQLite
store holding one campaign with messages, and a real link signer, so the handlers run to
their end instead of stopping at a missing object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp import TCPConnector, web
from aiohttp.test_utils import TestClient, TestServer

from campaignd.campaigns import control
from campaignd.config.load import load_root
from campaignd.config.model import Config
from campaignd.delivery.servicetest import ServiceTestReport
from campaignd.feedback.apply import Applied
from campaignd.feedback.event import FeedbackEvent
from campaignd.queue.rows import CampaignRow
from campaignd.queue.store import Store
from campaignd.stats import DeliveryStats
from campaignd.tokens.links import LinkSigner
from campaignd.tokens.verp import VerpDecoder
from campaignd.web import hooks
from campaignd.web.api import make_app, runner_options
from campaignd.web.common import DAEMON
from tests.integration.store.factory import seed
from tests.rootfiles import make_root
from tests.unit.feedback import test_webhooks_sendgrid as sg

TOKEN = "s3cret-token"
MAX_BODY = 64 * 1024
HOOKS_YAML = f"""
    timezone: UTC
    http: {{client_max_size: {MAX_BODY}}}
    webhooks:
      ses: {{topic_arn: "arn:aws:sns:eu-west-1:123456789012:campaignd"}}
      sendgrid: {{public_key: "{sg.PUBLIC_DER}"}}
      mailgun: {{signing_key: "mailgun-key"}}
      postmark: {{basic_auth: "user:pass"}}
"""
PLAIN_YAML = f"""
    timezone: UTC
    http: {{client_max_size: {MAX_BODY}}}
"""


class FakeFeedback:
    def verp(self) -> VerpDecoder | None:
        return None

    async def apply(self, events: Sequence[FeedbackEvent], *, authenticated: bool) -> list[Applied]:
        return []

    async def status(self) -> dict[str, Any]:
        return {"unmatched": 0, "sources": {}}


class FakeView:
    """A DaemonView over a real store; the daemon's transitions through campaigns/control."""

    def __init__(self, config: Config, store: Store, token: str | None) -> None:
        self.config = config
        self.store = store
        self.token = token
        self.run_state = "running"
        self.worker_id = "test:1"
        self.problems = ()
        self.loaded_at = self.started_at = time.time()
        self.stats = DeliveryStats()
        self.feedback = FakeFeedback()
        self.signer = LinkSigner(b"walk-key")

    def health(self) -> tuple[bool, str]:
        return True, ""

    def loops_snapshot(self) -> Mapping[str, Mapping[str, Any]]:
        return {}

    def limits_snapshot(self, now: float) -> Mapping[str, Any]:
        return {}

    def in_flight(self, service_id: str | None = None) -> int:
        return 0

    def breaker_snapshot(self, service_id: str, now: float) -> dict[str, object] | None:
        return None

    def campaign_notes(
        self, campaign_id: str, row: CampaignRow | None, now: float
    ) -> dict[str, Any]:
        return {}

    def enroll_error(self, campaign_id: str) -> str | None:
        return None

    async def control(self, campaign_id: str, action: str) -> str:
        return await control.set_state(self.store, campaign_id, action)

    async def retry(self, campaign_id: str, statuses: Sequence[str]) -> int:
        return await control.retry(self.store, campaign_id, statuses, now=time.time())

    def wake(self) -> None:
        pass

    async def test_service(self, service_id: str, to: str | None) -> ServiceTestReport:
        report = ServiceTestReport(service_id, "127.0.0.1:2525", "none", to=to)
        report.add("connect", "ok", "fake")
        return report


async def junk_fetch(url: str) -> bytes:
    """What a hostile sender can make an SNS URL answer: something that is no certificate
    (never the network in a unit test)."""
    return b"-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open("sqlite:///state/campaignd.db", root=tmp_path)
    await seed(s, "launch", 3)
    try:
        yield s
    finally:
        await s.close()


def app_for(root: Path, store: Store, token: str | None) -> web.Application:
    config = load_root(root, env={}).config
    assert config is not None
    app = make_app(FakeView(config, store, token))  # type: ignore[arg-type]
    app[hooks.FETCH] = junk_fetch
    return app


# ---------------------------------------------------------------- the hostile set

J = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
MULTIPART = {"Content-Type": "multipart/form-data; boundary=xyz"}
NESTED = b"[" * 100_000 + b"]" * 100_000
BODIES: list[tuple[bytes, dict[str, str]]] = [
    (b"", {}),
    (b"{}", J),
    (NESTED, J),
    (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, J),
    (b"[]", J),
    (b'"text"', J),
    (b"17", J),
    (b"null", J),
    (b'{"to": 5, "statuses": "failed", "addresses": [1, null], "reason": {"x": 1}}', J),
    (b'{"addresses": ["a\\u0000b@example.com"], "statuses": ["sent"]}', J),
    (b'{"Type": "Notification", "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/x.pem",'
     b' "Signature": "AAAA", "SignatureVersion": "1", "Message": "{}"}', J),
    (b'{"Type": "SubscriptionConfirmation", "SubscribeURL": 7, "SigningCertURL": []}', J),
    (b'{"signature": {"timestamp": [], "token": null, "signature": 1}, "event-data": 5}', J),
    (b'[{"email": 1, "event": [], "timestamp": "x"}]', J),
    (b"\xff\xfe\x00 not utf-8 \xc3\x28", J),
    (b"\xff\xfe\x00 not utf-8", {"Content-Type": "text/plain; charset=utf-8"}),
    (b"List-Unsubscribe=One-Click", FORM),
    (b"List-Unsubscribe=%FF%FE&via=\xff", FORM),
    (b"--xyz\r\nbroken multipart", MULTIPART),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + b"x" * 100, MULTIPART),
    (b"x", {"Content-Type": "multipart/form-data"}),  # no boundary at all
    (b"email\n" + b"a@b.example\n" * 10 + b"\x00" * 70_000 + b"\n", {"Content-Type": "text/csv"}),
    (b"{" + b" " * (MAX_BODY + 10) + b"}", J),  # beyond client_max_size
    (b"a" * (MAX_BODY * 2), FORM),
]  # fmt: skip
HEADERS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer s3crét"},
    {"Authorization": "Bearer " + "x" * 6000},
    {"X-Twilio-Email-Event-Webhook-Signature": "é" * 50, "X-Twilio-Email-Event-Webhook-Timestamp":
     "9" * 400, "Content-Type": "application/json; charset=\u00ff"},
    {"Host": "évil.example", "Accept": "\u2603"},
    {"Content-Type": "application/json; charset=x-unknown-codec"},
]  # fmt: skip


def paths_for(canonical: str, signer: LinkSigner) -> Iterator[str]:
    """Concrete paths for a route pattern: good ids, unknown ones and hostile ones."""
    if "{" not in canonical:
        yield canonical
        yield canonical + "?after=%00&limit=%00&status=%FF&recipient=%00&reason=%00"
        yield canonical + "?limit=99999999999999999999999&after=-1&step=1e9"
        return
    if "{provider}" in canonical:
        for name in (*hooks.PROVIDERS, "nope", "%00", "%C3%A9"):
            yield canonical.replace("{provider}", name)
        return
    if "{token}" in canonical:
        good = {
            "/u/": signer.unsubscribe_token("launch", "user0@example.com"),
            "/o/": signer.open_token(1),
            "/c/": signer.click_token(1, "https://acme.example/x?y=%00"),
        }
        prefix = canonical.split("{", 1)[0]
        for token in (good[prefix], "!!!", "A" * 4000, "%00%01", "%FF%FE", good[prefix][:-3]):
            yield prefix + token
        return
    for value in ("launch", "nope", "%00", "x" * 300, "%FF", "a%2Fb", "user0@example.com"):
        yield canonical.replace("{id}", value).replace("{address}", value)


def walk(app: web.Application) -> list[tuple[str, str, bool]]:
    """(method, path, first): every body goes to a route's first (good) path, the few
    plain ones to its hostile paths too."""
    view = app[DAEMON]
    assert view.signer is not None
    out = set()
    for route in app.router.routes():
        if route.resource is None or route.method == "HEAD":
            continue
        for i, path in enumerate(paths_for(route.resource.canonical, view.signer)):
            provider = path.startswith("/hooks/") and path[7:] in hooks.PROVIDERS
            out.add((route.method, path, i == 0 or provider))
    return sorted(out)


async def raw(client: TestClient, head: bytes, body: bytes = b"") -> int:
    """The status of a request written byte by byte (no client library would send it)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head + b"\r\nConnection: close\r\n\r\n" + body)
    writer.write_eof()  # a promised body that never comes: the server sees the end
    await writer.drain()
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
    return int(line.split()[1]) if line else 0


def no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert "Traceback" not in caplog.text, caplog.text[-3000:]
    bad = [r for r in caplog.records if r.exc_info is not None]
    assert not bad, [r.getMessage() for r in bad]


async def run_walk(app: web.Application, caplog: pytest.LogCaptureFixture) -> int:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="aiosqlite")  # every statement: noise
    caplog.set_level(logging.WARNING, logger="aiohttp.access")
    requests = walk(app)
    methods = {m for m, _, _ in requests}
    assert {"GET", "POST", "DELETE"} <= methods
    sent = 0
    server = TestServer(app)
    await server.start_server(**runner_options())
    # A fresh connection each time: the server closes one after answering early (413, 404)
    # without reading a body, and a reused one would fail in the client, not the server.
    async with TestClient(server, connector=TCPConnector(force_close=True)) as client:
        for method, path, first in requests:
            for body, content in BODIES if first else BODIES[:2]:
                for with_token in (True, False):
                    headers = {**content}
                    if with_token:
                        headers["Authorization"] = f"Bearer {TOKEN}"
                    resp = await client.request(
                        method, path, data=body, headers=headers, allow_redirects=False
                    )
                    text = await resp.text(errors="replace")
                    assert resp.status < 500, (method, path[:80], body[:60], resp.status, text)
                    sent += 1
            for extra in HEADERS if first else HEADERS[:2]:
                resp = await client.request(
                    method, path, data=b"{}", headers={**J, **extra}, allow_redirects=False
                )
                assert resp.status < 500, (method, path[:80], extra, resp.status)
                sent += 1
            line = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1".encode()
            for head in (
                line + b"\r\nAuthorization: Bearer \xff\xfe" + TOKEN.encode(),
                line + b"\r\nX-Mailgun-Signature: \xc3\x28\x00",
                line + b"\r\nX-Big: " + b"h" * 20_000,
                line + b"\r\nContent-Type: application/json\r\nContent-Length: 99999999",
                line + b"\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json",
            ):
                assert await raw(client, head) < 500, (method, path[:80], head[-60:])
                sent += 1
        # NUL bytes and undecodable bytes in the request line itself
        for target in (b"/api/campaigns/\x00", b"/u/\x00abc", b"/healthz?\x00=\xff", b"/\xff\xfe"):
            for method in (b"GET", b"POST"):
                status = await raw(client, method + b" " + target + b" HTTP/1.1\r\nHost: x")
                assert status < 500, (method, target)
        assert (await client.get("/healthz")).status == 200
    no_traceback(caplog)
    return sent


async def test_every_route_with_every_provider_configured(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_root(tmp_path / "root", {"campaignd.yaml": HOOKS_YAML})
    app = app_for(root, store, TOKEN)
    sent = await run_walk(app, caplog)
    assert sent > 2500


async def test_every_route_without_webhooks_or_token(
    tmp_path: Path, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    root = make_root(tmp_path / "root", {"campaignd.yaml": PLAIN_YAML})
    app = app_for(root, store, None)
    await run_walk(app, caplog)


async def test_the_walk_reaches_the_handlers(tmp_path: Path, store: Store) -> None:
    """The walk's good requests do get through: otherwise it would prove nothing."""
    root = make_root(tmp_path / "root", {"campaignd.yaml": HOOKS_YAML})
    app = app_for(root, store, TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with TestClient(TestServer(app)) as client:
        status = await client.get("/api/status", headers=auth)
        assert status.status == 200
        assert [c["id"] for c in (await status.json())["campaigns"]] == ["launch"]
        signer = app[DAEMON].signer
        assert signer is not None
        assert (await client.get("/o/" + signer.open_token(1))).status == 200
        click = await client.get(
            "/c/" + signer.click_token(1, "https://acme.example/"), allow_redirects=False
        )
        assert click.status == 302
        resp = await client.post("/hooks/mailgun", data=json.dumps({"signature": {}}), headers=J)
        assert resp.status == 401  # configured: checked, refused
        retry = await client.post(
            "/api/campaigns/launch/retry", json={"statuses": ["failed"]}, headers=auth
        )
        assert retry.status == 200


async def test_an_sns_url_that_fails_is_never_a_500(tmp_path: Path, store: Store) -> None:
    """What the sender controls (a certificate URL that is not found) is a 401; our own
    network failing is a 503 with Retry-After, so SNS retries a genuine notification."""
    from aiohttp import ClientResponseError
    from aiohttp.client_reqrep import RequestInfo
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    root = make_root(tmp_path / "root", {"campaignd.yaml": HOOKS_YAML})
    app = app_for(root, store, TOKEN)
    url = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem"

    async def not_found(u: str) -> bytes:
        info = RequestInfo(URL(u), "GET", CIMultiDictProxy(CIMultiDict()), URL(u))
        raise ClientResponseError(info, (), status=404)

    async def offline(u: str) -> bytes:
        raise OSError("Network is unreachable")

    body = json.dumps(
        {"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:eu-west-1:"
         "123456789012:campaignd", "Message": "{}", "Timestamp": "2026-12-01T12:00:00Z",
         "SignatureVersion": "1", "Signature": "AAAA", "SigningCertURL": url}
    )  # fmt: skip
    fetch = [not_found]

    async def current(u: str) -> bytes:
        return await fetch[0](u)

    app[hooks.FETCH] = current
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/hooks/ses", data=body, headers=J)
        assert resp.status == 401, await resp.text()
        fetch[0] = offline
        resp = await client.post("/hooks/ses", data=body, headers=J)
        assert resp.status == 503 and resp.headers["Retry-After"] == "60"
        assert "Network is unreachable" in (await resp.json())["error"]


def test_the_server_log_keeps_tracebacks_for_our_bugs_only() -> None:
    from aiohttp.http_exceptions import BadStatusLine

    from campaignd.web.api import MalformedRequests

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord(
            "campaignd.http", logging.ERROR, __file__, 1, "Error handling request from %s",
            ("127.0.0.1",), (type(exc), exc, None),
        )  # fmt: skip

    keep = MalformedRequests()
    for exc in (BadStatusLine(b"\x00".decode()), ConnectionResetError("Connection lost")):
        r = record(exc)
        assert keep.filter(r)
        assert r.exc_info is None and r.levelno == logging.INFO
        assert r.getMessage().startswith("Error handling request from 127.0.0.1: ")
    ours = record(KeyError("hello"))
    assert keep.filter(ours)
    assert ours.exc_info is not None and ours.levelno == logging.ERROR

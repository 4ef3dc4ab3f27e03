"""POST /hooks/{provider} on a real aiohttp server, a real database and the one event path.

Every provider's request is signed here with locally made keys exactly as the provider signs;
the SNS certificate "fetch" is the only stand-in (it would reach AWS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from campaignd.config.model import Config, Service, Settings, Webhooks
from campaignd.queue.store import Outcome, Store
from campaignd.runtime.feedback_runner import FeedbackRunner
from campaignd.tokens.links import LinkSigner
from campaignd.web import hooks
from campaignd.web.common import DAEMON
from tests.integration.store.factory import WORKER, seed

MAILGUN_KEY = "key-mailgun-test"
POSTMARK_AUTH = "postmark:hook-secret"
SG_KEY = ec.generate_private_key(ec.SECP256R1())
SNS_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-test.pem"
SUBSCRIBE_URL = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"


def sns_cert() -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(SNS_KEY.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
        .sign(SNS_KEY, hashes.SHA256())
    )  # fmt: skip
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Fetcher:
    """Stands in for HTTPS GETs to SNS: serves the test's certificate, records every URL."""

    pem: bytes = field(default_factory=sns_cert)
    urls: list[str] = field(default_factory=list)

    async def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem if url.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"


@dataclass
class Hooks:
    client: TestClient[web.Request, web.Application]
    store: Store
    fetch: Fetcher
    ids: dict[str, int]

    async def post(self, provider: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
        resp = await self.client.post(f"/hooks/{provider}", data=body, headers=headers or {})
        return resp.status, await resp.json()


@pytest.fixture
async def hooks_app(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Hooks]:
    sg_public = base64.b64encode(
        SG_KEY.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    monkeypatch.setenv("MAILGUN_KEY", MAILGUN_KEY)
    (tmp_path / "postmark").write_text(POSTMARK_AUTH + "\n")
    webhooks = Webhooks.model_validate(
        {
            "ses": {"topic_arn": TOPIC},
            "sendgrid": {"public_key_env": "SG_KEY_TEST"},
            "mailgun": {"signing_key_env": "MAILGUN_KEY"},
            "postmark": {"basic_auth_file": str(tmp_path / "postmark")},
        }
    )
    monkeypatch.setenv("SG_KEY_TEST", sg_public)
    config = Config(
        root=tmp_path,
        settings=Settings(webhooks=webhooks),
        services={"relay": Service.model_validate({"from": "a@acme.example"})},
    )
    now = time.time()
    await seed(sqlite_store, n=4, due=now)
    got = await sqlite_store.claim(
        worker=WORKER, now=now, lease=60, limit=10, campaign_ids=["launch"]
    )
    await sqlite_store.record(
        [Outcome(id=c.id, status="sent", service="relay", at=now, message_id=f"<m{c.id}@acme.test>")
         for c in got]
    )  # fmt: skip
    runner = FeedbackRunner(sqlite_store, lambda: config, signer=LinkSigner(b"k"),
                            on_pause=lambda *a: None)  # fmt: skip
    app = web.Application()
    app[DAEMON] = SimpleNamespace(config=config, feedback=runner)  # type: ignore[assignment]
    fetch = Fetcher()
    app[hooks.FETCH] = fetch
    hooks.add_routes(app)
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Hooks(client, sqlite_store, fetch, {c.recipient: c.id for c in got})
    finally:
        await client.close()


async def snapshot(store: Store) -> tuple[Any, ...]:
    return (
        (await store.counts("launch")).counts,
        await store.list_suppressions(),
        await store.unlinked_event_counts(),
    )


# ---------------------------------------------------------------- signing as the providers do


def mailgun(event: dict[str, Any], *, key: str = MAILGUN_KEY, token: str = "tok-1") -> bytes:
    ts = str(int(time.time()))
    mac = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps(
        {"signature": {"timestamp": ts, "token": token, "signature": mac}, "event-data": event}
    ).encode()


def sendgrid(batch: list[dict[str, Any]]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(batch).encode()
    ts = str(int(time.time()))
    sig = SG_KEY.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return body, {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": ts,
    }


def sns(message: dict[str, Any]) -> bytes:
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    canonical = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
    signature = SNS_KEY.sign(canonical.encode(), padding.PKCS1v15(), hashes.SHA256())
    signed = {**message, "SignatureVersion": "2", "SigningCertURL": CERT_URL,
              "Signature": base64.b64encode(signature).decode()}  # fmt: skip
    return json.dumps(signed).encode()


def basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


# ---------------------------------------------------------------- tests


async def test_mailgun_bounce_applies_once_and_a_bad_signature_changes_nothing(
    hooks_app: Hooks,
) -> None:
    mid = hooks_app.ids["user1@example.com"]
    event = {
        "event": "failed", "id": "mg-1", "severity": "permanent", "timestamp": time.time(),
        "recipient": "user1@example.com",
        "message": {"headers": {"message-id": f"m{mid}@acme.test"}},
        "delivery-status": {"code": 550, "message": "5.1.1 mailbox does not exist"},
    }  # fmt: skip
    before = await snapshot(hooks_app.store)
    for body in (mailgun(event, key="key-wrong"), json.dumps({"event-data": event}).encode()):
        status, answer = await hooks_app.post("mailgun", body)
        assert status == 401 and "signature" in answer["error"]
    assert await snapshot(hooks_app.store) == before

    status, answer = await hooks_app.post("mailgun", mailgun(event))
    assert (status, answer["applied"]) == (200, 1)
    row = await hooks_app.store.get_message(mid)
    assert row is not None and row.status == "bounced"
    after = await snapshot(hooks_app.store)
    # The provider retries (or someone replays the captured request): nothing changes.
    status, answer = await hooks_app.post("mailgun", mailgun(event))
    assert (status, answer["duplicate"], answer["applied"]) == (200, 1, 0)
    assert await snapshot(hooks_app.store) == after


async def test_sendgrid_batch(hooks_app: Hooks) -> None:
    a, b = hooks_app.ids["user0@example.com"], hooks_app.ids["user2@example.com"]
    body, headers = sendgrid(
        [
            {"email": "user0@example.com", "event": "spamreport", "sg_event_id": "sg-1",
             "timestamp": int(time.time()), "smtp-id": f"<m{a}@acme.test>"},
            {"email": "user2@example.com", "event": "open", "sg_event_id": "sg-2",
             "timestamp": int(time.time()), "smtp-id": f"<m{b}@acme.test>"},
        ]
    )  # fmt: skip
    status, answer = await hooks_app.post(
        "sendgrid", body, {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": "1"}
    )
    assert status == 401  # the timestamp is signed too
    status, answer = await hooks_app.post("sendgrid", body, headers)
    assert (status, answer["applied"]) == (200, 2)
    counts = (await hooks_app.store.counts("launch")).counts
    assert (counts["complained"], counts["opened"]) == (1, 1)
    assert await hooks_app.store.suppressed(["user0@example.com"]) == {"user0@example.com"}


async def test_postmark_matches_by_recipient_and_checks_basic_auth(hooks_app: Hooks) -> None:
    record = {
        "RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "Email": "user3@example.com",
        "BouncedAt": datetime.now(UTC).isoformat(), "Details": "smtp;550 5.1.1 unknown",
    }  # fmt: skip
    body = json.dumps(record).encode()
    before = await snapshot(hooks_app.store)
    for headers in ({}, basic("postmark:wrong"), {"Authorization": "Bearer x"}):
        status, _ = await hooks_app.post("postmark", body, headers)
        assert status == 401
    status, _ = await hooks_app.post("postmark", b"not json", basic("postmark:wrong"))
    assert status == 401  # credentials are checked before the body is read
    assert await snapshot(hooks_app.store) == before
    status, answer = await hooks_app.post("postmark", body, basic(POSTMARK_AUTH))
    assert (status, answer["applied"]) == (200, 1)
    row = await hooks_app.store.get_message(hooks_app.ids["user3@example.com"])
    assert row is not None and row.status == "bounced"


async def test_ses_via_sns_subscription_and_notification(hooks_app: Hooks) -> None:
    confirm = {
        "Type": "SubscriptionConfirmation", "MessageId": "sns-c1", "Token": "t", "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe", "SubscribeURL": SUBSCRIBE_URL,
        "Timestamp": datetime.now(UTC).isoformat(),
    }  # fmt: skip
    status, answer = await hooks_app.post("ses", sns(confirm))
    assert (status, answer["subscribed"]) == (200, TOPIC)
    assert hooks_app.fetch.urls == [CERT_URL, SUBSCRIBE_URL]

    mid = hooks_app.ids["user2@example.com"]
    payload = {
        "notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "user2@example.com"}],
                      "complaintFeedbackType": "abuse"},
        "mail": {"destination": ["user2@example.com"], "source": "a@acme.example",
                 "headers": [{"name": "Message-ID", "value": f"<m{mid}@acme.test>"}]},
    }  # fmt: skip
    note = {"Type": "Notification", "MessageId": "sns-n1", "TopicArn": TOPIC,
            "Message": json.dumps(payload), "Timestamp": datetime.now(UTC).isoformat()}  # fmt: skip
    forged = json.loads(sns(note))
    forged["Message"] = forged["Message"].replace("user2", "user3")
    before = await snapshot(hooks_app.store)
    status, _ = await hooks_app.post("ses", json.dumps(forged).encode())
    assert status == 401 and await snapshot(hooks_app.store) == before
    other_topic = sns({**note, "TopicArn": "arn:aws:sns:eu-west-1:999:theirs"})
    status, _ = await hooks_app.post("ses", other_topic)
    assert status == 401
    status, answer = await hooks_app.post("ses", sns(note))
    assert (status, answer["applied"]) == (200, 1)
    assert (await hooks_app.store.counts("launch")).counts["complained"] == 1
    assert hooks_app.fetch.urls.count(CERT_URL) == 1  # cached


async def test_unknown_or_unconfigured_providers_and_garbage(hooks_app: Hooks) -> None:
    status, answer = await hooks_app.post("brevo", b"{}")
    assert status == 404 and "webhooks.brevo" in answer["error"]
    status, _ = await hooks_app.post("mailgun", b"[1, 2]")
    assert status == 400
    status, _ = await hooks_app.post("ses", b'{"Type": "Notification"}')
    assert status == 401

"""The feedback loop with the daemon as a process (SPEC §7): DKIM-signed, VERP-addressed mail
to a real SMTP server, bounces and replies dropped into a real Maildir, webhooks over HTTP,
and the deliverability guards pausing a campaign that a relay answers 550 to."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import sqlite3
import time
import urllib.error
import urllib.request
from email import message_from_bytes
from itertools import count
from pathlib import Path
from typing import Any

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from campaignd.tokens.verp import VerpCodec
from tests.integration.feedback.samples import personalize
from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess, wait_for

pytestmark = pytest.mark.system

SECRET = "system-test-link-key"
PATTERN = "bounces+{token}@acme.test"
MAILGUN_KEY = "key-system-test"
DKIM_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_names = count(1)


def settings(maildir: Path, extra: str = "") -> str:
    return (
        "timezone: UTC\ndrain_timeout: 10s\n"
        "http: {public_url: 'https://mail.acme.test'}\n"
        f"feedback:\n  - maildir: {maildir}\n"
        "webhooks:\n  mailgun: {signing_key_env: MAILGUN_TEST_KEY}\n" + extra
    )


def make_maildir(root: Path) -> Path:
    maildir = root / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    return maildir


def deliver(maildir: Path, raw: bytes) -> Path:
    """As an MDA does: tmp/ first, then an atomic rename into new/."""
    name = f"{time.time_ns()}.{os.getpid()}_{next(_names)}.test"
    (maildir / "tmp" / name).write_bytes(raw)
    (maildir / "tmp" / name).rename(maildir / "new" / name)
    return maildir / "new" / name


def daemon_env() -> dict[str, str]:
    return {"CAMPAIGND_SECRET": SECRET, "MAILGUN_TEST_KEY": MAILGUN_KEY}


def message_ids(smtp: RecordingServer) -> dict[str, str]:
    """recipient → the Message-ID (without brackets) of the last message it received."""
    out = {}
    for m in smtp.messages:
        mid = message_from_bytes(m.data)["Message-ID"].strip("<>")
        for r in m.rcpt_tos:
            out[r] = mid
    return out


def suppressed(root: Path) -> set[str]:
    """The suppression list as the daemon wrote it (SQLite under the config root)."""
    db = sqlite3.connect(root / "state" / "campaignd.db")
    try:
        return {key for (key,) in db.execute("select key from suppressions")}
    finally:
        db.close()


def post_hook(daemon: DaemonProcess, provider: str, body: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(f"{daemon.base}/hooks/{provider}", data=body, method="POST")
    req.add_header("Content-Type", "application/json")  # and no bearer token
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_dkim_verp_a_mangled_bounce_an_unmatched_mail_and_a_webhook(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        DKIM_KEY.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )  # fmt: skip
    maildir = make_maildir(tmp_path)
    root = basic_root(
        tmp_path, smtp.port, recipients=5,
        service_extra=(
            f'return_path: "{PATTERN}"\n'
            f"dkim: {{domain: acme.test, selector: s1, private_key_file: {key_file}}}\n"
        ),
        extra_files={"campaignd.yaml": settings(maildir)},
    )  # fmt: skip
    daemon = make_daemon(root, env=daemon_env()).start()
    daemon.wait_state("news", "completed")
    rows = {r["recipient"]: r for r in daemon.messages("news")}

    # VERP: each envelope sender is signed for its own message row.
    codec = VerpCodec(SECRET.encode(), PATTERN)
    for m in smtp.messages:
        assert codec.decode(m.mail_from) == rows[m.rcpt_tos[0]]["id"]
    # DKIM: what the server received verifies against the published key.
    public = DKIM_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s1._domainkey.acme.test." else b""

    assert all(dkim.verify(m.data, dnsfunc=dns) for m in smtp.messages)
    tampered = smtp.messages[0].data.replace(b"Hello", b"Hallo")
    assert not dkim.verify(tampered, dnsfunc=dns)

    # A bounce so mangled it names nobody: the VERP token in Delivered-To is enough.
    victim = "user3@example.com"
    bounce = deliver(
        maildir, personalize("mangled-verp-bounce.eml", verp=codec.address(rows[victim]["id"]))
    )
    junk = deliver(maildir, personalize("unrelated.eml"))
    wait_for(
        "the bounce to be applied",
        lambda: daemon.campaign("news")["counts"]["bounced"] == 1,
        timeout=10,
    )
    status = wait_for("unmatched mail in /api/status", lambda: (s := daemon.get("/api/status"))
                      and s["feedback"]["unmatched"] == 1 and s)  # fmt: skip
    assert status["unmatched"] == 1
    assert {r["recipient"]: r["status"] for r in daemon.messages("news")}[victim] == "bounced"
    wait_for("the bounce to move to cur/", lambda: not bounce.exists())
    assert junk.exists()
    assert suppressed(root) == {victim}

    # A signed Mailgun open event, no bearer token; a forged one is refused.
    ts, token = str(int(time.time())), "tok-open"
    mac = hmac.new(MAILGUN_KEY.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    opened_id = rows["user0@example.com"]["message_id"]
    event = {"event": "opened", "id": "mg-open-1", "recipient": "user0@example.com",
             "message": {"headers": {"message-id": opened_id}}}  # fmt: skip
    forged = {"signature": {"timestamp": ts, "token": token, "signature": "0" * 64},
              "event-data": event}  # fmt: skip
    assert post_hook(daemon, "mailgun", json.dumps(forged).encode())[0] == 401
    signed = {**forged, "signature": {"timestamp": ts, "token": token, "signature": mac}}
    code, answer = post_hook(daemon, "mailgun", json.dumps(signed).encode())
    assert (code, answer["applied"]) == (200, 1)
    assert daemon.campaign("news")["counts"]["opened"] == 1
    assert daemon.stop() == 0


def test_the_bounce_guard_pauses_a_campaign_the_relay_refuses(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    for i in range(0, 80, 4):  # a quarter of the list is gone
        smtp.reply("rcpt", "550 5.1.1 user unknown", address=f"user{i}@example.com")
    root = basic_root(
        tmp_path, smtp.port, recipients=80,
        campaign_extra=(
            "rate: 20/second\n"
            "guard: {max_bounce_rate: 10%, max_complaint_rate: 1%, min_sample: 20}\n"
        ),
    )  # fmt: skip
    daemon = make_daemon(root).start()
    summary = daemon.wait_state("news", "paused", timeout=30)
    assert "bounce rate" in summary["reason"] and "max_bounce_rate 10%" in summary["reason"]
    counts = daemon.campaign("news")["counts"]
    assert counts["bounced"] >= 5 and counts["sent"] + counts["bounced"] < 80
    assert daemon.stop() == 0


def test_the_complaint_guard_pauses_on_abuse_reports(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    maildir = make_maildir(tmp_path)
    root = basic_root(
        tmp_path, smtp.port, recipients=100,
        campaign_extra=(
            "rate: 10/second\n"
            "guard: {max_bounce_rate: 10%, max_complaint_rate: 2%, min_sample: 10}\n"
        ),
        extra_files={"campaignd.yaml": settings(maildir)},
    )  # fmt: skip
    daemon = make_daemon(root, env=daemon_env()).start()
    wait_for("ten messages", lambda: len(smtp.messages) >= 10)
    ids = message_ids(smtp)
    for recipient in ("user1@example.com", "user2@example.com"):
        deliver(
            maildir, personalize("microsoft-arf.eml", message_id=ids[recipient], verp="x@y.test")
        )
    summary = daemon.wait_state("news", "paused", timeout=30)
    assert "complaint rate" in summary["reason"]
    assert summary["counts"]["sent"] < 100
    # The guard may trip on the first report; the second one still counts.
    wait_for("both complaints", lambda: daemon.campaign("news")["counts"]["complained"] == 2)
    assert suppressed(root) == {"user1@example.com", "user2@example.com"}
    assert daemon.stop() == 0


def test_a_reply_in_the_maildir_ends_that_recipients_drip(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    maildir = make_maildir(tmp_path)
    campaign = (
        "kind: transactional\naudience: lists/people.csv\nservices: [sink]\nsteps:\n"
        "  - template: hello\n"
        "  - {after: 3s, template: hello, unless: [replied]}\n"
    )
    root = basic_root(
        tmp_path, smtp.port, recipients=3,
        extra_files={"campaignd.yaml": settings(maildir), "campaigns.d/news.yaml": campaign},
    )  # fmt: skip
    daemon = make_daemon(root, env=daemon_env()).start()
    wait_for("step 1 to everyone", lambda: len(smtp.messages) == 3)
    ids = message_ids(smtp)
    reply = personalize("thunderbird-reply.eml", message_id=ids["user1@example.com"])
    deliver(maildir, reply)
    wait_for("the reply to count", lambda: daemon.campaign("news")["counts"]["replied"] == 1)
    summary = daemon.wait_state("news", "completed", timeout=30)
    step2 = sorted(r for m in smtp.messages[3:] for r in m.rcpt_tos)
    assert step2 == ["user0@example.com", "user2@example.com"]
    assert summary["by_step"]["2"]["skipped"] == 1
    assert daemon.stop() == 0

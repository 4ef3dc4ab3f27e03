"""feedback/mailgun.py: HMAC over timestamp ‖ token, a 10-minute window, and the mapping."""

from __future__ import annotations

import copy
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from campaignd.feedback.webhooks import BadPayload, BadSignature, mailgun_events
from campaignd.tokens.verp import VerpCodec

SIGNING_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
VERP = VerpCodec(b"test-verp-key", "bounces+{token}@mail.acme.example")


TOKEN = "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"


def signature(at: datetime = NOW, token: str = TOKEN) -> dict[str, str]:
    timestamp = str(int(at.timestamp()))
    mac = hmac.new(SIGNING_KEY.encode(), (timestamp + token).encode(), hashlib.sha256)
    return {"timestamp": timestamp, "token": token, "signature": mac.hexdigest()}


FAILED = {
    "event": "failed",
    "id": "G9Bn5sl1TC6nu79C8C0bwg",
    "timestamp": 1764590000.123,
    "severity": "permanent",
    "reason": "bounce",
    "recipient": "jdoe@agency.example",
    "envelope": {"sender": VERP.address(4711), "transport": "smtp"},
    "message": {"headers": {"message-id": "campaignd.4711.c@mail.acme.example"}},
    "delivery-status": {
        "code": 550,
        "message": "5.1.1 The email account that you tried to reach does not exist",
        "description": "",
    },
}


def post(data: dict[str, Any], **kw: Any) -> dict[str, Any]:
    return {"signature": signature(**kw), "event-data": data}


def events(payload: dict[str, Any], now: datetime = NOW) -> Any:
    return mailgun_events(payload, signing_key=SIGNING_KEY, now=now, verp=VERP)


def test_permanent_failure() -> None:
    (e,) = events(post(FAILED))
    assert (e.kind, e.recipient, e.status, e.permanent) == (
        "bounced",
        "jdoe@agency.example",
        "5.1.1",
        True,
    )
    assert (e.message_id, e.message_ref) == ("campaignd.4711.c@mail.acme.example", 4711)
    assert e.at == datetime.fromtimestamp(1764590000.123, tz=UTC)
    assert e.source == "mailgun"


def test_temporary_failure_and_the_other_events() -> None:
    temp = copy.deepcopy(FAILED)
    temp["severity"] = "temporary"
    temp["delivery-status"] = {"code": 452, "enhanced-code": "4.2.2", "message": "full"}
    (e,) = events(post(temp))
    assert (e.kind, e.permanent, e.status) == ("deferred_bounce", False, "4.2.2")
    for name, kind in [
        ("delivered", "delivered"),
        ("opened", "opened"),
        ("clicked", "clicked"),
        ("complained", "complained"),
        ("unsubscribed", "unsubscribed"),
    ]:
        (e,) = events(post({**FAILED, "event": name, "url": "https://acme.example/x"}))
        assert (e.kind, e.status, e.permanent) == (kind, None, False)
    for name in ("accepted", "stored", "rejected", "something-new"):
        assert events(post({**FAILED, "event": name})) == []


def test_stale_or_future_signatures_are_refused() -> None:
    events(post(FAILED, at=NOW - timedelta(minutes=9)))
    with pytest.raises(BadSignature, match="stale"):
        events(post(FAILED, at=NOW - timedelta(minutes=11)))
    with pytest.raises(BadSignature, match="stale"):
        events(post(FAILED, at=NOW + timedelta(minutes=11)))


@pytest.mark.parametrize(
    "change",
    [
        {"signature": "0" * 64},
        {"token": "another-token"},
        {"timestamp": str(int(NOW.timestamp()) + 1)},
        {"timestamp": "12ab"},
        {"signature": ""},
    ],
)
def test_tampering_is_a_bad_signature(change: dict[str, str]) -> None:
    payload = post(FAILED)
    payload["signature"] = {**payload["signature"], **change}
    with pytest.raises(BadSignature):
        events(payload)


def test_another_key_and_missing_parts() -> None:
    with pytest.raises(BadSignature):
        mailgun_events(post(FAILED), signing_key="other", now=NOW)
    with pytest.raises(BadSignature):
        events({"event-data": FAILED})
    with pytest.raises(BadPayload):
        events({"signature": signature()})


def test_dedupe_key_is_the_event_id() -> None:
    first = events(post(FAILED))[0].dedupe_key
    # Mailgun retries with a fresh signature; the event is the same.
    assert events(post(FAILED, token="t2"))[0].dedupe_key == first
    assert events(post({**FAILED, "id": "other"}))[0].dedupe_key != first

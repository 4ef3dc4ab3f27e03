"""feedback/sendgrid.py: ECDSA P-256 over timestamp ‖ body, and the event mapping."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from campaignd.feedback.webhooks import (
    BadPayload,
    BadSignature,
    load_sendgrid_key,
    sendgrid_events,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC_DER = base64.b64encode(
    KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
SIG = "X-Twilio-Email-Event-Webhook-Signature"
TS = "X-Twilio-Email-Event-Webhook-Timestamp"


# Signed at NOW: the timestamp is checked against the clock (it once sat a year before NOW,
# which only passed because nothing checked it).
def signed(body: bytes, timestamp: str = "1796126400", key: Any = KEY) -> dict[str, str]:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {SIG: base64.b64encode(signature).decode(), TS: timestamp}


BATCH = [
    {
        "email": "jdoe@agency.example",
        "timestamp": 1764590000,
        "smtp-id": "<campaignd.4711.c@mail.acme.example>",
        "event": "bounce",
        "type": "bounce",
        "status": "5.1.1",
        "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
        "sg_event_id": "ZGVsaXZlcmVk-1",
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
    },
    {"email": "a@x.example", "timestamp": 1764590001, "event": "deferred",
     "response": "451 4.7.1 try later", "sg_event_id": "e-2"},
    {"email": "a@x.example", "timestamp": 1764590002, "event": "delivered",
     "response": "250 OK", "sg_event_id": "e-3"},
    {"email": "a@x.example", "timestamp": 1764590003, "event": "open", "sg_event_id": "e-4",
     "useragent": "Mozilla/5.0"},
    {"email": "a@x.example", "timestamp": 1764590004, "event": "click", "sg_event_id": "e-5",
     "url": "https://acme.example/pricing"},
    {"email": "a@x.example", "timestamp": 1764590005, "event": "spamreport", "sg_event_id": "e-6"},
    {"email": "a@x.example", "timestamp": 1764590006, "event": "unsubscribe", "sg_event_id": "e-7"},
    {"email": "a@x.example", "timestamp": 1764590007, "event": "group_unsubscribe",
     "sg_event_id": "e-8"},
    {"email": "a@x.example", "timestamp": 1764590008, "event": "processed", "sg_event_id": "e-9"},
    {"email": "b@x.example", "timestamp": 1764590009, "event": "bounce", "type": "blocked",
     "status": "5.7.1", "reason": "554 5.7.1 blocked by policy", "sg_event_id": "e-10"},
    {"email": "c@x.example", "timestamp": 1764590010, "event": "dropped",
     "reason": "Bounced Address", "sg_event_id": "e-11"},
    {"email": "d@x.example", "timestamp": 1764590011, "event": "dropped",
     "reason": "Unsubscribed Address", "sg_event_id": "e-12"},
    {"email": "e@x.example", "timestamp": 1764590012, "event": "dropped",
     "reason": "Exceeded Rate Limit", "sg_event_id": "e-13"},
    "not an event",
]  # fmt: skip
BODY = json.dumps(BATCH).encode()


def test_maps_a_signed_batch() -> None:
    got = sendgrid_events(BODY, signed(BODY), public_key=PUBLIC_DER, now=NOW)
    assert [(e.kind, e.recipient, e.status, e.permanent) for e in got] == [
        ("bounced", "jdoe@agency.example", "5.1.1", True),
        ("deferred_bounce", "a@x.example", "4.7.1", False),
        ("delivered", "a@x.example", None, False),
        ("opened", "a@x.example", None, False),
        ("clicked", "a@x.example", None, False),
        ("complained", "a@x.example", None, False),
        ("unsubscribed", "a@x.example", None, False),
        ("unsubscribed", "a@x.example", None, False),
        ("bounced", "b@x.example", "5.7.1", True),
        ("bounced", "c@x.example", None, True),
        ("unsubscribed", "d@x.example", None, False),
    ]
    first = got[0]
    assert first.message_id == "campaignd.4711.c@mail.acme.example"
    assert first.at == datetime.fromtimestamp(1764590000, tz=UTC)
    assert first.source == "sendgrid"
    assert got[4].detail == "https://acme.example/pricing"
    assert got[8].detail.startswith("blocked:")
    assert len({e.dedupe_key for e in got}) == len(got)


def test_keys_are_stable_per_event_id_even_in_another_batch() -> None:
    alone = json.dumps(BATCH[4:5]).encode()
    (click,) = sendgrid_events(alone, signed(alone), public_key=PUBLIC_DER, now=NOW)
    full = sendgrid_events(BODY, signed(BODY), public_key=PUBLIC_DER, now=NOW)
    assert click.dedupe_key == full[4].dedupe_key


def test_pem_keys_and_lowercase_headers_work() -> None:
    pem = (
        KEY.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    headers = {k.lower(): v for k, v in signed(BODY).items()}
    assert len(sendgrid_events(BODY, headers, public_key=pem, now=NOW)) == 11


@pytest.mark.parametrize(
    "tamper",
    [
        lambda b, h: (b + b" ", h),
        lambda b, h: (b, {**h, TS: "1764590401"}),
        lambda b, h: (b, {SIG: h[SIG]}),
        lambda b, h: (b, {TS: h[TS]}),
        lambda b, h: (b, {**h, SIG: "@@@"}),
        lambda b, h: (b, {**h, SIG: base64.b64encode(b"\x30\x00").decode()}),
        lambda b, h: (b, signed(b, key=ec.generate_private_key(ec.SECP256R1()))),
    ],
)
def test_tampering_is_a_bad_signature(tamper: Any) -> None:
    body, headers = tamper(BODY, signed(BODY))
    with pytest.raises(BadSignature):
        sendgrid_events(body, headers, public_key=PUBLIC_DER, now=NOW)


def test_signed_garbage_is_a_bad_payload() -> None:
    for body in (b"not json", b'{"event": "bounce"}'):
        with pytest.raises(BadPayload):
            sendgrid_events(body, signed(body), public_key=PUBLIC_DER, now=NOW)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "not base64 !!",
        base64.b64encode(b"garbage").decode(),
        base64.b64encode(
            rsa.generate_private_key(public_exponent=65537, key_size=1024)
            .public_key()
            .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        ).decode(),
        base64.b64encode(  # a real key, but RSA
            rsa.generate_private_key(public_exponent=65537, key_size=1024)
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode(),
    ],
)
def test_a_wrong_configured_key_says_what_to_paste(key: str) -> None:
    with pytest.raises(ValueError, match="Verification Key") as caught:
        load_sendgrid_key(key)
    assert not isinstance(caught.value, BadSignature)  # the operator's mistake, not a forgery

"""feedback/ses.py: SNS signatures (v1 SHA1, v2 SHA256) and the SES event shapes.

A local self-signed certificate stands in for the one SNS serves; nothing touches the network.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from campaignd.feedback.webhooks import BadSignature, ConfirmSubscription, ses_events, verify_sns
from campaignd.tokens.verp import VerpCodec

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0000.pem"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
VERP = VerpCodec(b"test-verp-key", "bounces+{token}@mail.acme.example")


def make_cert(key: Any, *, days: int = 365) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
CERT = make_cert(KEY)


class Fetcher:
    def __init__(self, pem: bytes = CERT) -> None:
        self.pem = pem
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem


def sign(message: dict[str, Any], *, version: str = "1", key: Any = KEY) -> dict[str, Any]:
    """Sign as SNS documents it: "Name\\nvalue\\n" for the type's fields, in this order."""
    if message["Type"] == "Notification":
        names = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        names = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    canonical = "".join(f"{n}\n{message[n]}\n" for n in names if n in message)
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
    return {
        **message,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": CERT_URL,
    }


def notification(payload: dict[str, Any] | str, *, message_id: str = "sns-1") -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": TOPIC,
        "Message": payload if isinstance(payload, str) else json.dumps(payload),
        "Timestamp": "2026-12-01T11:59:58.123Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }


MAIL: dict[str, Any] = {
    "timestamp": "2026-12-01T11:50:00.000Z",
    "source": VERP.address(4711),
    "messageId": "0102018c-ses-id",
    "destination": ["jdoe@agency.example"],
    "headers": [
        {"name": "From", "value": "outreach@acme.example"},
        {"name": "Message-ID", "value": "<campaignd.4711.c@mail.acme.example>"},
    ],
    "commonHeaders": {"messageId": "<ignored@mail.acme.example>"},
}

BOUNCE: dict[str, Any] = {
    "eventType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bounceSubType": "General",
        "bouncedRecipients": [
            {
                "emailAddress": "jdoe@agency.example",
                "action": "failed",
                "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown",
            }
        ],
        "timestamp": "2026-12-01T11:55:00.000Z",
        "feedbackId": "fb-1",
    },
    "mail": MAIL,
}


def events(message: dict[str, Any], **kw: Any) -> Any:
    kw.setdefault("topic_arn", TOPIC)
    return ses_events(message, Fetcher(), now=NOW, verp=VERP, **kw)


@pytest.mark.parametrize("version", ["1", "2"])
def test_both_signature_versions_verify(version: str) -> None:
    fetch = Fetcher()
    verify_sns(sign(notification(BOUNCE), version=version), fetch, now=NOW)
    assert fetch.urls == [CERT_URL]


def test_subject_is_part_of_the_signature() -> None:
    message = sign({**notification(BOUNCE), "Subject": "Amazon SES Email Event Notification"})
    verify_sns(message, Fetcher())
    with pytest.raises(BadSignature):
        verify_sns({**message, "Subject": "changed"}, Fetcher())


@pytest.mark.parametrize(
    "change",
    [
        {"Message": json.dumps({**BOUNCE, "eventType": "Delivery"})},
        {"MessageId": "sns-2"},
        {"Timestamp": "2026-12-01T12:00:00.000Z"},
        {"TopicArn": TOPIC + "x"},
        {"SignatureVersion": "3"},
        {"SignatureVersion": "2"},  # signed as v1: a SHA256 check must fail
        {"Signature": "not base64!"},
        {"Signature": base64.b64encode(b"\x00" * 256).decode()},
        {"Type": "Bogus"},
    ],
)
def test_any_change_breaks_the_signature(change: dict[str, str]) -> None:
    message = {**sign(notification(BOUNCE)), **change}
    with pytest.raises(BadSignature):
        verify_sns(message, Fetcher())


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/cert.pem",
        "https://user@sns.eu-west-1.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com/cert.txt",
        "https://s3.amazonaws.com/cert.pem",
        "https://sns.eu-west-1.amazonaws.com:bad/cert.pem",
        "",
    ],
)
def test_certificates_only_come_from_sns(url: str) -> None:
    fetch = Fetcher()
    with pytest.raises(BadSignature):
        verify_sns({**sign(notification(BOUNCE)), "SigningCertURL": url}, fetch)
    assert fetch.urls == []  # refused before anything was fetched


def test_china_regions_are_sns_too() -> None:
    url = "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-1.pem"
    fetch = Fetcher()
    verify_sns({**sign(notification(BOUNCE)), "SigningCertURL": url}, fetch)
    assert fetch.urls == [url]


def test_a_certificate_with_another_key_fails() -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(BadSignature, match="does not match"):
        verify_sns(sign(notification(BOUNCE)), Fetcher(make_cert(other)))


def test_bad_certificates_fail() -> None:
    with pytest.raises(BadSignature, match="PEM"):
        verify_sns(sign(notification(BOUNCE)), Fetcher(b"<html>not a cert</html>"))
    ec_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(BadSignature, match="RSA"):
        verify_sns(sign(notification(BOUNCE)), Fetcher(make_cert(ec_key)))
    expired = make_cert(KEY, days=-1)
    verify_sns(sign(notification(BOUNCE)), Fetcher(expired))  # no clock given: not checked
    with pytest.raises(BadSignature, match="not valid now"):
        verify_sns(sign(notification(BOUNCE)), Fetcher(expired), now=NOW)


def test_subscription_confirmation_tells_the_caller_where_to_confirm() -> None:
    confirm = sign(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "sns-sub",
            "Token": "2336412f37fb687f5d51e6e2425c464d",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe to the topic …",
            "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&T=1",
            "Timestamp": "2026-12-01T11:00:00.000Z",
        }
    )
    assert events(confirm) == ConfirmSubscription(confirm["SubscribeURL"], TOPIC)
    # The subscribe URL is signed too, and must be an SNS endpoint even when signed.
    with pytest.raises(BadSignature):
        events({**confirm, "SubscribeURL": "https://evil.example/"})
    evil = copy.deepcopy(confirm)
    evil["SubscribeURL"] = "https://evil.example/"
    with pytest.raises(BadSignature, match="not https://sns"):
        events(sign({k: v for k, v in evil.items() if not k.startswith("Sign")}))


def test_the_topic_is_pinned_when_configured() -> None:
    other_topic = sign({**notification(BOUNCE), "TopicArn": "arn:aws:sns:eu-west-1:666:x"})
    with pytest.raises(BadSignature, match="topic"):
        events(other_topic)
    assert len(events(other_topic, topic_arn=None)) == 1


def test_bounce() -> None:
    (e,) = events(sign(notification(BOUNCE)))
    assert (e.kind, e.recipient, e.status, e.permanent) == (
        "bounced",
        "jdoe@agency.example",
        "5.1.1",
        True,
    )
    assert e.message_id == "campaignd.4711.c@mail.acme.example"
    assert e.message_ref == 4711  # from mail.source, our VERP MAIL FROM
    assert e.at == datetime(2026, 12, 1, 11, 55, tzinfo=UTC)
    assert e.source == "ses"
    assert "user unknown" in e.detail


def test_transient_bounce_and_delay_are_temporary() -> None:
    transient = copy.deepcopy(BOUNCE)
    transient["bounce"]["bounceType"] = "Transient"
    transient["bounce"]["bouncedRecipients"][0]["status"] = "4.2.2"
    (e,) = events(sign(notification(transient)))
    assert (e.kind, e.permanent, e.status) == ("deferred_bounce", False, "4.2.2")
    delay = {
        "eventType": "DeliveryDelay",
        "mail": MAIL,
        "deliveryDelay": {
            "delayType": "MailboxFull",
            "delayedRecipients": [
                {"emailAddress": "jdoe@agency.example", "status": "4.2.2", "diagnosticCode": "x"}
            ],
            "timestamp": "2026-12-01T11:56:00.000Z",
        },
    }
    (e,) = events(sign(notification(delay)))
    assert (e.kind, e.status) == ("deferred_bounce", "4.2.2")


def test_identity_notifications_and_other_event_types() -> None:
    complaint: dict[str, Any] = {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "pat@yahoo.example"}],
            "complaintFeedbackType": "abuse",
            "timestamp": "2026-12-01T11:57:00.000Z",
        },
        "mail": {**MAIL, "headers": []},
    }
    (e,) = events(sign(notification(complaint)))
    assert (e.kind, e.recipient) == ("complained", "pat@yahoo.example")
    assert e.message_id == "ignored@mail.acme.example"  # commonHeaders when headers lack it
    delivery = {
        "eventType": "Delivery",
        "mail": MAIL,
        "delivery": {"recipients": ["a@x.example", "b@x.example"], "smtpResponse": "250 ok"},
    }
    assert [e.recipient for e in events(sign(notification(delivery)))] == [
        "a@x.example",
        "b@x.example",
    ]
    click = {"eventType": "Click", "mail": MAIL, "click": {"link": "https://acme.example/p"}}
    (e,) = events(sign(notification(click)))
    assert (e.kind, e.recipient, e.detail) == (
        "clicked",
        "jdoe@agency.example",
        "https://acme.example/p",
    )
    (e,) = events(sign(notification({"eventType": "Open", "mail": MAIL, "open": {}})))
    assert e.kind == "opened"
    for ignored in ({"eventType": "Send", "mail": MAIL}, {"eventType": "Reject", "mail": MAIL}):
        assert events(sign(notification(ignored))) == []
    not_spam = copy.deepcopy(complaint)
    not_spam["complaint"]["complaintFeedbackType"] = "not-spam"
    assert events(sign(notification(not_spam))) == []


def test_sns_test_messages_and_garbage_payloads_are_nothing() -> None:
    text = "Successfully validated SNS topic for Amazon SES event publishing."
    assert events(sign(notification(text))) == []
    assert events(sign(notification("[1, 2]"))) == []
    assert events(sign(notification({"eventType": "Bounce", "bounce": "x"}))) == []


def test_dedupe_keys_follow_the_sns_message_id() -> None:
    two = copy.deepcopy(BOUNCE)
    two["bounce"]["bouncedRecipients"].append({"emailAddress": "x@agency.example"})
    first = [e.dedupe_key for e in events(sign(notification(two)))]
    again = [e.dedupe_key for e in events(sign(notification(two)))]
    other = [e.dedupe_key for e in events(sign(notification(two, message_id="sns-9")))]
    assert first == again
    assert len(set(first)) == 2
    assert not set(first) & set(other)

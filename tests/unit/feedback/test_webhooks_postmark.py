"""feedback/postmark.py: basic-auth check and the record types."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest

from campaignd.feedback.webhooks import BadSignature, postmark_events

AUTH = "postmark:s3cret-hook"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def basic(credentials: str = AUTH) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


BOUNCE = {
    "RecordType": "Bounce",
    "ID": 4323372036854775807,
    "Type": "HardBounce",
    "TypeCode": 1,
    "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
    "Description": "The server was unable to deliver your message (ex: unknown user).",
    "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
    "Email": "jdoe@agency.example",
    "BouncedAt": "2026-12-01T11:58:02.9070259Z",
    "Headers": [{"Name": "Message-ID", "Value": "<campaignd.4711.c@mail.acme.example>"}],
}


def events(payload: dict[str, Any], auth: str | None = None) -> Any:
    return postmark_events(payload, auth or basic(), basic_auth=AUTH, now=NOW)


def test_hard_bounce() -> None:
    (e,) = events(BOUNCE)
    assert (e.kind, e.recipient, e.status, e.permanent) == (
        "bounced",
        "jdoe@agency.example",
        "5.1.1",
        True,
    )
    assert e.message_id == "campaignd.4711.c@mail.acme.example"
    assert e.at == datetime(2026, 12, 1, 11, 58, 2, 907025, tzinfo=UTC)
    assert e.detail.startswith("HardBounce:")
    assert e.source == "postmark"


@pytest.mark.parametrize(
    ("record", "kind"),
    [
        ({**BOUNCE, "Type": "SoftBounce", "Details": "452 4.2.2 mailbox full"}, "deferred_bounce"),
        ({**BOUNCE, "Type": "Blocked"}, "bounced"),
        ({**BOUNCE, "Type": "AutoResponder"}, "auto_reply"),
        ({**BOUNCE, "Type": "SpamComplaint"}, "complained"),
        ({**BOUNCE, "Type": "Unsubscribe"}, "unsubscribed"),
        ({"RecordType": "SpamComplaint", "ID": 1, "Email": "a@x.example"}, "complained"),
        ({"RecordType": "Delivery", "Recipient": "a@x.example", "MessageID": "m",
          "DeliveredAt": "2026-12-01T11:00:00Z"}, "delivered"),
        ({"RecordType": "Open", "Recipient": "a@x.example", "MessageID": "m",
          "ReceivedAt": "2026-12-01T11:00:00Z"}, "opened"),
        ({"RecordType": "Click", "Recipient": "a@x.example", "MessageID": "m",
          "OriginalLink": "https://acme.example/x", "ReceivedAt": "2026-12-01T11:00:00Z"},
         "clicked"),
        ({"RecordType": "SubscriptionChange", "Recipient": "a@x.example", "MessageID": "m",
          "SuppressSending": True, "SuppressionReason": "ManualSuppression",
          "ChangedAt": "2026-12-01T11:00:00Z"}, "unsubscribed"),
    ],
)  # fmt: skip
def test_record_types(record: dict[str, Any], kind: str) -> None:
    (e,) = events(record)
    assert e.kind == kind
    assert e.recipient in ("jdoe@agency.example", "a@x.example")
    assert e.permanent == (kind == "bounced")


@pytest.mark.parametrize(
    "record",
    [
        {**BOUNCE, "Type": "ManuallyDeactivated"},
        {"RecordType": "SubscriptionChange", "Recipient": "a@x.example",
         "SuppressSending": True, "SuppressionReason": "HardBounce"},
        {"RecordType": "SubscriptionChange", "Recipient": "a@x.example",
         "SuppressSending": False, "SuppressionReason": "ManualSuppression"},
        {"RecordType": "Inbound"},
    ],
)  # fmt: skip
def test_records_that_change_nothing(record: dict[str, Any]) -> None:
    assert events(record) == []


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "",
        "Bearer " + base64.b64encode(AUTH.encode()).decode(),
        basic("postmark:wrong"),
        basic("postmark:s3cret-hook "),
        basic("postmark"),
        "Basic !!!",
    ],
)
def test_wrong_credentials_are_refused(auth: str | None) -> None:
    with pytest.raises(BadSignature):
        postmark_events(BOUNCE, auth, basic_auth=AUTH, now=NOW)


def test_scheme_is_case_insensitive_and_keys_are_stable() -> None:
    lower = "basic " + basic()[len("Basic ") :]
    assert events(BOUNCE, lower)[0].dedupe_key == events(BOUNCE)[0].dedupe_key
    assert events({**BOUNCE, "ID": 2})[0].dedupe_key != events(BOUNCE)[0].dedupe_key

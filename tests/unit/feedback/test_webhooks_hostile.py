"""Webhook input from anyone: size and depth are refused before the JSON parser runs, header
and field values that are not ASCII never raise past BadSignature/BadPayload, and SendGrid's
signed timestamp is held to a window."""

from __future__ import annotations

import contextlib
import json
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaignd.feedback import esp
from campaignd.feedback.esp import MAX_JSON_DEPTH, json_too_deep, load_json
from campaignd.feedback.webhooks import (
    BadPayload,
    BadSignature,
    mailgun_events,
    sendgrid_events,
    ses_events,
)
from tests.unit.feedback import test_webhooks_mailgun as mg
from tests.unit.feedback import test_webhooks_sendgrid as sg
from tests.unit.feedback import test_webhooks_ses as ses


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_depth_bound_is_exact() -> None:
    assert load_json(nested(MAX_JSON_DEPTH)) is not None
    with pytest.raises(BadPayload, match="more than 64 levels deep"):
        load_json(nested(MAX_JSON_DEPTH + 1))
    assert load_json(b'{"a": [' + b"1," * 10_000 + b"1]}")["a"][-1] == 1


def test_brackets_in_strings_do_not_count() -> None:
    inside = json.dumps({"s": "[" * 5000 + '\\"{' * 100, "t": ["]" * 9]}).encode()
    assert load_json(inside)["s"].startswith("[[[")
    assert load_json(inside.decode())["t"] == ["]" * 9]


def test_hostile_bodies_are_refused_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("json.loads ran on a body that should have been refused")

    monkeypatch.setattr(esp.json, "loads", never)
    for body in (nested(1 << 20), b"[" * 2_000_000, b'{"a":' * 100_000):
        started = time.monotonic()
        with pytest.raises(BadPayload, match="levels deep"):
            load_json(body)
        assert time.monotonic() - started < 0.5
    with pytest.raises(BadPayload, match="more than the 8388608 accepted"):
        load_json(b" " * (8 << 20) + b"1")
    with pytest.raises(BadPayload, match="more than the 10 accepted"):
        load_json(b"[1,2,3,4,5]", max_bytes=10)


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    return 0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.sampled_from('[]{}"\\ab\u00e9')),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(st.sampled_from('[]{}"\\k'), max_size=3), children, max_size=3)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON, limit=st.integers(0, 8), ascii_only=st.booleans())
def test_the_depth_scan_agrees_with_the_parser(value: Any, limit: int, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    expected = depth_of(value) > limit
    assert json_too_deep(text, limit) is expected
    assert json_too_deep(text.encode(), limit) is expected


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=300) | st.text(max_size=300))
def test_load_json_raises_only_bad_payload(body: bytes | str) -> None:
    with contextlib.suppress(BadPayload):
        load_json(body)


# ---------------------------------------------------------------- SendGrid's timestamp


@pytest.mark.parametrize("skew", [timedelta(minutes=-9), timedelta(0), timedelta(minutes=9)])
def test_sendgrid_accepts_a_timestamp_inside_the_window(skew: timedelta) -> None:
    stamp = str(int((sg.NOW + skew).timestamp()))
    got = sendgrid_events(sg.BODY, sg.signed(sg.BODY, stamp), public_key=sg.PUBLIC_DER, now=sg.NOW)
    assert len(got) == 11


@pytest.mark.parametrize(
    "skew", [timedelta(minutes=-11), timedelta(minutes=11), timedelta(days=-365)]
)
def test_sendgrid_refuses_a_replayed_or_future_request(skew: timedelta) -> None:
    stamp = str(int((sg.NOW + skew).timestamp()))
    with pytest.raises(BadSignature, match="is stale"):
        sendgrid_events(sg.BODY, sg.signed(sg.BODY, stamp), public_key=sg.PUBLIC_DER, now=sg.NOW)


@pytest.mark.parametrize("stamp", ["١٧٩٦١٢٦٤٠٠", "17961264\udcff", "9" * 40, "-1796126400", " 1"])
def test_sendgrid_odd_timestamps_are_bad_signatures(stamp: str) -> None:
    headers = {**sg.signed(sg.BODY), sg.TS: stamp}
    with pytest.raises(BadSignature, match="not a Unix time"):
        sendgrid_events(sg.BODY, headers, public_key=sg.PUBLIC_DER, now=sg.NOW)


def test_sendgrid_a_signed_far_future_timestamp_is_refused_not_raised() -> None:
    stamp = "999999999999"  # year 33658: past what datetime holds
    with pytest.raises(BadSignature, match="not a time"):
        sendgrid_events(sg.BODY, sg.signed(sg.BODY, stamp), public_key=sg.PUBLIC_DER, now=sg.NOW)


def test_sendgrid_signature_header_with_surrogates() -> None:
    headers = {**sg.signed(sg.BODY), sg.SIG: "AAAA\udcff"}
    with pytest.raises(BadSignature, match="not base64"):
        sendgrid_events(sg.BODY, headers, public_key=sg.PUBLIC_DER, now=sg.NOW)


# ---------------------------------------------------------------- Mailgun and SES fields


@pytest.mark.parametrize(
    "change",
    [
        {"token": "tok\udcff"},
        {"token": "tök"},
        {"timestamp": "١٧٩٦١٢٦٤٠٠"},
        {"timestamp": "9" * 5000},
        {"signature": "\udcff"},
    ],
)
def test_mailgun_non_ascii_signature_fields_are_bad_signatures(change: dict[str, str]) -> None:
    payload = {"signature": {**mg.signature(), **change}, "event-data": dict(mg.FAILED)}
    with pytest.raises(BadSignature):
        mailgun_events(payload, signing_key=mg.SIGNING_KEY, now=mg.NOW)


def test_a_deep_mailgun_body_is_a_bad_payload_before_any_signature() -> None:
    body = b'{"signature": ' + nested(10_000) + b"}"
    with pytest.raises(BadPayload, match="levels deep"):
        load_json(body)  # what web/hooks.py does before mailgun_events


def test_ses_fields_with_lone_surrogates_are_bad_signatures() -> None:
    message = ses.sign(ses.notification({"eventType": "Open"}))
    message["Subject"] = "hi \udcff"
    with pytest.raises(BadSignature, match="not valid Unicode"):
        ses_events(message, ses.Fetcher(), topic_arn=ses.TOPIC, now=ses.NOW)

"""Throttling replies as real servers word them, and the `{limit, burst}` rate spelling."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaignd.config.model import Service
from campaignd.config.values import Rate, parse_rate, parse_rates
from campaignd.delivery.classify import classify
from campaignd.delivery.throttle import recognise

THROTTLING = [
    # Postfix (smtpd_client_message_rate_limit, recipient limits, anvil)
    ("postfix", 450, "4.7.1 Error: too much mail from 192.0.2.1", "4.7.1"),
    ("postfix", 452, "4.5.3 Error: too many recipients", "too many"),
    ("postfix", 421, "4.7.0 mx.example.net Error: too many connections from 192.0.2.1", "421"),
    # Exim ratelimit ACLs and connection limits
    ("exim", 451, "Ratelimit exceeded for 192.0.2.1: please try later", "rate"),
    ("exim", 421, "Too many concurrent SMTP connections; please try again later.", "421"),
    ("exim", 450, "sender rate overlimit - try again later", "rate"),
    # Gmail
    (
        "gmail",
        421,
        "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail "
        "originating from your IP address.",
        "421",
    ),
    (
        "gmail",
        450,
        "4.2.1 The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        "rate",
    ),
    ("gmail", 451, "4.7.28 Our system has detected an unusual rate of mail", "4.7.28"),
    # Microsoft (Outlook.com / Exchange Online)
    (
        "microsoft",
        451,
        "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77714)",
        "4.7.500",
    ),
    ("microsoft", 452, "4.5.3 Too many recipients (AS780090)", "too many"),
    ("microsoft", 450, "Requested action aborted; server busy, try again later", "server busy"),
    # Yahoo / AOL
    (
        "yahoo",
        421,
        "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume "
        "or user complaints - 4.16.55.1",
        "421",
    ),
    (
        "yahoo",
        451,
        "[TS01] Messages from 192.0.2.1 temporarily deferred - 4.16.55.1",
        "temporarily deferred",
    ),
    ("yahoo", 450, "Message temporarily deferred - [160]", "temporarily deferred"),
    # generic
    ("generic", 450, "4.4.2 Throttled: sending too fast", "throttl"),
    ("generic", 451, "you are being rate-limited", "rate"),
]

NOT_THROTTLING = [
    (
        "greylist",
        450,
        "4.2.0 <a@b.example>: Recipient address rejected: Greylisted, please try again later",
    ),
    ("greylist", 451, "4.7.1 Greylisting in action, please come back later"),
    ("mailbox full", 452, "4.2.2 Mailbox full"),
    ("dns", 451, "4.3.0 Temporary lookup failure"),
    ("local", 451, "4.3.0 Error: queue file write error"),
    ("generate", 450, "4.3.2 could not generate a queue id, separate issue"),
    ("permanent", 550, "5.7.1 too much mail, rate limited"),  # a 5xx fails, whatever it says
    ("accepted", 250, "2.0.0 Ok: queued"),
]


@pytest.mark.parametrize(("who", "code", "text", "why"), THROTTLING)
def test_throttling_replies(who: str, code: int, text: str, why: str) -> None:
    # Split the enhanced code off as the transport does (classify.parse_enhanced).
    reply = classify(code, text, stage="rcpt")
    found = recognise(reply.code, reply.enhanced, reply.text)
    assert found is not None, who
    assert found.why == why
    assert str(code) in str(found) and reply.text in str(found)


@pytest.mark.parametrize(("who", "code", "text"), NOT_THROTTLING)
def test_other_replies_are_not_throttling(who: str, code: int, text: str) -> None:
    reply = classify(code, text, stage="data")
    assert recognise(reply.code, reply.enhanced, reply.text) is None, who


def test_no_reply_is_not_throttling() -> None:
    assert recognise(None, None, "connection lost") is None


@given(st.integers(100, 699), st.text(max_size=200))
def test_recognise_never_raises_and_ignores_non_4xx(code: int, text: str) -> None:
    found = recognise(code, None, text)
    if not 400 <= code < 500:
        assert found is None
    elif code == 421:
        assert found is not None


# ---------------------------------------------------------------- burst spelling


def test_burst_is_parsed_and_written_back() -> None:
    r = parse_rate({"limit": "4/minute", "burst": 4})
    assert r == Rate(4, 60, 4) and r.interval == 15.0
    assert parse_rate(str(r)) == r  # "4/minute burst 4"
    assert parse_rate({"limit": "4/minute"}) == Rate(4, 60)
    assert parse_rates([{"limit": "14/s", "burst": 20}, "50000/day"]) == (
        Rate(14, 1, 20),
        Rate(50000, 86400),
    )
    svc = Service.model_validate(
        {"from": "a@acme.example", "rate": [{"limit": "4/minute", "burst": 4}, "100/day"]}
    )
    assert svc.model_dump(by_alias=True)["rate"] == [{"limit": "4/minute", "burst": 4}, "100/day"]
    assert Service.model_validate(svc.model_dump(by_alias=True)).rate == svc.rate


@pytest.mark.parametrize(
    "bad",
    [
        {"limit": "4/minute", "burst": 0},
        {"limit": "4/minute", "burst": "x"},
        {"limit": "4/minute", "burst": True},
        {"burst": 4},
        {"limit": "4/minute", "bust": 4},
        {"limit": "4/fortnight", "burst": 2},
    ],
)
def test_bad_bursts(bad: object) -> None:
    with pytest.raises(ValueError, match="rate"):
        parse_rate(bad)


def test_the_worker_slows_down_for_the_table_and_for_what_classify_flagged() -> None:
    from campaignd.delivery.classify import Reply
    from campaignd.delivery.worker import throttle_of

    too_much = classify(450, "4.7.1 Error: too much mail from 192.0.2.1", stage="mail")
    assert too_much.kind == "deferred"
    found = throttle_of(too_much)
    assert found is not None and found.why == "4.7.1"
    # classify's own throttle words count too, even where the table has none of them
    flagged = Reply("deferred", 451, None, "please slow it", slow_down=True)
    found = throttle_of(flagged)
    assert found is not None and found.why == "slow down"
    assert throttle_of(classify(452, "4.2.2 Mailbox full", stage="rcpt")) is None
    assert throttle_of(classify(550, "5.7.1 too much mail", stage="rcpt")) is None
    assert throttle_of(classify(250, "2.0.0 queued", stage="data")) is None

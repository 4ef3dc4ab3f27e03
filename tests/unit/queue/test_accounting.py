"""Exclusion keys never collide with an address key and are found by any spelling; the
reasons recorded for excluded rows read as the operator needs them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from campaignd.plan.audience_address import EmailNotValidError, parse_address
from campaignd.queue.accounting import (
    contact_reason,
    exclusion_key,
    exclusion_prefix,
    filter_reason,
    suppression_reason,
)
from campaignd.queue.rows import CampaignCounts, SuppressionRow


def test_keys_and_prefixes() -> None:
    assert exclusion_key("Ann@Example.com", "lists/a.csv:5") == "ann@example.com#lists/a.csv:5"
    assert exclusion_key("a#b@x.org", "l.txt:1") == "a%23b@x.org#l.txt:1"
    assert exclusion_key("50%@x", "l.txt:2") == "50%25@x#l.txt:2"
    assert exclusion_key("A#B@x.org", "l.txt:1").startswith(exclusion_prefix(" a#b@X.org "))
    assert not exclusion_key("ann@example.com.evil", "l:1").startswith(
        exclusion_prefix("ann@example.com")
    )


@given(text=st.text(max_size=40), line=st.integers(1, 10**6))
def test_an_exclusion_key_is_never_an_address_key(text: str, line: int) -> None:
    key = exclusion_key(text, f"lists/a.csv:{line}")
    assert key.startswith(exclusion_prefix(text))
    try:
        parsed = parse_address(key)
    except EmailNotValidError:
        return
    raise AssertionError(f"{key!r} parses as the address {parsed!r}")


def test_reasons() -> None:
    row = SuppressionRow("g@x.org", "hard bounce: 550 5.1.1", "sink", "spring", 1_800_000_000.0)
    assert suppression_reason(row) == (
        "suppressed: hard bounce: 550 5.1.1 (source sink, campaign spring, "
        "since 2027-01-15T08:00:00+00:00)"
    )
    assert suppression_reason(None).startswith("suppressed: on the suppression list")
    assert filter_reason("exclude_domains") == (
        "filtered by exclude_domains: the domain is in exclude_domains"
    )
    assert filter_reason("match.industry") == (
        "filtered by match.industry: the industry column does not match"
    )
    assert contact_reason("exclude_campaigns", ("spring", 1_800_000_000.0)) == (
        "filtered by exclude_campaigns: received campaign spring at 2027-01-15T08:00:00+00:00"
    )
    assert contact_reason("exclude_contacted_within", None) == (
        "filtered by exclude_contacted_within"
    )


def test_the_audience_block_from_step_one_groups() -> None:
    block = CampaignCounts.audience_of(
        [(None, 5), ("invalid", 2), ("duplicate", 1), ("filtered", 3), ("suppressed", 4)]
    )
    assert block == {
        "rows": 15, "invalid": 2, "duplicates": 1, "filtered": 3, "suppressed": 4, "enrolled": 5,
    }  # fmt: skip

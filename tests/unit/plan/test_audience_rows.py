"""Audience.rows(): every data row comes out exactly once, accepted or excluded with why, in
file order — what enrollment records so that no row of a list goes unaccounted."""

from __future__ import annotations

import tempfile
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from campaignd.config.model import Campaign
from campaignd.plan.audience import (
    Excluded,
    MemoryHistory,
    MemorySuppressions,
    Recipient,
    build_audience,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def campaign(**filters: object) -> Campaign:
    return Campaign.model_validate(
        {
            "kind": "transactional",
            "audience": ["lists/a.csv", "lists/b.txt"],
            "services": ["sink"],
            "template": "t",
            "filters": filters,
        }
    )


def build(root: Path, a: str, b: str, **filters: object) -> list[Recipient | Excluded]:
    (root / "lists").mkdir(exist_ok=True)
    (root / "lists/a.csv").write_text(a, encoding="utf-8")
    (root / "lists/b.txt").write_text(b, encoding="utf-8")
    history = MemoryHistory(
        [
            ("old@example.com", "other", NOW - timedelta(days=2)),
            ("got@example.com", "spring", NOW - timedelta(days=200)),
        ]
    )
    aud = build_audience(
        campaign(**filters),
        root,
        history=history,
        suppressions=MemorySuppressions(["gone@example.com"]),
        now=NOW,
    )
    rows = list(aud.rows())
    report = aud.report
    kinds = Counter(r.kind if isinstance(r, Excluded) else "accepted" for r in rows)
    # each row once, and the counts are the report's
    assert len(rows) == report.rows
    assert kinds["accepted"] == report.accepted
    assert kinds["invalid"] == report.invalid
    assert kinds["duplicate"] == report.duplicates
    assert kinds["filtered"] == report.filtered
    assert kinds["suppressed"] == report.suppressed
    return rows


def test_each_kind_of_exclusion_says_why(tmp_path: Path) -> None:
    rows = build(
        tmp_path,
        "email,industry\nann@example.com,retail\nnope,retail\ngone@example.com,retail\n"
        "ANN@example.com,retail\neve@spam.example,retail\nold@example.com,retail\n"
        "got@example.com,retail\nmia@example.com,mining\n",
        "zed@example.com\n",
        exclude_domains=["spam.example"],
        exclude_contacted_within="30d",
        exclude_campaigns=["spring"],
        match={"industry": ["retail"]},
    )
    got = [
        (r.source, "accepted", r.key) if isinstance(r, Recipient) else (r.source, r.kind, r.reason)
        for r in rows
    ]
    assert got[0] == ("lists/a.csv:2", "accepted", "ann@example.com")
    assert got[1][:2] == ("lists/a.csv:3", "invalid") and "@" in got[1][2]
    assert got[2:] == [
        ("lists/a.csv:4", "suppressed", "suppressed"),
        ("lists/a.csv:5", "duplicate", "duplicate"),
        ("lists/a.csv:6", "filtered", "exclude_domains"),
        ("lists/a.csv:7", "filtered", "exclude_contacted_within"),
        ("lists/a.csv:8", "filtered", "exclude_campaigns"),
        ("lists/a.csv:9", "filtered", "match.industry"),
        ("lists/b.txt:1", "filtered", "match.industry"),  # a text list has no such column
    ]
    by_source = {r.source: r for r in rows}
    dup = by_source["lists/a.csv:5"]
    assert isinstance(dup, Excluded) and (dup.key, dup.address) == (
        "ann@example.com",
        "ANN@example.com",
    )
    kept = by_source["lists/a.csv:6"]
    assert isinstance(kept, Excluded) and kept.recipient is not None
    assert kept.recipient.fields["industry"] == "retail"  # the row as it would have enrolled


def test_iterating_plainly_yields_only_recipients(tmp_path: Path) -> None:
    build(tmp_path, "email\nann@example.com\nnope\n", "")
    aud = build_audience(
        campaign(), tmp_path, history=MemoryHistory(), suppressions=MemorySuppressions(), now=NOW
    )
    assert [r.key for r in aud] == ["ann@example.com"]
    assert aud.report.invalid == 1


ADDRESSES = st.sampled_from(
    [
        "ann@example.com",
        "Ann@Example.com",
        "gone@example.com",
        "old@example.com",
        "got@example.com",
        "eve@spam.example",
        "x@sub.spam.example",
        "nope",
        "a@@b",
        "",
        "bob@example.org",
        "# comment",
    ]
)


@settings(max_examples=60, deadline=None)
@given(a=st.lists(ADDRESSES, max_size=30), b=st.lists(ADDRESSES, max_size=30))
def test_every_row_is_accounted_exactly_once(a: list[str], b: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rows = build(
            Path(tmp),
            "email\n" + "".join(f"{x}\n" for x in a),
            "".join(f"{x}\n" for x in b),
            exclude_domains=["spam.example"],
            exclude_contacted_within="30d",
            exclude_campaigns=["spring"],
        )
    sources = [r.source for r in rows]
    assert len(sources) == len(set(sources))  # no row twice
    accepted = [r.key for r in rows if isinstance(r, Recipient)]
    assert len(accepted) == len(set(accepted))
    keyed = [r.key for r in rows if isinstance(r, Excluded) and r.kind != "duplicate" and r.key]
    assert not set(keyed) & set(accepted)  # a key is enrolled or excluded, once

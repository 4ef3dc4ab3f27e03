"""build_audience: streaming, dedupe across files, every filter, suppressions, the report."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from campaignd.config.model import Campaign
from campaignd.errors import AudienceError
from campaignd.plan.audience import (
    BATCH,
    SAMPLES,
    Audience,
    MemoryHistory,
    MemorySuppressions,
    NoHistory,
    NoSuppressions,
    Recipient,
    build_audience,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def campaign(audience: list[str], **filters: Any) -> Campaign:
    return Campaign.model_validate(
        {
            "kind": "transactional",
            "audience": audience,
            "services": ["sink"],
            "template": "t",
            "filters": filters,
        }
    )


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="")
    return root


def audience(
    root: Path,
    c: Campaign,
    *,
    history: Any = None,
    suppressions: Any = None,
    required: tuple[str, ...] = (),
) -> Audience:
    return build_audience(
        c,
        root,
        history=history or NoHistory(),
        suppressions=suppressions or NoSuppressions(),
        now=NOW,
        required_fields=required,
    )


def emails(a: Audience) -> list[str]:
    return [r.email for r in a]


PEOPLE = """\
email,first_name,company,industry,timezone
ann@example.com,Ann,Northwind,Studio,Europe/Berlin
bob@sub.example.org,Bob,,agency,Mars/Olympus
user@bücher.example,Uwe,Bücher,retail,
carl@competitor.example,Carl,Rival,agency,UTC
dora@eu.competitor.example,Dora,Rival EU,AGENCY,UTC
"""


def test_recipients_carry_every_form_and_field(tmp_path: Path) -> None:
    root = write(tmp_path, {"lists/people.csv": PEOPLE})
    a = audience(root, campaign(["lists/people.csv"]))
    got = list(a)
    assert got[0] == Recipient(
        key="ann@example.com",
        email="ann@example.com",
        smtp_address="ann@example.com",
        domain="example.com",
        fields={
            "email": "ann@example.com",
            "first_name": "Ann",
            "company": "Northwind",
            "industry": "Studio",
            "timezone": "Europe/Berlin",
        },
        source="lists/people.csv:2",
        timezone="Europe/Berlin",
    )
    idn = got[2]
    assert (idn.email, idn.smtp_address, idn.domain, idn.source) == (
        "user@bücher.example",
        "user@xn--bcher-kva.example",
        "bücher.example",
        "lists/people.csv:4",
    )
    assert got[1].timezone is None and idn.timezone is None
    r = a.report
    assert (r.rows, r.accepted, r.invalid, r.duplicates, r.filtered, r.suppressed) == (
        5, 5, 0, 0, 0, 0,
    )  # fmt: skip
    assert r.invalid_timezones == 1  # Mars/Olympus; the empty one is not counted
    assert r.columns == ["email", "first_name", "company", "industry", "timezone"]
    assert r.complete


def test_duplicates_across_files_first_wins_with_both_places(tmp_path: Path) -> None:
    root = write(
        tmp_path,
        {
            "lists/a.csv": "Email;Name\nAnn@Example.com;Ann\nbob@example.com;Bob\n",
            "lists/b.txt": "# more\nbob@example.com\nANN@example.COM\nzoe@example.com\n",
        },
    )
    a = audience(root, campaign(["lists/a.csv", "lists/b.txt"]))
    got = list(a)
    assert [r.email for r in got] == ["Ann@example.com", "bob@example.com", "zoe@example.com"]
    assert got[0].fields == {"Email": "Ann@Example.com", "Name": "Ann", "email": "Ann@example.com"}
    assert got[2].fields == {"email": "zoe@example.com"} and got[2].source == "lists/b.txt:4"
    r = a.report
    assert (r.rows, r.accepted, r.duplicates) == (5, 3, 2)
    assert [(d.source, d.first) for d in r.duplicate_rows] == [
        ("lists/b.txt:2", "lists/a.csv:3"),
        ("lists/b.txt:3", "lists/a.csv:2"),
    ]
    assert str(r.duplicate_rows[1]) == "lists/b.txt:3: ANN@example.COM duplicates lists/a.csv:2"
    assert r.columns == ["Email", "Name", "email"]


def test_invalid_rows_are_counted_and_sampled_with_the_reason(tmp_path: Path) -> None:
    bad = "".join(f"broken{i}.example.com\n" for i in range(SAMPLES + 20))
    root = write(
        tmp_path, {"lists/l.csv": f"email,name\nann@example.com,Ann\n,NoMail\n{bad}x@y,z\n"}
    )
    a = audience(root, campaign(["lists/l.csv"]))
    assert emails(a) == ["ann@example.com"]
    r = a.report
    assert r.invalid == SAMPLES + 22 and len(r.invalid_rows) == SAMPLES
    first, second = r.invalid_rows[:2]
    assert (first.source, first.address) == ("lists/l.csv:3", "")
    assert "no address" in first.reason
    assert (second.source, second.address) == ("lists/l.csv:4", "broken0.example.com")
    assert second.reason == "An email address must have an @-sign."
    assert (
        str(second) == "lists/l.csv:4: 'broken0.example.com': An email address must have an @-sign."
    )


def test_domain_filters_cover_subdomains_and_idn_spellings(tmp_path: Path) -> None:
    root = write(tmp_path, {"lists/p.csv": PEOPLE})
    a = audience(
        root,
        campaign(
            ["lists/p.csv"],
            include_domains=["example.org", "@xn--bcher-kva.example", "competitor.example"],
            exclude_domains=["eu.competitor.example"],
        ),
    )
    assert emails(a) == ["bob@sub.example.org", "user@bücher.example", "carl@competitor.example"]
    assert a.report.filtered_by == {"include_domains": 1, "exclude_domains": 1}
    assert a.report.filtered == 2

    b = audience(
        root, campaign(["lists/p.csv"], exclude_domains=["Competitor.Example", "BÜCHER.example"])
    )
    assert emails(b) == ["ann@example.com", "bob@sub.example.org"]
    assert b.report.filtered_by == {"exclude_domains": 3}


def test_match_is_case_insensitive_and_needs_the_column(tmp_path: Path) -> None:
    root = write(tmp_path, {"lists/p.csv": PEOPLE, "lists/t.txt": "tom@example.com\n"})
    a = audience(
        root, campaign(["lists/p.csv", "lists/t.txt"], match={"Industry": ["agency", "studio"]})
    )
    assert emails(a) == [
        "ann@example.com",
        "bob@sub.example.org",
        "carl@competitor.example",
        "dora@eu.competitor.example",
    ]
    # the text list has no industry column, so tom does not match
    assert a.report.filtered_by == {"match.Industry": 2}

    two = audience(
        root, campaign(["lists/p.csv"], match={"industry": ["agency"], "company": ["rival"]})
    )
    assert emails(two) == ["carl@competitor.example"]
    assert two.report.filtered_by == {"match.industry": 2, "match.company": 2}


def test_suppressions_and_history_rules_in_order(tmp_path: Path) -> None:
    root = write(tmp_path, {"lists/p.csv": PEOPLE})
    history = MemoryHistory(
        [
            ("ann@example.com", "newsletter", NOW - timedelta(days=3)),  # recent: excluded
            ("bob@sub.example.org", "newsletter", NOW - timedelta(days=40)),  # too long ago
            ("carl@competitor.example", "q3-outreach", NOW - timedelta(days=90)),
            ("user@bücher.example", "q3-outreach", NOW - timedelta(days=1)),  # suppressed first
        ]
    )
    suppressions = MemorySuppressions(["user@bücher.example"])
    a = audience(
        root,
        campaign(
            ["lists/p.csv"], exclude_contacted_within="30d", exclude_campaigns=["q3-outreach"]
        ),
        history=history,
        suppressions=suppressions,
    )
    assert emails(a) == ["bob@sub.example.org", "dora@eu.competitor.example"]
    r = a.report
    assert (r.accepted, r.suppressed, r.filtered) == (2, 1, 2)
    assert r.filtered_by == {"exclude_contacted_within": 1, "exclude_campaigns": 1}
    assert r.rows == r.accepted + r.invalid + r.duplicates + r.filtered + r.suppressed
    # the suppressed key is not asked about again; the history rules see only what is left
    assert suppressions.calls == [5] and history.calls == [4, 3]


def test_history_and_suppressions_are_asked_in_batches(tmp_path: Path) -> None:
    n = 2 * BATCH + 500
    rows = "".join(f"p{i}@example.com\n" for i in range(n))
    root = write(tmp_path, {"lists/many.txt": rows})
    history = MemoryHistory([("p7@example.com", "old", NOW)])
    suppressions = MemorySuppressions([f"p{i}@example.com" for i in range(0, n, 10)])
    a = audience(
        root,
        campaign(["lists/many.txt"], exclude_campaigns=["old"]),
        history=history,
        suppressions=suppressions,
    )
    assert sum(1 for _ in a) == n - n // 10 - 1
    assert suppressions.calls == [BATCH, BATCH, 500]
    assert history.calls == [900, 900, 450]


def test_iteration_streams_before_the_end_of_the_file(tmp_path: Path) -> None:
    n = 5 * BATCH
    root = write(tmp_path, {"lists/big.txt": "".join(f"p{i}@example.com\n" for i in range(n))})
    a = audience(root, campaign(["lists/big.txt"]))
    it = iter(a)
    assert next(it).email == "p0@example.com"
    assert a.report.rows <= BATCH + 1 and not a.report.complete
    assert sum(1 for _ in it) == n - 1
    assert a.report.complete and a.report.accepted == n


def test_missing_fields_counts_only_accepted_recipients(tmp_path: Path) -> None:
    root = write(tmp_path, {"lists/p.csv": PEOPLE, "lists/t.txt": "tom@example.com\n"})
    a = audience(
        root,
        campaign(["lists/p.csv", "lists/t.txt"], exclude_domains=["competitor.example"]),
        required=("company", "first_name", "email", "plan"),
    )
    list(a)
    # bob has an empty company, tom (text list) has no columns at all
    assert a.report.missing_fields == {"company": 2, "email": 0, "first_name": 1, "plan": 4}


def test_a_broken_later_file_fails_before_any_recipient(tmp_path: Path) -> None:
    root = write(
        tmp_path, {"lists/ok.csv": PEOPLE, "lists/bad.csv": b"email\nann@example.com\n\x80\n"}
    )
    it = iter(audience(root, campaign(["lists/ok.csv", "lists/bad.csv"])))
    with pytest.raises(AudienceError, match=r"^lists/bad\.csv:3: byte 0x80 at byte offset 22 "):
        next(it)
    with pytest.raises(AudienceError, match=r"^lists/gone\.txt: audience file not found"):
        list(audience(root, campaign(["lists/ok.csv", "lists/gone.txt"])))


def test_absolute_paths_and_a_second_iteration(tmp_path: Path) -> None:
    lists = write(tmp_path / "elsewhere", {"p.csv": PEOPLE})
    a = audience(tmp_path / "root", campaign([str(lists / "p.csv")]))
    first = emails(a)
    report = a.report
    assert emails(a) == first and len(first) == 5
    assert a.report is not report and a.report.accepted == report.accepted == 5


# ----------------------------------------------------------------- property

ADDRESSES = ["a@x.example", "A@X.EXAMPLE", "b@y.example", "bad", "", "c@bücher.example", "d@x"]
CELL = st.one_of(
    st.sampled_from(ADDRESSES),
    st.text(st.sampled_from(string.ascii_letters[:6] + '@.,;"\n\r #é\x00\t'), max_size=12),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.sampled_from(["email,industry", "EMAIL;industry", "industry\temail", "#x", ""]),
    rows=st.lists(st.lists(CELL, min_size=1, max_size=3), max_size=25),
    delimiter=st.sampled_from([",", ";", "\t"]),
    suffix=st.sampled_from([".csv", ".txt"]),
    junk=st.one_of(st.just(b""), st.binary(max_size=3)),
    filters=st.fixed_dictionaries(
        {},
        optional={
            "exclude_domains": st.just(["y.example"]),
            "match": st.just({"industry": ["a", "b"]}),
            "exclude_contacted_within": st.just("7d"),
            "exclude_campaigns": st.just(["old"]),
        },
    ),
)
def test_any_file_gives_consistent_counts_or_an_audience_error(
    tmp_path_factory: pytest.TempPathFactory,
    header: str,
    rows: list[list[str]],
    delimiter: str,
    suffix: str,
    junk: bytes,
    filters: dict[str, Any],
) -> None:
    root = tmp_path_factory.mktemp("prop")
    body = "\n".join([header, *(delimiter.join(r) for r in rows)]).encode() + junk
    write(root, {f"lists/l{suffix}": body, "lists/extra.txt": "A@x.example\nnew@z.example\n"})
    history = MemoryHistory([("b@y.example", "old", NOW), ("new@z.example", "x", NOW)])
    a = audience(
        root,
        campaign([f"lists/l{suffix}", "lists/extra.txt"], **filters),
        history=history,
        suppressions=MemorySuppressions(["c@bücher.example"]),
    )
    try:
        got = list(a)
    except AudienceError as exc:
        kind = next(k for k in ("UTF-8", "no email column", "as CSV") if k in str(exc))
        event(f"AudienceError: {kind}")
        return
    r = a.report
    event(f"read: {min(r.accepted, 3)}+ accepted, duplicates: {r.duplicates > 0}")
    assert r.complete
    assert r.accepted == len(got) == len({g.key for g in got})
    assert r.rows == r.accepted + r.invalid + r.duplicates + r.filtered + r.suppressed
    assert r.filtered == sum(r.filtered_by.values())
    assert "c@bücher.example" not in {g.key for g in got}

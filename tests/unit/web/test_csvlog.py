"""web/csvlog.py: the column contract, spreadsheet-formula neutralisation, and page-by-page
streaming that never holds more than one page."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from campaignd.queue.rows import MessageRow
from campaignd.web.csvlog import COLUMNS, csv_lines, neutralise, row_cells, stream_rows

ROW = MessageRow(
    id=7, campaign_id="launch", edition=0, step=1, recipient="ann@example.com",
    email="Ann@Example.com", template="intro-a", status="failed", attempts=2, service="ses",
    message_id="<m1@acme.example>", last_error="550 5.1.1 <ann@example.com>: user unknown",
    last_code=550, last_enhanced="5.1.1", next_attempt_at=None, claimed_by=None,
    claimed_until=None, created_at=1_780_000_000.0, updated_at=1_780_000_060.5,
    first_attempt_at=1_780_000_001.0, sent_at=None, opened_at=None, clicked_at=None,
    replied_at=None, unsubscribed_at=None, complained_at=None, bounced_at=None,
)  # fmt: skip


def parse(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def test_one_row_per_message_with_the_documented_columns() -> None:
    ((header,), (row,)) = parse(csv_lines([list(COLUMNS)])), parse(csv_lines([row_cells(ROW)]))
    assert header[:10] == [
        "id", "recipient", "email", "edition", "step", "template", "service", "status",
        "attempts", "last_error",
    ]  # fmt: skip
    cells = dict(zip(header, row, strict=True))
    assert cells["id"] == "7" and cells["attempts"] == "2" and cells["step"] == "1"
    assert cells["last_error"] == "550 5.1.1 <ann@example.com>: user unknown"
    assert (cells["last_code"], cells["last_enhanced"]) == ("550", "5.1.1")
    assert cells["created_at"] == "2026-05-28T20:26:40+00:00"
    assert cells["updated_at"] == "2026-05-28T20:27:40.500000+00:00"
    assert cells["sent_at"] == "" and cells["opened_at"] == ""
    assert "claimed_by" not in cells  # internal lease bookkeeping is not an operator's column


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('=HYPERLINK("http://evil.example","x")', '\'=HYPERLINK("http://evil.example","x")'),
        ("+1-555-0100", "'+1-555-0100"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("550 5.1.1 user unknown", "550 5.1.1 user unknown"),
        ("ann@example.com", "ann@example.com"),
        ("", ""),
    ],
)
def test_formula_cells_are_neutralised(value: str, shown: str) -> None:
    assert neutralise(value) == shown
    row = replace(ROW, last_error=value, recipient=value or "x")
    cells = dict(zip(COLUMNS, parse(csv_lines([row_cells(row)]))[0], strict=True))
    assert cells["last_error"] == shown


@given(st.text(max_size=50))
def test_no_cell_can_start_a_formula(value: str) -> None:
    row = replace(ROW, last_error=value, template=value, email=value)
    for cell in row_cells(row):
        if isinstance(cell, str) and cell:
            assert cell[0] not in "=+-@\t\r"


def test_quotes_commas_and_newlines_round_trip() -> None:
    text = 'line one,\n"quoted" two'
    row = replace(ROW, last_error=text)
    cells = dict(zip(COLUMNS, parse(csv_lines([row_cells(row)]))[0], strict=True))
    assert cells["last_error"] == text


async def test_streams_page_by_page_and_stops_on_a_short_page() -> None:
    total = 2500
    calls: list[tuple[int | None, int]] = []

    async def page(after: int | None, limit: int) -> Sequence[MessageRow]:
        calls.append((after, limit))
        start = (after or 0) + 1
        return [replace(ROW, id=i) for i in range(start, min(start + limit, total + 1))]

    chunks = [c async for c in stream_rows(page, batch=1000)]
    assert calls == [(None, 1000), (1000, 1000), (2000, 1000)]  # keyset: after = last id
    assert len(chunks) == 4  # header + one chunk per page: at most one page is ever held
    rows = parse("".join(chunks))
    assert rows[0] == list(COLUMNS)
    assert [int(r[0]) for r in rows[1:]] == list(range(1, total + 1))


async def test_an_exact_multiple_asks_once_more_and_an_empty_log_is_a_header() -> None:
    async def page(after: int | None, limit: int) -> Sequence[MessageRow]:
        start = (after or 0) + 1
        return [replace(ROW, id=i) for i in range(start, min(start + limit, 3))]

    assert len(parse("".join([c async for c in stream_rows(page, batch=2)]))) == 3

    async def empty(after: int | None, limit: int) -> Sequence[MessageRow]:
        return []

    assert parse("".join([c async for c in stream_rows(empty)])) == [list(COLUMNS)]

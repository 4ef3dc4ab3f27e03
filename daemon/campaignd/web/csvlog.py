"""The message log as CSV (``GET /api/campaigns/{id}/log.csv``): one row per message.

Pure row building lives apart from the streaming (``stream_rows``), so the column contract and
the formula neutralisation are tested without a server. Rows are produced page by page with
keyset pagination, each page its own short read: memory stays constant however many messages
a campaign has, and no database snapshot is held while a slow client downloads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

from ..queue.rows import MessageRow, iso

__all__ = ["COLUMNS", "csv_lines", "header", "neutralise", "row_cells", "stream_rows"]

COLUMNS: Final = (
    "id",
    "recipient",
    "email",
    "edition",
    "step",
    "template",
    "service",
    "status",
    "attempts",
    "last_error",
    "last_code",
    "last_enhanced",
    "message_id",
    "created_at",
    "first_attempt_at",
    "sent_at",
    "next_attempt_at",
    "updated_at",
    "opened_at",
    "clicked_at",
    "replied_at",
    "unsubscribed_at",
    "complained_at",
    "bounced_at",
    "excluded",
    "source",
)
"""The header row; times are ISO-8601 UTC, empty when not reached. ``excluded`` says why
enrollment did not enroll the row (invalid, duplicate, filtered, suppressed; ``last_error``
has the detail), ``source`` is the list row (``lists/a.csv:12``)."""

# Spreadsheets run a cell that starts with one of these as a formula (CSV injection, OWASP):
# "=HYPERLINK(…)" in a bounce text or a list's name column must stay text. A leading
# apostrophe is what Excel, LibreOffice and Google Sheets all read as "this is text".
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def neutralise(value: str) -> str:
    """``value`` made inert for spreadsheets; other text unchanged."""
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value


def _cell(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return value  # our own counters: never a formula, and a sheet should see numbers
    return neutralise(str(value))


def row_cells(row: MessageRow) -> list[str | int]:
    """One message as CSV cells in ``COLUMNS`` order."""
    cells: list[str | int] = []
    for name in COLUMNS:
        value = getattr(row, name)
        cells.append(_cell(iso(value) if name.endswith("_at") else value))
    return cells


def header() -> list[str]:
    return list(COLUMNS)


def csv_lines(rows: Iterable[Sequence[str | int]]) -> str:
    """CSV text (RFC 4180: CRLF line ends, quotes doubled) for these rows."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows(rows)
    return buf.getvalue()


Page = Callable[[int | None, int], Awaitable[Sequence[MessageRow]]]
"""(after id, limit) → the next messages in id order."""


async def stream_rows(page: Page, *, batch: int = 1000) -> AsyncIterator[str]:
    """The CSV text in chunks of ``batch`` rows, header first."""
    yield csv_lines([header()])
    after: int | None = None
    while True:
        rows = await page(after, batch)
        if rows:
            yield csv_lines(row_cells(r) for r in rows)
        if len(rows) < batch:
            return
        after = rows[-1].id

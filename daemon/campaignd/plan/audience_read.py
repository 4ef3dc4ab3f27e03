"""Audience files, streamed: CSV with an email column, or a text list of one address a line.

``open_list`` checks a whole file before any row of it is used — it exists, it is UTF-8 (a
chunked pre-pass that can name the byte offset of a bad byte), it has an email column if it is a
CSV — so a broken file never yields part of its recipients. ``read_rows`` then streams the rows
through the csv module; memory stays constant per row whatever the file size.

Choices:
- Kind: a first line naming an email column (``email``, ``receiver_email`` or ``e-mail``, any
  case) makes a CSV whatever the extension; a ``.csv``/``.tsv`` file without one is an error;
  anything else is a text list (blank lines and lines starting with ``#`` skipped).
- CSV delimiter: ``,``, ``;`` or tab, whichever splits the header line into an email column and
  the most columns. Column names keep their case (templates name them as written) with
  surrounding whitespace stripped; values are stripped too. A record whose cells are all empty
  (``;;;`` from a spreadsheet) is skipped like a blank line.
- Rows are named by the line where the record starts (``lists/a.csv:12``), so an operator can
  open the file at that line even when quoted fields span lines.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, NoReturn, TextIO

from ..errors import AudienceError

EMAIL_COLUMNS = ("email", "receiver_email", "e-mail")
"""Header names of the address column, in order of preference, compared case-insensitively."""
CSV_SUFFIXES = frozenset({".csv", ".tsv"})
DELIMITERS = (",", ";", "\t")
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ListFile:
    name: str
    """The path as the campaign writes it (``lists/a.csv``): used in every message."""
    path: Path
    kind: Literal["csv", "text"]
    columns: tuple[str, ...] = ("email",)
    email_column: int = 0
    delimiter: str = ","


Row = tuple[int, str, dict[str, str]]
"""(line the record starts on, the address as written, every column by header name). Plain
tuples: a million NamedTuple constructions cost a second."""


def open_list(name: str, path: Path) -> ListFile:
    """Check the file as a whole and find its kind, columns and delimiter."""
    check_utf8(name, path)
    with _open_text(name, path) as f:
        first = next((line for line in f if line.strip()), None)
    if first is None:
        kind: Literal["csv", "text"] = "csv" if path.suffix.lower() in CSV_SUFFIXES else "text"
        return ListFile(name, path, kind)
    found = _header(first)
    if found is not None:
        columns, email_column, delimiter = found
        return ListFile(name, path, "csv", columns, email_column, delimiter)
    if path.suffix.lower() in CSV_SUFFIXES:
        raise AudienceError(
            f"{name}: no email column in the header line {first.strip()[:120]!r} — the first "
            "line must name the columns and one must be email (or receiver_email, e-mail); "
            "for a plain list of addresses use a .txt file"
        )
    return ListFile(name, path, "text")


def read_rows(lf: ListFile) -> Iterator[Row]:
    """The data rows of a file checked by ``open_list``, in file order."""
    with _open_text(lf.name, lf.path) as f:
        try:
            yield from (_text_rows(f) if lf.kind == "text" else _csv_rows(lf, f))
        except UnicodeDecodeError:
            # The file changed after open_list checked it: name the bad byte all the same.
            check_utf8(lf.name, lf.path)
            raise


def _text_rows(f: TextIO) -> Iterator[Row]:
    for number, line in enumerate(f, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield number, text, {}


def _csv_rows(lf: ListFile, f: TextIO) -> Iterator[Row]:
    header_line = 1
    while (line := f.readline()) and not line.strip():
        header_line += 1
    reader = csv.reader(f, delimiter=lf.delimiter)
    columns, email_column = lf.columns, lf.email_column
    consumed = header_line  # lines read before the current record
    strip = str.strip
    try:
        for cells in reader:
            start = consumed + 1
            consumed = header_line + reader.line_num
            address = strip(cells[email_column]) if email_column < len(cells) else ""
            if not address and not any(map(strip, cells)):
                continue
            yield start, address, dict(zip(columns, map(strip, cells), strict=False))
    except csv.Error as exc:
        raise AudienceError(
            f"{lf.name}:{consumed + 1}: not readable as CSV ({exc}) — look for a quote that is "
            "opened on this line and never closed, or export the file again as CSV"
        ) from exc


def _header(line: str) -> tuple[tuple[str, ...], int, str] | None:
    """Columns, index of the email column and delimiter, if ``line`` is a CSV header."""
    best: tuple[tuple[str, ...], int, str] | None = None
    for delimiter in DELIMITERS:
        columns = tuple(c.strip() for c in next(csv.reader([line], delimiter=delimiter), []))
        lowered = [c.lower() for c in columns]
        alias = next((a for a in EMAIL_COLUMNS if a in lowered), None)
        if alias is not None and (best is None or len(columns) > len(best[0])):
            best = (columns, lowered.index(alias), delimiter)
    return best


def _open_text(name: str, path: Path) -> TextIO:
    try:
        return path.open(encoding="utf-8-sig", newline="", errors="strict")
    except OSError as exc:
        _cannot_open(name, path, exc)


def _open_binary(name: str, path: Path) -> BinaryIO:
    try:
        return path.open("rb")
    except OSError as exc:
        _cannot_open(name, path, exc)


def _cannot_open(name: str, path: Path, exc: OSError) -> NoReturn:
    if isinstance(exc, FileNotFoundError):
        raise AudienceError(
            f"{name}: audience file not found (looked for {path}) — create it or fix the "
            "campaign's audience: (paths are relative to the config root)"
        ) from None
    if isinstance(exc, IsADirectoryError):
        raise AudienceError(
            f"{name}: is a directory — audience: names files (CSV or text lists), not folders"
        ) from None
    raise AudienceError(
        f"{name}: cannot be read ({exc.strerror}) — check its permissions"
    ) from None


def check_utf8(name: str, path: Path) -> None:
    """Raise AudienceError naming the line and byte offset of the first byte that is not UTF-8."""
    with _open_binary(name, path) as f:
        decoded = 0  # file offset of pending[0]
        pending = b""
        final = False
        while not final:
            chunk = f.read(_CHUNK)
            final = not chunk
            data = pending + chunk
            try:
                _, used = codecs.utf_8_decode(data, "strict", final)
            except UnicodeDecodeError as exc:
                _not_utf8(name, path, decoded + exc.start, data[exc.start])
            pending = data[used:]
            decoded += used


def _not_utf8(name: str, path: Path, offset: int, byte: int) -> NoReturn:
    newlines = 0
    with _open_binary(name, path) as f:
        left = offset
        while left > 0 and (chunk := f.read(min(_CHUNK, left))):
            newlines += chunk.count(b"\n")
            left -= len(chunk)
    raise AudienceError(
        f"{name}:{newlines + 1}: byte 0x{byte:02x} at byte offset {offset} is not UTF-8 — save "
        "the file as UTF-8 (e.g. iconv -f latin1 -t utf-8 old.csv > new.csv)"
    )

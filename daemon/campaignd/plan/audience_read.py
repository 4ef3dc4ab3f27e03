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
- Only regular files are opened (``config.files``): a FIFO or a symlink to a device is an
  ``AudienceError``, never a blocking read.
- A line longer than ``MAX_LINE`` characters is never held in memory whole: it is read past in
  chunks and its record comes out as an invalid row (``fields`` None, the text a preview), so
  one corrupt line costs one row, not the list.
"""

from __future__ import annotations

import codecs
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, NoReturn, TextIO

from ..config.files import NotRegularFile, open_regular, open_regular_text
from ..errors import AudienceError

EMAIL_COLUMNS = ("email", "receiver_email", "e-mail")
"""Header names of the address column, in order of preference, compared case-insensitively."""
CSV_SUFFIXES = frozenset({".csv", ".tsv"})
DELIMITERS = (",", ";", "\t")
_CHUNK = 1 << 20
MAX_LINE = 128 * 1024
"""Characters in one line, line ending excluded; also the csv module's default field limit."""
PREVIEW = 40
"""Characters of an over-long line kept to show the operator which one it was."""


@dataclass(frozen=True, slots=True)
class ListFile:
    name: str
    """The path as the campaign writes it (``lists/a.csv``): used in every message."""
    path: Path
    kind: Literal["csv", "text"]
    columns: tuple[str, ...] = ("email",)
    email_column: int = 0
    delimiter: str = ","


Row = tuple[int, str, dict[str, str] | None]
"""(line the record starts on, the address as written, every column by header name). Plain
tuples: a million NamedTuple constructions cost a second. ``None`` for the columns marks a
record with a line over ``MAX_LINE``: the text is then a preview of that line."""


def open_list(name: str, path: Path) -> ListFile:
    """Check the file as a whole and find its kind, columns and delimiter."""
    check_utf8(name, path)
    long: dict[int, str] = {}
    with _open_text(name, path) as f:
        found_first = next(
            ((n, line) for n, line in enumerate(_lines(f, long), 1) if line.strip() or n in long),
            None,
        )
    if found_first is None:
        kind: Literal["csv", "text"] = "csv" if path.suffix.lower() in CSV_SUFFIXES else "text"
        return ListFile(name, path, kind)
    number, first = found_first
    found = None if number in long else _header(first)
    if found is not None:
        columns, email_column, delimiter = found
        return ListFile(name, path, "csv", columns, email_column, delimiter)
    if path.suffix.lower() in CSV_SUFFIXES:
        shown = long.get(number, first.strip())
        raise AudienceError(
            f"{name}: no email column in the header line {shown[:120]!r} — the first "
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


def _lines(f: TextIO, long: dict[int, str]) -> Iterator[str]:
    """The physical lines of ``f``, none longer than ``MAX_LINE`` characters: a longer one is
    read past in chunks, stands as an empty line, and its number and preview go into ``long``."""
    readline = f.readline
    limit = MAX_LINE + 2  # room for the content and a CRLF
    number = 0
    after_cr = False
    while line := readline(limit):
        if after_cr and line == "\n":  # the LF of a CRLF split where a long line was cut
            after_cr = False
            continue
        after_cr = False
        number += 1
        if len(line) >= limit - 1 and len(line.rstrip("\r\n")) > MAX_LINE:
            long[number] = line[:PREVIEW].rstrip("\r\n") + "…"
            while line[-1] not in "\r\n" and (line := readline(_CHUNK)):
                pass
            after_cr = line.endswith("\r")
            line = "\n"
        yield line


def _too_long(number: int, preview: str) -> Row:
    return number, preview, None


def _text_rows(f: TextIO) -> Iterator[Row]:
    long: dict[int, str] = {}
    for number, line in enumerate(_lines(f, long), start=1):
        if long:
            yield _too_long(number, long.pop(number))
            continue
        text = line.strip()
        if text and not text.startswith("#"):
            yield number, text, {}


def _csv_rows(lf: ListFile, f: TextIO) -> Iterator[Row]:
    long: dict[int, str] = {}
    lines = _lines(f, long)
    header_line = 0
    for line in lines:
        header_line += 1
        if line.strip() or long:
            break
    long.clear()  # open_list refused a .csv whose header is too long; a text list has none
    reader = csv.reader(lines, delimiter=lf.delimiter)
    columns, email_column = lf.columns, lf.email_column
    consumed = header_line  # lines read before the current record
    strip = str.strip
    try:
        for cells in reader:
            start = consumed + 1
            consumed = header_line + reader.line_num
            if long:
                first = min(long)
                if first != start:
                    # Inside a quoted field that began lines earlier: the quote ran away.
                    _runaway(lf.name, start, f"field larger than field limit ({MAX_LINE})")
                yield _too_long(first, long[first])
                long.clear()
                continue
            address = strip(cells[email_column]) if email_column < len(cells) else ""
            if not address and not any(map(strip, cells)):
                continue
            yield start, address, dict(zip(columns, map(strip, cells), strict=False))
    except csv.Error as exc:
        _runaway(lf.name, consumed + 1, str(exc))


def _runaway(name: str, line: int, why: str) -> NoReturn:
    raise AudienceError(
        f"{name}:{line}: not readable as CSV ({why}) — look for a quote that is "
        "opened on this line and never closed, or export the file again as CSV"
    )


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
        return open_regular_text(path, encoding="utf-8-sig", newline="")
    except (OSError, ValueError) as exc:
        _cannot_open(name, path, exc)


def _open_binary(name: str, path: Path) -> BinaryIO:
    try:
        return open_regular(path)
    except (OSError, ValueError) as exc:
        _cannot_open(name, path, exc)


def _short(text: str) -> str:
    """A name as messages show it: cut when absurdly long, control characters escaped."""
    cut = text if len(text) <= 80 else f"{text[:80]}… ({len(text)} characters)"
    return cut if cut.isprintable() else repr(cut)


def _cannot_open(name: str, path: Path, exc: OSError | ValueError) -> NoReturn:
    shown = _short(name)
    if isinstance(exc, ValueError):  # a NUL byte in the path
        raise AudienceError(f"{shown}: not a usable path ({exc})") from None
    if isinstance(exc, FileNotFoundError):
        raise AudienceError(
            f"{shown}: audience file not found (looked for {_short(str(path))}) — create it or "
            "fix the campaign's audience: (paths are relative to the config root)"
        ) from None
    if isinstance(exc, NotRegularFile) and exc.what == "a directory":
        raise AudienceError(
            f"{shown}: is a directory — audience: names files (CSV or text lists), not folders"
        ) from None
    if isinstance(exc, NotRegularFile):
        raise AudienceError(
            f"{shown}: {exc} — an audience list must be a plain CSV or text file"
        ) from None
    if isinstance(exc, IsADirectoryError):
        raise AudienceError(
            f"{shown}: is a directory — audience: names files (CSV or text lists), not folders"
        ) from None
    if isinstance(exc, PermissionError):
        raise AudienceError(
            f"{shown}: cannot be read ({exc.strerror}) — check its permissions"
        ) from None
    raise AudienceError(f"{shown}: cannot be read ({exc.strerror or exc})") from None


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

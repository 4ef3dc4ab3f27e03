"""Audience lists that are odd files, absurd names or have absurd lines: an AudienceError or one
invalid row with its line number — never a traceback, a hang, or the whole list lost."""

from __future__ import annotations

import contextlib
import io
import os
import resource
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from campaignd.config.model import Campaign
from campaignd.errors import AudienceError
from campaignd.plan import audience_read
from campaignd.plan.audience import NoHistory, NoSuppressions, build_audience
from campaignd.plan.audience_read import MAX_LINE, Row, open_list, read_rows
from tests.unit.config.test_files import within

LONG = "x" * (MAX_LINE + 1)


def rows(path: Path, name: str = "l") -> list[Row]:
    return within(10, lambda: list(read_rows(open_list(name, path))))


def enroll(root: Path, *names: str) -> tuple[list[str], list[tuple[str, str, str]], int]:
    campaign = Campaign.model_validate(
        {
            "name": "x",
            "kind": "transactional",
            "audience": list(names),
            "services": ["s"],
            "template": "t",
        }
    )
    a = build_audience(
        campaign,
        root,
        history=NoHistory(),
        suppressions=NoSuppressions(),
        now=datetime(2026, 12, 1, tzinfo=UTC),
    )
    got = within(10, lambda: [r.source for r in a])
    invalid = [(p.source, p.address, p.reason) for p in a.report.invalid_rows]
    return got, invalid, a.report.invalid


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_an_overlong_text_line_is_one_invalid_row(tmp_path: Path, newline: str) -> None:
    lines = ["ann@example.com", LONG + "@example.com", "", "bob@example.com"]
    (tmp_path / "l.txt").write_text(newline.join(lines) + newline, newline="")
    got, invalid, count = enroll(tmp_path, "l.txt")
    assert got == ["l.txt:1", "l.txt:4"]
    assert count == 1
    ((source, shown, reason),) = invalid
    assert source == "l.txt:2"
    assert shown == "x" * 40 + "…"
    assert reason.startswith("the line is longer than 131,072 characters")


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_an_overlong_csv_line_is_one_invalid_row(tmp_path: Path, newline: str) -> None:
    lines = ["email,name", "ann@example.com,Ann", f"bob@example.com,{LONG}", "cy@example.com,Cy"]
    (tmp_path / "l.csv").write_text(newline.join(lines) + newline, newline="")
    got, invalid, count = enroll(tmp_path, "l.csv")
    assert got == ["l.csv:2", "l.csv:4"]
    assert (count, invalid[0][0]) == (1, "l.csv:3")
    assert invalid[0][1] == "bob@example.com," + "x" * 24 + "…"


def test_a_line_of_exactly_the_limit_is_an_ordinary_row(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("y" * MAX_LINE + "\nann@example.com\n")
    ((line, text, fields), second) = rows(tmp_path / "l.txt")
    assert (line, len(text), fields) == (1, MAX_LINE, {})
    assert second == (2, "ann@example.com", {})


def test_an_overlong_first_line(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text(LONG + "\nann@example.com\n")
    assert rows(tmp_path / "l.txt") == [(1, "x" * 40 + "…", None), (2, "ann@example.com", {})]
    (tmp_path / "l.csv").write_text(LONG + "\nann@example.com\n")
    with pytest.raises(AudienceError, match=r"^l: no email column in the header line 'x{40}…'"):
        rows(tmp_path / "l.csv")


def test_a_huge_line_is_never_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    with path.open("w") as f:
        f.write("ann@example.com\n")
        for _ in range(64):
            f.write("z" * (1 << 20))  # one 64 MiB line
        f.write("\nbob@example.com\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = rows(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert [(n, f is None) for n, _, f in got] == [(1, False), (2, True), (3, False)]
    assert grown_mb < 32


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "l.csv"
    os.mkfifo(path)
    yield path
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_a_fifo_is_an_audience_error_not_a_hang(fifo: Path) -> None:
    with pytest.raises(
        AudienceError,
        match=r"^lists/l\.csv: is a FIFO, not a regular file — an audience list must be a plain",
    ):
        within(5, lambda: open_list("lists/l.csv", fifo))


def test_a_symlink_to_a_device(tmp_path: Path) -> None:
    (tmp_path / "l.txt").symlink_to("/dev/zero")
    with pytest.raises(AudienceError, match=r"symlink to a character device \(/dev/zero\)"):
        within(5, lambda: open_list("l.txt", tmp_path / "l.txt"))


def test_absurd_names_are_short_audience_errors(tmp_path: Path) -> None:
    name = "lists/" + "a" * 300 + ".csv"
    (tmp_path / "lists").mkdir()
    with pytest.raises(AudienceError) as err:
        open_list(name, tmp_path / name)
    message = str(err.value)
    assert message.endswith("(310 characters): cannot be read (File name too long)")
    assert len(message) < 200
    with pytest.raises(AudienceError, match=r"^'l\\x00\.csv': not a usable path"):
        open_list("l\0.csv", tmp_path / "l\0.csv")


def reference(data: str, limit: int) -> list[Row]:
    """What read_rows must give for a text list: physical lines by Python's own splitting."""
    out: list[Row] = []
    for number, line in enumerate(io.StringIO(data, newline="").readlines(), start=1):
        content = line.rstrip("\r\n")
        if len(content) > limit:
            # the preview comes from the first read of the line: limit + 2 characters
            out.append((number, content[: min(40, limit + 2)] + "…", None))
        elif content.strip() and not content.strip().startswith("#"):
            out.append((number, content.strip(), {}))
    return out


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    parts=st.lists(
        st.tuples(
            st.text(st.sampled_from("ab #@."), max_size=20), st.sampled_from(["\n", "\r\n", "\r"])
        ),
        max_size=12,
    ),
    chunk=st.integers(1, 5),
)
def test_line_numbers_survive_any_mix_of_long_lines_and_endings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, parts: list[tuple[str, str]], chunk: int
) -> None:
    # A tiny limit and tiny skip chunks cut CRLF pairs at every possible place.
    monkeypatch.setattr(audience_read, "MAX_LINE", 8)
    monkeypatch.setattr(audience_read, "_CHUNK", chunk)
    data = "".join(text + end for text, end in parts)
    path = tmp_path / "p.txt"
    path.write_text(data, newline="")
    assert list(read_rows(open_list("p.txt", path))) == reference(data, 8)

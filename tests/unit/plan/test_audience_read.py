"""Audience files on disk: CSV dialects, text lists, and the errors an operator sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from campaignd.errors import AudienceError
from campaignd.plan import audience_read
from campaignd.plan.audience_read import check_utf8, open_list, read_rows


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def rows(path: Path, name: str = "lists/x") -> list[tuple[int, str, dict[str, str]]]:
    return list(read_rows(open_list(name, path)))


def test_bom_semicolon_and_alias_header(tmp_path: Path) -> None:
    path = write(
        tmp_path, "a.csv", b"\xef\xbb\xbf E-Mail ;Name;City\r\nann@example.com; Ann ;Berlin\r\n"
    )
    lf = open_list("lists/a.csv", path)
    assert (lf.kind, lf.delimiter, lf.columns, lf.email_column) == (
        "csv",
        ";",
        ("E-Mail", "Name", "City"),
        0,
    )
    assert rows(path) == [
        (2, "ann@example.com", {"E-Mail": "ann@example.com", "Name": "Ann", "City": "Berlin"})
    ]


@pytest.mark.parametrize(
    ("header", "delimiter", "index"),
    [
        ("name,Email,company", ",", 1),
        ("RECEIVER_EMAIL", ",", 0),
        ("first name;last name;email", ";", 2),
        ("name\temail", "\t", 1),
        ('"email","note"', ",", 0),
        # a comma inside a ;-separated header: ; splits it into more columns
        ("email;note, with comma;x", ";", 0),
    ],
)
def test_header_sniffing(tmp_path: Path, header: str, delimiter: str, index: int) -> None:
    lf = open_list("l.csv", write(tmp_path, "l.csv", header + "\n"))
    assert (lf.kind, lf.delimiter, lf.email_column) == ("csv", delimiter, index)


def test_email_column_preference_when_two_are_present(tmp_path: Path) -> None:
    lf = open_list("l.csv", write(tmp_path, "l.csv", "receiver_email,email\n"))
    assert lf.email_column == 1


def test_quoted_fields_with_delimiters_and_newlines_keep_line_numbers(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "q.csv",
        'email,note\n"bob@example.com","hello, world\nsecond; line"\n'
        'carl@example.com,"say ""hi"""\n',
    )
    assert rows(path) == [
        (2, "bob@example.com", {"email": "bob@example.com", "note": "hello, world\nsecond; line"}),
        (4, "carl@example.com", {"email": "carl@example.com", "note": 'say "hi"'}),
    ]


def test_blank_and_empty_records_are_skipped_short_rows_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.csv",
        "\n\nemail,name,company\n\nann@example.com,Ann\n,,,\n,,\n , , \n"
        "bob@example.com,Bob,Acme,extra\n,Carl,\n",
    )
    assert rows(path) == [
        (5, "ann@example.com", {"email": "ann@example.com", "name": "Ann"}),
        (9, "bob@example.com", {"email": "bob@example.com", "name": "Bob", "company": "Acme"}),
        (10, "", {"email": "", "name": "Carl", "company": ""}),
    ]


def test_text_list_with_comments_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "l.txt",
        "# customers, exported 2026-11-01\r\nann@example.com\r\n\r\n"
        "   bob@example.org  \r\n# x@y.z\r\n",
    )
    assert open_list("l.txt", path).kind == "text"
    assert rows(path) == [(2, "ann@example.com", {}), (4, "bob@example.org", {})]


def test_text_list_detected_by_content_without_extension(tmp_path: Path) -> None:
    assert open_list("l", write(tmp_path, "l", "ann@example.com\n")).kind == "text"
    # …and a header makes a CSV whatever the extension says
    assert open_list("l.txt", write(tmp_path, "l.txt", "Email,name\n")).kind == "csv"


def test_empty_files_have_no_rows(tmp_path: Path) -> None:
    for name in ("e.csv", "e.txt"):
        assert rows(write(tmp_path, name, "\n \n")) == []


def test_csv_without_email_column_says_what_to_do(tmp_path: Path) -> None:
    path = write(tmp_path, "lists/people.csv", "name,mail address\nAnn,ann@example.com\n")
    with pytest.raises(AudienceError) as err:
        open_list("lists/people.csv", path)
    message = str(err.value)
    assert message.startswith("lists/people.csv: no email column")
    assert "'name,mail address'" in message
    assert "receiver_email" in message and ".txt" in message


def test_a_headerless_csv_is_refused_rather_than_read_as_text(tmp_path: Path) -> None:
    with pytest.raises(AudienceError, match="no email column"):
        open_list("a.csv", write(tmp_path, "a.csv", "ann@example.com,Ann\n"))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(AudienceError) as err:
        open_list("lists/nope.csv", tmp_path / "lists" / "nope.csv")
    assert str(err.value).startswith("lists/nope.csv: audience file not found")
    assert "relative to the config root" in str(err.value)
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(AudienceError, match=r"^dir\.csv: is a directory"):
        open_list("dir.csv", tmp_path / "dir.csv")


def test_not_utf8_names_file_line_and_byte_offset(tmp_path: Path) -> None:
    data = b"email,name\nann@example.com,Ann\nbob@example.com,Ren\xe9\ncarl@example.com,C\n"
    path = write(tmp_path, "lists/latin1.csv", data)
    with pytest.raises(AudienceError) as err:
        open_list("lists/latin1.csv", path)
    offset = data.index(b"\xe9")
    assert str(err.value).startswith(
        f"lists/latin1.csv:3: byte 0xe9 at byte offset {offset} is not UTF-8"
    )
    assert "iconv" in str(err.value)


def test_truncated_sequence_at_the_end_of_the_file(tmp_path: Path) -> None:
    data = b"ann@example.com\nbob@example.com\xc3"
    with pytest.raises(
        AudienceError, match=rf"^l\.txt:2: byte 0xc3 at byte offset {len(data) - 1} "
    ):
        open_list("l.txt", write(tmp_path, "l.txt", data))


def test_utf8_check_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tiny chunks split every multi-byte character somewhere; only the real bad byte counts.
    monkeypatch.setattr(audience_read, "_CHUNK", 3)
    good = "email\nzoë@bücher.example\n日本@例え.example\n".encode()
    check_utf8("g.csv", write(tmp_path, "g.csv", good))
    bad = good + b"ok@example.com\n" + b"\xf0\x9f\x98x@example.com\n"
    with pytest.raises(AudienceError) as err:
        check_utf8("b.csv", write(tmp_path, "b.csv", bad))
    assert f"b.csv:5: byte 0xf0 at byte offset {len(good) + 15} " in str(err.value)


def test_file_changed_to_bad_bytes_after_the_check_still_names_the_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "l.txt", "ann@example.com\n")
    lf = open_list("l.txt", path)
    path.write_bytes(b"ann@example.com\n\xff\n")
    with pytest.raises(AudienceError, match=r"l\.txt:2: byte 0xff at byte offset 16"):
        list(read_rows(lf))


def test_runaway_quote_is_an_audience_error(tmp_path: Path) -> None:
    data = 'email,note\nann@example.com,ok\nbob@example.com,"never closed\n' + "x" * 140_000
    with pytest.raises(AudienceError, match=r"^q\.csv:3: not readable as CSV .*never closed"):
        rows(write(tmp_path, "q.csv", data), "q.csv")

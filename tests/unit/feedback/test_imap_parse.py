"""feedback/imap.py's pure helpers, on answers as aioimaplib hands them over (from Dovecot)."""

from __future__ import annotations

import pytest

from campaignd.feedback.imap import ImapError, listed, literal_of, quote_mailbox, search_uids


def test_search_answers() -> None:
    # aioimaplib strips "* SEARCH" from concurrent commands; a sync answer keeps it.
    assert search_uids([b"1 4 9", b"Search completed (0.001 + 0.000 secs)."]) == ["1", "4", "9"]
    assert search_uids([b"SEARCH 7", b"done"]) == ["7"]
    assert search_uids([b"Search completed (0.001 secs)."]) == []


def test_list_answers() -> None:
    assert listed([b'(\\HasNoChildren) "." campaignd-done', b"List completed."])
    # The completion text alone ("List completed") is not a mailbox.
    assert not listed([b"List completed (0.001 + 0.000 secs)."])


def test_fetch_literal() -> None:
    raw = bytearray(b"From: a@b\r\n\r\nhi\r\n")
    assert literal_of([b"1 FETCH (UID 5 BODY[] {17}", raw, b")", b"Fetch completed."]) == raw
    assert literal_of([b"Fetch completed."]) is None


def test_mailbox_quoting() -> None:
    assert quote_mailbox("campaignd-done") == '"campaignd-done"'
    assert quote_mailbox('Bounces "old"\\x') == '"Bounces \\"old\\"\\\\x"'
    with pytest.raises(ImapError):
        quote_mailbox("evil\r\nA1 DELETE INBOX")

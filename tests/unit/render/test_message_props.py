"""Properties of rendered messages over random Unicode: they parse back exactly, never inject."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage

from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import escape

from campaignd.config.model import Template
from campaignd.render.message import PreparedTemplate, RenderContext

UNSUB = "https://mail.acme.example/u/tok"
CTX = RenderContext("c", "Camp", 1, "Ácme <outreach@acme.example>", True, "1 Main St")
BOTH = PreparedTemplate(
    "t",
    Template(
        subject="{{ subject }}",
        text="{{ body }}{{ unsubscribe_url }}",
        html="{{ body }}{{ unsubscribe_url }}",
        reply_to="Sales <sales@acme.example>",
        headers={"X-Tag": "q4"},
    ),
    CTX,
)
TEXT_ONLY = PreparedTemplate(
    "t",
    Template(
        subject="{{ subject }}",
        text="{{ body }}{{ unsubscribe_url }}",
        reply_to="Sales <sales@acme.example>",
        headers={"X-Tag": "q4"},
    ),
    CTX,
)
EXPECTED_HEADERS = {
    "Message-ID", "Date", "From", "To", "Subject", "Reply-To", "X-Tag", "MIME-Version",
    "List-Unsubscribe", "List-Unsubscribe-Post", "Content-Type",
}  # fmt: skip

# Pieces that have broken mail software before: line breaks, NUL, encoded-word lookalikes,
# MIME boundaries, quoting characters, Unicode line separators and wide characters.
NASTY = st.sampled_from([
    "\r", "\n", "\r\n", "\x00", "\t", "\x0b", "\x85", "\u2028", " ", "  ", "=?utf-8?b?",
    "=?utf-8?q?=41?=", "=?iso-8859-1?q?a?=", "?=", "=_", "--", '"', "\\", "<", ">", ",", "(", ")",
    "é", "日本語", "😀", "\u00a0", "\u3000", "Bcc: x@y.example", ".", "From ", "=", "=3D",
])  # fmt: skip
TEXT = st.lists(st.one_of(st.text(max_size=30), NASTY), max_size=25).map("".join)
LONG_TEXT = st.one_of(TEXT, st.builds(lambda a, n: a * n, TEXT, st.integers(1, 80)))
CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(value: str) -> str:
    return CONTROLS.sub(" ", value).strip()


def lines_of(body: str) -> str:
    return body.replace("\r\n", "\n").replace("\r", "\n")


def check(
    prepared: PreparedTemplate, subject: str, name: str, body: str, local: str
) -> EmailMessage:
    to = f"{local}@example.com"
    r = prepared.render(
        {"subject": subject, "name": name, "body": body},
        to_address=to,
        message_id="<1@acme.example>",
        send_time=datetime(2026, 12, 1, tzinfo=UTC),
        unsubscribe_url=UNSUB,
    )
    data = r.data
    assert data.isascii()
    assert b"\n" not in data.replace(b"\r\n", b"") and b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert msg.defects == []
    # Exactly our headers: a single-part message has its Content-Transfer-Encoding at the top.
    top = {"Content-Transfer-Encoding"} if prepared is TEXT_ONLY else set()
    assert set(msg.keys()) == EXPECTED_HEADERS | top
    assert len(msg.keys()) == len(set(msg.keys()))
    for header in msg:
        assert not msg[header].defects, (header, msg[header].defects)
    assert r.subject == one_line(subject)
    assert str(msg["Subject"]) == r.subject
    addresses = msg["To"].addresses
    assert len(addresses) == 1
    shown = " ".join(one_line(name).split())
    if len(shown.encode()) > 300:  # cut at 300 bytes, on a character boundary
        assert shown.startswith(addresses[0].display_name)
        assert 300 - 4 < len(addresses[0].display_name.encode()) <= 300
    else:
        assert addresses[0].display_name == shown
    assert addresses[0].addr_spec == to
    return msg


def content(part: object) -> str:
    assert isinstance(part, EmailMessage)
    text: str = part.get_content()
    return lines_of(text)


@settings(max_examples=300, deadline=None)
@given(subject=LONG_TEXT, name=TEXT, body=LONG_TEXT)
def test_multipart_round_trip(subject: str, name: str, body: str) -> None:
    msg = check(BOTH, subject, name, body, "ann")
    text, html = msg.iter_parts()
    assert content(text) == lines_of(body) + UNSUB
    assert content(html) == lines_of(str(escape(body))) + UNSUB
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"


@settings(max_examples=200, deadline=None)
@given(subject=TEXT, name=TEXT, body=LONG_TEXT)
def test_single_part_round_trip(subject: str, name: str, body: str) -> None:
    msg = check(TEXT_ONLY, subject, name, body, "ann.o-neil+tag")
    assert not msg.is_multipart()
    # A single-part body always ends in a line break (SMTP DATA wants one).
    assert content(msg) == lines_of(body) + UNSUB + "\n"

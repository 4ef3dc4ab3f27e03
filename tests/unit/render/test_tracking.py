"""Open / click tracking at render time: which links are rewritten, how, and that the signed
tokens lead back to the message and the original target (render.track_html, compose)."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from campaignd.config.load import load_root
from campaignd.render.compose import Composer
from campaignd.render.tracking import Tracking, track_html
from campaignd.tokens.links import LinkSigner
from tests.rootfiles import make_root

SIGNER = LinkSigner(b"t" * 32)
WHEN = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def tracked(url: str) -> str | None:
    return f"https://t.example/c/{url}" if url.startswith("http") else None


CLICKS = Tracking(click=tracked)


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<a href="https://a.example/x">x</a>', '<a href="https://t.example/c/https://a.example/x">x</a>'),
        ("<a href='https://a.example/'>x</a>", '<a href="https://t.example/c/https://a.example/">x</a>'),
        ("<A HREF=https://a.example/>x</A>", '<A HREF="https://t.example/c/https://a.example/">x</A>'),
        ('<area shape="rect" href="http://a.example">', '<area shape="rect" href="https://t.example/c/http://a.example">'),
        # entities in the attribute are the URL's characters; the output is escaped again
        ('<a href="https://a.example/?a=1&amp;b=2">', '<a href="https://t.example/c/https://a.example/?a=1&amp;b=2">'),
        # not web links: left alone
        ('<a href="mailto:sales@acme.example">m</a>', '<a href="mailto:sales@acme.example">m</a>'),
        ('<a href="#top">t</a>', '<a href="#top">t</a>'),
        ('<a name="x">anchor</a>', '<a name="x">anchor</a>'),
        # only real attributes count: "href=" inside another attribute's value is text
        ('<a title="see href=https://evil.example" href="https://a.example/">',
         '<a title="see href=https://evil.example" href="https://t.example/c/https://a.example/">'),
        ('<a data-href="https://a.example/">d</a>', '<a data-href="https://a.example/">d</a>'),
        # markup that is not a tag is never touched
        ('<!-- <a href="https://a.example/"> -->', '<!-- <a href="https://a.example/"> -->'),
        ('<p>write &lt;a href="https://a.example/"&gt;</p>', '<p>write &lt;a href="https://a.example/"&gt;</p>'),
        ('<script>var s = \'<a href="https://a.example/">\';</script>',
         '<script>var s = \'<a href="https://a.example/">\';</script>'),
    ],
)  # fmt: skip
def test_links_rewritten_exactly_where_they_are_links(html: str, expected: str) -> None:
    assert track_html(html, CLICKS) == expected


def test_the_rest_of_the_markup_is_kept_byte_for_byte() -> None:
    html = (
        "<html>\n<body>\n  <p>Hi Ann,</p>\n"
        '  <a class="btn"\n     href="https://a.example/one">one</a> and\n'
        '  <a href="https://a.example/two">two</a>\n</body>\n</html>\n'
    )
    out = track_html(html, CLICKS)
    assert out.count("https://t.example/c/") == 2
    assert out.replace("https://t.example/c/", "") == html


def test_kept_targets_and_refused_targets_stay_direct() -> None:
    keep = "https://mail.acme.example/u/TOKEN"
    html = f'<a href="{keep}">unsubscribe</a><a href="https://a.example/">a</a>'
    out = track_html(html, Tracking(click=tracked, keep={keep}))
    assert f'href="{keep}"' in out and "c/https://a.example/" in out
    # click() saying None (the signer refused it) leaves that one link as it was
    assert track_html(html, Tracking(click=lambda _u: None)) == html


def test_pixel_goes_before_the_last_body_end_or_at_the_end() -> None:
    pixel = Tracking(pixel_url="https://t.example/o/P&Q")
    out = track_html("<html><BODY>x</body >\n</html>", pixel)
    assert re.fullmatch(
        r'<html><BODY>x<img src="https://t\.example/o/P&amp;Q" width="1" height="1" alt=""'
        r' style="[^"]+"></body >\n</html>',
        out,
    )
    assert track_html("<p>fragment</p>", pixel).startswith("<p>fragment</p><img ")


# ---------------------------------------------------------------- through the composer


def composer(tmp_path: Path, track: str) -> Composer:
    root = make_root(
        tmp_path,
        {
            "campaignd.yaml": "http: {public_url: 'https://mail.acme.example'}\n",
            "templates.d/hello.yaml": """
                subject: "Hello {{ first_name }}"
                text: |
                  Hi {{ first_name }}: https://acme.example/pricing
                  Unsubscribe: {{ unsubscribe_url }}
                html: |
                  <html><body><p>Hi {{ first_name }}</p>
                  <a href="https://acme.example/pricing?plan={{ first_name }}&amp;x=1">Pricing</a>
                  <a href="mailto:sales@acme.example">Mail us</a>
                  <a href="{{ unsubscribe_url }}">Unsubscribe</a> {{ postal_address }}
                  <a href="https://acme.example/{{ 'y' * 5000 }}">too long to track</a>
                  </body></html>
            """,
            "campaigns.d/launch.yaml": f"""
                name: Launch
                kind: marketing
                postal_address: "Acme Inc, 1 Main St"
                audience: [lists/people.csv]
                services: [sink]
                template: hello
                {track}
            """,
        },
    )
    result = load_root(root)
    assert result.ok, result.problems
    return Composer(result.config, SIGNER)


def compose(c: Composer) -> EmailMessage:
    rendered = c.compose(
        campaign_id="launch",
        step=1,
        template_id="hello",
        service_id="sink",
        recipient_key="ann@example.com",
        fields={"email": "ann@example.com", "first_name": "Ann"},
        to_address="ann@example.com",
        send_time=WHEN,
        message_id="<m1.x@acme.example>",
    )
    msg = email.message_from_bytes(rendered.data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_tracked_campaign_signs_message_and_targets_into_its_links(tmp_path: Path) -> None:
    msg = compose(composer(tmp_path, "track: {opens: true, clicks: true}"))
    text, html = parts(msg)
    clicks = re.findall(r'href="https://mail\.acme\.example/c/([A-Za-z0-9_-]+)"', html)
    assert len(clicks) == 1
    assert SIGNER.verify_click(clicks[0]) == (
        "m1.x@acme.example",
        "https://acme.example/pricing?plan=Ann&x=1",
    )
    (pixel,) = re.findall(r'<img src="https://mail\.acme\.example/o/([A-Za-z0-9_-]+)"', html)
    assert SIGNER.verify_open(pixel) == "m1.x@acme.example"
    # never rewritten: the unsubscribe link (it must work without a redirect), mailto:, a
    # target too long for a token, and the text part
    unsub = msg["List-Unsubscribe"].strip("<>")
    assert f'href="{unsub}"' in html
    assert 'href="mailto:sales@acme.example"' in html
    assert 'href="https://acme.example/yyyyy' in html
    assert "https://acme.example/pricing\r\n" in text and "/c/" not in text
    # the headers are exactly those of an untracked message
    plain = compose(composer(tmp_path / "plain", ""))
    assert [k for k, _ in msg.items()] == [k for k, _ in plain.items()]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_opens_only_or_nothing(tmp_path: Path) -> None:
    _, html = parts(compose(composer(tmp_path / "a", "track: {opens: true}")))
    assert "/o/" in html and "/c/" not in html
    _, html = parts(compose(composer(tmp_path / "b", "track: {clicks: false}")))
    assert "/o/" not in html and "/c/" not in html
    assert 'href="https://acme.example/pricing?plan=Ann&amp;x=1"' in html

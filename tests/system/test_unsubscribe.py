"""Unsubscribe and tracking links against the daemon as a process (SPEC §7): RFC 8058
one-click, a confirmation page that scanners cannot trigger, forged tokens change nothing,
opens and clicks count once and feed ``unless: [clicked]``, and no open redirect."""

from __future__ import annotations

import base64
import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess, wait_for
from .test_api import FORM, MULTIPART, raw

pytestmark = pytest.mark.system

ONE_CLICK = b"List-Unsubscribe=One-Click"
HTML_TEMPLATE = (
    "subject: Hello {{ first_name }}\n"
    "text: |\n  Hi {{ first_name }}! Unsubscribe: {{ unsubscribe_url }}\n"
    "html: |\n"
    "  <html><body><p>Hi {{ first_name }}!</p>\n"
    '  <a href="https://shop.example/offer?who={{ first_name }}&amp;x=1">Offer</a>\n'
    '  <a href="{{ unsubscribe_url }}">Unsubscribe</a><p>{{ postal_address }}</p></body></html>\n'
)


def marketing_root(tmp_path: Path, smtp: RecordingServer, port: int, extra: str = "") -> Path:
    return basic_root(
        tmp_path,
        smtp.port,
        recipients=3,
        extra_files={
            "campaignd.yaml": (
                f"timezone: UTC\ndrain_timeout: 10s\nhttp: {{public_url: 'http://127.0.0.1:{port}'}}\n"
            ),
            "templates.d/hello.yaml": HTML_TEMPLATE,
            "campaigns.d/news.yaml": (
                "kind: marketing\npostal_address: 'Acme Inc, 1 Main St'\n"
                "audience: lists/people.csv\nservices: [sink]\n"
                f"track: {{opens: true, clicks: true}}\n{extra}"
            ),
        },
    )


def message_to(smtp: RecordingServer, address: str, step: int = 1) -> EmailMessage:
    found = [m for m in smtp.messages if address in m.rcpt_tos]
    msg = email.message_from_bytes(found[step - 1].data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def html_of(smtp: RecordingServer, address: str) -> str:
    part = message_to(smtp, address).get_body(("html",))
    assert part is not None
    content: str = part.get_content()
    return content


def path_of(url: str, daemon: DaemonProcess) -> str:
    assert url.startswith(daemon.base), url
    return url[len(daemon.base) :]


def counts(daemon: DaemonProcess) -> dict[str, int]:
    result: dict[str, int] = daemon.campaign("news")["counts"]
    return result


def suppressed(daemon: DaemonProcess) -> list[str]:
    return [s["key"] for s in daemon.get("/api/suppressions")["suppressions"]]


def tamper(token: str) -> list[str]:
    """A changed character, a truncation, a swap of halves, and base64 of other content."""
    flipped = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
    forged = base64.urlsafe_b64encode(b"news\x00bob@example.com" + b"\x00" * 16).rstrip(b"=")
    return [
        flipped,
        token[:-4],
        token[len(token) // 2 :] + token[: len(token) // 2],
        forged.decode(),
    ]


def test_one_click_unsubscribe_page_and_forgeries(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(tmp_path)
    marketing_root(tmp_path, smtp, daemon.port, "template: hello\n")
    daemon.start()
    daemon.wait_state("news", "completed")
    msg = message_to(smtp, "user1@example.com")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = msg["List-Unsubscribe"].strip("<>")
    path = path_of(url, daemon)
    token = path.removeprefix("/u/")

    # GET (a scanner, a prefetch, the reader clicking) only asks
    for _ in range(2):
        status, headers, page = raw(daemon, "GET", path, token=False)
        assert status == 200 and b"user1@example.com" in page
        assert b'name="List-Unsubscribe" value="One-Click"' in page and b"<form" in page
        assert "set-cookie" not in headers
    assert suppressed(daemon) == [] and counts(daemon)["unsubscribed"] == 0

    # forged, truncated, swapped, or another purpose's token: 400, nothing changes
    open_token = re.findall(r"/o/([A-Za-z0-9_-]+)", html_of(smtp, "user1@example.com"))[0]
    for bad in [*tamper(token), open_token, ""]:
        status, _, _ = raw(daemon, "POST", f"/u/{bad}", ONE_CLICK, FORM, token=False)
        assert status in (400, 404), bad
    # the right token without the RFC 8058 body is refused too
    assert raw(daemon, "POST", path, b"unsubscribe=yes", FORM, token=False)[0] == 400
    assert raw(daemon, "POST", path, b"--x\r\nbroken", MULTIPART, token=False)[0] == 400
    assert suppressed(daemon) == [] and counts(daemon)["unsubscribed"] == 0

    # RFC 8058 one-click: 200 at once, no redirect, no cookie; idempotent
    for _ in range(2):
        status, headers, page = raw(daemon, "POST", path, ONE_CLICK, FORM, token=False)
        assert status == 200 and "location" not in headers and "set-cookie" not in headers
        assert b"will receive no more mail" in page
    assert suppressed(daemon) == ["user1@example.com"]
    assert counts(daemon)["unsubscribed"] == 1
    (row,) = [m for m in daemon.messages("news") if m["recipient"] == "user1@example.com"]
    assert row["unsubscribed_at"]
    # a bare body with another media type is accepted as RFC 8058 names only the body
    other = message_to(smtp, "user2@example.com")["List-Unsubscribe"].strip("<>")
    plain = {"Content-Type": "text/plain"}
    assert raw(daemon, "POST", path_of(other, daemon), ONE_CLICK, plain, token=False)[0] == 200
    assert suppressed(daemon) == ["user1@example.com", "user2@example.com"]

    # the page now says so; an operator lifting it and the reader asking again re-suppresses
    assert b"You are unsubscribed" in raw(daemon, "GET", path, token=False)[2]
    assert daemon.ctl("suppress", "remove", "user1@example.com").returncode == 0
    assert raw(daemon, "POST", path, ONE_CLICK, FORM, token=False)[0] == 200
    assert "user1@example.com" in suppressed(daemon)
    assert counts(daemon)["unsubscribed"] == 2  # still one per message


def test_opens_and_clicks_count_once_feed_unless_and_never_redirect_elsewhere(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    daemon = make_daemon(tmp_path)
    marketing_root(
        tmp_path,
        smtp,
        daemon.port,
        "steps:\n  - template: hello\n  - {after: 4s, template: hello, unless: [clicked]}\n",
    )
    daemon.start()
    # step 1 to everyone; user0 clicks before step 2 falls due
    to_user0 = ["user0@example.com"]
    wait_for("step 1 to reach user0", lambda: any(m.rcpt_tos == to_user0 for m in smtp.messages))
    content = html_of(smtp, "user0@example.com")
    (click,) = re.findall(r'href="(http://127\.0\.0\.1:\d+/c/[A-Za-z0-9_-]+)"', content)
    (pixel,) = re.findall(r'<img src="(http://127\.0\.0\.1:\d+/o/[A-Za-z0-9_-]+)"', content)
    assert 'href="http://127.0.0.1' in content and "/u/" in content  # unsubscribe stays direct

    assert raw(daemon, "HEAD", path_of(click, daemon), token=False)[0] == 302  # link checkers
    status, headers, _ = raw(daemon, "GET", path_of(click, daemon), token=False)
    assert status == 302 and headers["location"] == "https://shop.example/offer?who=User0&x=1"
    assert headers["referrer-policy"] == "no-referrer"
    for _ in range(2):
        status, headers, body = raw(daemon, "GET", path_of(pixel, daemon), token=False)
        assert status == 200 and headers["content-type"] == "image/gif" and body[:6] == b"GIF89a"
        assert "no-store" in headers["cache-control"]
    raw(daemon, "GET", path_of(click, daemon), token=False)
    c = counts(daemon)
    assert (c["opened"], c["clicked"]) == (1, 1)  # once per message, however often

    # tampered tokens: 400, no redirect anywhere
    click_token = click.rsplit("/", 1)[1]
    for bad in tamper(click_token):
        status, headers, _ = raw(daemon, "GET", f"/c/{bad}", token=False)
        assert status == 400 and "location" not in headers
    for bad in tamper(pixel.rsplit("/", 1)[1]):
        assert raw(daemon, "GET", f"/o/{bad}", token=False)[0] == 400

    # step 2: user0 clicked, so its step 2 is skipped; the others get it
    summary = daemon.wait_state("news", "completed", timeout=60)
    assert summary["by_step"]["2"]["skipped"] == 1 and summary["by_step"]["2"]["sent"] == 2
    rows = {(m["recipient"], m["step"]): m for m in daemon.messages("news")}
    assert rows[("user0@example.com", 2)]["status"] == "skipped"
    assert (
        rows[("user0@example.com", 1)]["clicked_at"] and rows[("user0@example.com", 1)]["opened_at"]
    )
    assert summary["by_template"]["hello"]["clicked"] == 1

"""How fast one message is rendered: PreparedTemplate versus Jinja2 + EmailMessage per message.

Run: ``.venv/bin/python bench/render.py [N]`` (default 20,000 messages). The message is the
standard one: a text and an HTML part of about 1 KB each, a handful of fields, an unsubscribe
link, a Reply-To and one custom header — about 2.5 KB on the wire. Every rendered message of
both ways is checked once against the other (same subject and bodies) so the figures compare
like with like.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from campaignd.config.model import Template
from campaignd.render.headers import make_message_id
from campaignd.render.message import PreparedTemplate, RenderContext

SUBJECT = "{{ first_name }}, a shorter week for {{ company }}"
TEXT = """Hi {{ first_name }},

We built Acme Boards for teams like {{ company }}: plan the work on one board and ship it
the same week. Teams in {{ city }} told us their Monday status meeting went from an hour to
ten minutes, because everyone could already see what moved and what was stuck.

Three things people like most:
  * one board per team, with the week's goals pinned to the top
  * a daily digest instead of a dozen notifications
  * an export for the people who still want a spreadsheet

See it in two minutes: https://acme.example/boards?utm_campaign={{ campaign | urlencode }}

If now is not a good time, no problem. Just reply and I will not write again.

Best,
Sam from Acme

Acme Inc, 1 Main St, Springfield
Unsubscribe: {{ unsubscribe_url }}
"""
HTML = """<!doctype html>
<html><body style="font-family: sans-serif">
<p>Hi {{ first_name }},</p>
<p>We built <b>Acme Boards</b> for teams like {{ company }}: plan the work on one board and
ship it the same week. Teams in {{ city }} told us their Monday status meeting went from an
hour to ten minutes.</p>
<ul><li>one board per team, with the week's goals pinned to the top</li>
<li>a daily digest instead of a dozen notifications</li>
<li>an export for the people who still want a spreadsheet</li></ul>
<p><a href="https://acme.example/boards">See it in two minutes</a></p>
<p>Best,<br>Sam from Acme</p>
<p style="color:#777;font-size:12px">Acme Inc, 1 Main St, Springfield<br>
<a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
</body></html>
"""
TEMPLATE = Template(
    subject=SUBJECT, text=TEXT, html=HTML, reply_to="sales@acme.example", headers={"X-Tag": "q4"}
)
CTX = RenderContext(
    campaign_id="launch",
    campaign_name="Launch 2026",
    step=1,
    sender="Acme <outreach@acme.example>",
    marketing=True,
)
SEND_TIME = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def recipients(n: int) -> list[dict[str, str]]:
    return [
        {
            "email": f"user{i}@example{i % 97}.com",
            "first_name": f"Ann{i}",
            "company": f"Company {i} GmbH",
            "city": "Berlin",
            "name": f"Ann Example{i}",
        }
        for i in range(n)
    ]


def unsub(i: int) -> str:
    return f"https://mail.acme.example/u/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g{i}"


def prepared_way() -> Callable[[int, dict[str, str]], bytes]:
    prepared = PreparedTemplate("bench", TEMPLATE, CTX)

    def one(i: int, row: dict[str, str]) -> bytes:
        return prepared.render(
            row,
            to_address=row["email"],
            message_id=make_message_id("acme.example"),
            send_time=SEND_TIME,
            unsubscribe_url=unsub(i),
        ).data

    return one


def naive_way() -> Callable[[int, dict[str, str]], bytes]:
    """What one would write first: render the three parts, let EmailMessage do the rest."""
    text_env = SandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
    html_env = SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=True, keep_trailing_newline=True
    )
    subject, text = text_env.from_string(SUBJECT), text_env.from_string(TEXT)
    html = html_env.from_string(HTML)

    def one(i: int, row: dict[str, str]) -> bytes:
        variables = {
            **row,
            "receiver_email": row["email"],
            "sender": CTX.sender,
            "send_time": SEND_TIME,
            "campaign": CTX.campaign_name,
            "step": 1,
            "unsubscribe_url": unsub(i),
        }
        msg = EmailMessage(policy=email.policy.SMTP)
        msg["Message-ID"] = make_message_id("acme.example")
        msg["Date"] = format_datetime(SEND_TIME)
        msg["From"] = CTX.sender
        msg["To"] = f"{row['name']} <{row['email']}>"
        msg["Subject"] = subject.render(variables)
        msg["Reply-To"] = "sales@acme.example"
        msg["X-Tag"] = "q4"
        msg["List-Unsubscribe"] = f"<{unsub(i)}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        msg.set_content(text.render(variables))
        msg.add_alternative(html.render(variables), subtype="html")
        return msg.as_bytes()

    return one


def same_content(a: bytes, b: bytes) -> None:
    pa = email.message_from_bytes(a, policy=email.policy.default)
    pb = email.message_from_bytes(b, policy=email.policy.default)
    assert str(pa["Subject"]) == str(pb["Subject"]), (pa["Subject"], pb["Subject"])
    assert str(pa["To"]) == str(pb["To"]), (pa["To"], pb["To"])
    bodies = [
        [p.get_content().replace("\r\n", "\n") for p in m.walk() if not p.is_multipart()]
        for m in (pa, pb)
    ]
    assert bodies[0] == bodies[1]


def measure(
    name: str, one: Callable[[int, dict[str, str]], bytes], rows: list[dict[str, str]]
) -> float:
    for i, row in enumerate(rows[:200]):  # warm-up: caches, the allocator
        one(i, row)
    size = 0
    start = time.perf_counter()
    for i, row in enumerate(rows):
        size += len(one(i, row))
    elapsed = time.perf_counter() - start
    n = len(rows)
    print(
        f"{name:<28} {n / elapsed:>10,.0f} messages/s  {elapsed / n * 1e6:>7.1f} µs/message"
        f"  ({size / n:,.0f} bytes each)"
    )
    return elapsed / n


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("n", nargs="?", type=int, default=20_000, help="messages per way")
    args = parser.parse_args(argv)
    rows = recipients(args.n)
    fast, naive = prepared_way(), naive_way()
    same_content(fast(0, rows[0]), naive(0, rows[0]))
    print(f"rendering {args.n:,} text+HTML messages, Python {sys.version.split()[0]}")
    a = measure("(a) PreparedTemplate", fast, rows)
    b = measure("(b) Jinja2 + EmailMessage", naive, rows)
    print(f"PreparedTemplate is {b / a:.1f}× faster")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The daemon is the gate (issue 12), against the daemon as a process: a template swapped
mid-send for one that marketing mail may not carry never goes out, and a render that never
ends cannot keep SIGTERM from stopping the daemon."""

from __future__ import annotations

import email
import email.policy
import signal
import time
from pathlib import Path

import pytest

from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import wait_for

pytestmark = pytest.mark.system

POSTAL = "Acme Inc, 1 Main St, Springfield"
GOOD = (
    "subject: News for {{ first_name }}\n"
    "text: |\n  Hi {{ first_name }}!\n  Unsubscribe: {{ unsubscribe_url }}\n"
    "  {{ postal_address }}\n"
)
NO_LINK = (
    "subject: News for {{ first_name }}\ntext: |\n  Hi {{ first_name }}!\n  {{ postal_address }}\n"
)
NO_ADDRESS = (
    "subject: News for {{ first_name }}\n"
    "text: |\n  Hi {{ first_name }}!\n  Unsubscribe: {{ unsubscribe_url }}\n"
)


def marketing(tmp_path: Path, smtp: RecordingServer, port: int, recipients: int) -> Path:
    return basic_root(
        tmp_path,
        smtp.port,
        recipients=recipients,
        service_extra="rate: 5/second\n",
        extra_files={
            "campaignd.yaml": (
                "timezone: UTC\ndrain_timeout: 10s\n"
                f"http: {{public_url: 'http://127.0.0.1:{port}'}}\n"
            ),
            "templates.d/hello.yaml": GOOD,
            "campaigns.d/news.yaml": (
                f"kind: marketing\npostal_address: '{POSTAL}'\n"
                "audience: lists/people.csv\nservices: [sink]\ntemplate: hello\n"
            ),
        },
    )


def body_of(data: bytes) -> str:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    part = msg.get_body(("plain",))  # type: ignore[attr-defined]
    assert part is not None
    text: str = part.get_content()
    return text


@pytest.mark.parametrize(
    ("swapped", "missing"),
    [(NO_LINK, "unsubscribe_url"), (NO_ADDRESS, "postal address")],
    ids=["no-unsubscribe-link", "no-postal-address"],
)
def test_a_template_swapped_mid_send_for_a_non_compliant_one_is_never_sent(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon, swapped: str, missing: str
) -> None:
    recipients = 25
    daemon = make_daemon(tmp_path)
    marketing(tmp_path, smtp, daemon.port, recipients)
    daemon.start()
    wait_for("a few messages to go", lambda: len(smtp.messages) >= 3)
    # Replaced the way an editor or `git pull` does it: a new file renamed over the old one.
    new = tmp_path / "templates.d/.hello.yaml.tmp"
    new.write_text(swapped)
    new.rename(tmp_path / "templates.d/hello.yaml")
    status = wait_for(
        "the problem to show in /api/status",
        lambda: (s := daemon.get("/api/status"))["load_errors"] and s,
    )
    errors = [e for e in status["load_errors"] if e["severity"] == "error"]
    assert errors, status["load_errors"]
    assert any(missing in e["message"] for e in errors), errors
    for e in status["load_errors"]:
        assert e["file"].endswith(".yaml") and e["line"] >= 1, e
    assert any("last good" in e["message"] for e in status["load_errors"]), status
    sent_at_swap = len(smtp.messages)
    final = daemon.wait_state("news", "completed", timeout=60)
    assert sent_at_swap < recipients, "the swap came too late to prove anything"
    assert final["counts"]["sent"] == recipients
    assert len(smtp.messages) == recipients
    for m in smtp.messages:
        text = body_of(m.data)
        assert f"{daemon.base}/u/" in text, text
        assert POSTAL in text, text
    assert "Traceback" not in daemon.log()


BOMB = (
    "subject: News for {{ first_name }}\n"
    "text: |\n  Hi {{ first_name }}! Unsubscribe: {{ unsubscribe_url }}\n"
    "  {% for i in range(first_name|length * 10000) %}{% for j in range(90000) %}"
    "{{ j }}{% endfor %}{% endfor %}\n"
)


def test_sigterm_while_renders_are_cut_off_stops_within_the_drain_bound(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    """Loops whose size comes from recipient data pass the static check (no constant is too
    big); the render's budget cuts each render off with a reason naming the template, the
    repeats hold the campaign, nothing is sent, and SIGTERM stops the daemon within
    drain_timeout."""
    root = basic_root(
        tmp_path, smtp.port, recipients=30, extra_files={"templates.d/hello.yaml": BOMB}
    )
    daemon = make_daemon(root).start()
    assert daemon.get("/api/status")["load_errors"] == []  # the static check let it through
    # Repeated cut-offs hold the campaign, with a reason naming the template.
    held = daemon.wait_state("news", "paused")
    assert "template hello: rendering cut off" in held["reason"], held
    assert "message 1 not sent: template hello: rendering cut off" in daemon.log()
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    code = daemon.wait_exit(timeout=30)
    took = time.monotonic() - started
    assert took < 10, f"took {took:.1f}s to stop (drain_timeout 10s)"
    assert code == 0, daemon.log()[-3000:]
    assert smtp.messages == []
    assert "Traceback" not in daemon.log()


@pytest.mark.parametrize(
    "template",
    ["subject: Hi {{ first_name|shout }}\ntext: 'x {{ unsubscribe_url }}'\n", None],
    ids=["unknown-filter", "missing"],
)
def test_a_campaign_whose_template_is_broken_is_never_sending_with_a_bare_name(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon, template: str | None
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=3)
    if template is None:
        (root / "templates.d/hello.yaml").unlink()
    else:
        (root / "templates.d/hello.yaml").write_text(template)
    daemon = make_daemon(root).start()
    status = wait_for(
        "the problem in /api/status", lambda: (s := daemon.get("/api/status"))["load_errors"] and s
    )
    where = {f"{e['file']}:{e['line']}" for e in status["load_errors"]}
    assert any(w.startswith(("templates.d/hello.yaml:", "campaigns.d/news.yaml:")) for w in where)
    # Either the campaign is refused with its file (a missing template), or it is shown with
    # a reason that says what to fix — never a bare template name (a KeyError's text).
    news = [c for c in status["campaigns"] if c["id"] == "news"]
    if news:
        reason = wait_for(
            "the campaign's reason", lambda: daemon.campaign("news")["reason"], timeout=10
        )
        assert "templates.d/hello.yaml" in reason, reason
        assert reason.strip("'\"") != "hello"
    else:
        assert any(w.startswith("campaigns.d/news.yaml:") for w in where), where
    assert smtp.messages == []
    assert "Traceback" not in daemon.log()

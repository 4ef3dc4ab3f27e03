"""Time, with the daemon as a process and short durations: drip steps per recipient, unless at
send time, closed windows that report their next opening, continuous enrollment."""

from __future__ import annotations

import asyncio
import time
import urllib.error
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from campaignd.config.model import Window
from campaignd.delivery.conditions import REMOVED_REASON
from campaignd.plan.windows import next_window_open
from campaignd.queue.store import EventIn, Store
from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess, recipients_csv, wait_for

pytestmark = pytest.mark.system

FOLLOW_UP = "subject: Follow-up {{ first_name }}\ntext: |\n  Still there?\n"


def subject(data: bytes) -> str:
    return str(message_from_bytes(data)["Subject"])


def drip_root(root: Path, port: int, *, n: int, after: str, unless: str = "[]", **kw: str) -> Path:
    return basic_root(
        root,
        port,
        recipients=n,
        service_extra=kw.get("service_extra", ""),
        extra_files={
            "templates.d/follow.yaml": FOLLOW_UP,
            "campaigns.d/news.yaml": (
                "kind: transactional\naudience: lists/people.csv\nservices: [sink]\nsteps:\n"
                "  - template: hello\n"
                f"  - after: {after}\n    template: follow\n    unless: {unless}\n"
            ),
        },
    )


def test_two_step_drip_arrives_with_the_stated_gap_per_recipient(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    # 2/second spreads the first step over two seconds, so "after the campaign started" and
    # "after this recipient's first message" give different times.
    root = drip_root(tmp_path, smtp.port, n=6, after="2s", service_extra="rate: 2/second\n")
    daemon = make_daemon(root).start()
    summary = daemon.wait_state("news", "completed")
    assert summary["by_step"]["1"]["sent"] == 6 and summary["by_step"]["2"]["sent"] == 6

    at: dict[str, dict[int, float]] = defaultdict(dict)
    for m in smtp.messages:
        step = 2 if subject(m.data).startswith("Follow-up") else 1
        assert step not in at[m.rcpt_tos[0]], "a step arrived twice"
        at[m.rcpt_tos[0]][step] = m.mail_at
    assert len(at) == 6
    firsts = sorted(s[1] for s in at.values())
    assert firsts[-1] - firsts[0] >= 1.9  # the first step really was spread out
    for rcpt, steps in at.items():
        gap = steps[2] - steps[1]
        # never early; late by at most a pass of the conductor plus the rate limit's queue
        assert 2.0 <= gap <= 2.0 + 3.5, (rcpt, gap)


def _add_event(db: Path, message: int, kind: str) -> None:
    async def go() -> None:
        store = await Store.open(f"sqlite:///{db}", root=db.parent)
        try:
            await store.add_event(
                EventIn(
                    kind=kind,
                    source="test",
                    at=time.time(),
                    message=message,
                    suppress=kind == "unsubscribed",
                )
            )
        finally:
            await store.close()

    asyncio.run(go())


def test_unless_clicked_or_unsubscribed_skips_the_follow_up_at_send_time(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = drip_root(tmp_path, smtp.port, n=3, after="1s", unless="[clicked, unsubscribed]")
    daemon = make_daemon(root).start()
    wait_for(
        "the first step to reach everyone",
        lambda: daemon.campaign("news").get("by_step", {}).get("1", {}).get("sent") == 3,
    )
    # Feedback arrives while the follow-ups wait: hold the campaign so it lands first
    # (the clicks and unsubscribes of a real recipient take longer than a second).
    daemon.post("/api/campaigns/news/pause")
    first = {r["recipient"]: r["id"] for r in daemon.messages("news") if r["step"] == 1}
    db = root / "state" / "campaignd.db"
    _add_event(db, first["user0@example.com"], "clicked")
    _add_event(db, first["user1@example.com"], "unsubscribed")
    daemon.post("/api/campaigns/news/resume")

    summary = daemon.wait_state("news", "completed")
    assert summary["by_step"]["2"]["skipped"] == 2 and summary["by_step"]["2"]["sent"] == 1
    second = {r["recipient"]: r for r in daemon.messages("news") if r["step"] == 2}
    assert second["user0@example.com"]["status"] == "skipped"
    assert second["user0@example.com"]["last_error"].startswith("unless: clicked")
    # the unsubscribe also suppressed the address, but the step's own condition is the reason
    assert second["user1@example.com"]["status"] == "skipped"
    assert second["user1@example.com"]["last_error"].startswith("unless: unsubscribed")
    assert second["user2@example.com"]["status"] == "sent"
    got = Counter(m.rcpt_tos[0] for m in smtp.messages)
    assert got == {"user0@example.com": 1, "user1@example.com": 1, "user2@example.com": 2}


def _parked(daemon: DaemonProcess, cid: str, after: float) -> bool:
    """Every message went back to the queue to wait (the dispatcher has looked at each)."""
    try:
        daemon_messages = daemon.messages(cid)
    except urllib.error.HTTPError:
        return False  # the campaign has no record yet
    return bool(daemon_messages) and all(
        m["status"] == "queued"
        and isinstance(m["next_attempt_at"], str)
        and datetime.fromisoformat(m["next_attempt_at"]).timestamp() > after
        for m in daemon_messages
    )


def test_a_closed_window_sends_nothing_and_reports_the_next_opening(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    today = datetime.now(UTC).date()
    # Closed today whatever the zone: every local date from two days ago to two days ahead.
    closed = [today + timedelta(days=d) for d in range(-2, 3)]
    dates = ", ".join(d.isoformat() for d in closed)
    people = "email,first_name,timezone\n" + "".join(
        f"{n}@example.com,{n},{z}\n"
        for n, z in (("tokyo", "Asia/Tokyo"), ("la", "America/Los_Angeles"), ("none", ""))
    )
    root = basic_root(
        tmp_path,
        smtp.port,
        extra_files={
            "lists/zones.csv": people,
            "campaigns.d/news.yaml": (
                "kind: transactional\naudience: lists/people.csv\nservices: [sink]\n"
                f"template: hello\nwindow: {{hours: '09:00-17:00', timezone: Europe/Berlin, "
                f"except_dates: [{dates}]}}\n"
            ),
            "campaigns.d/local.yaml": (
                "kind: transactional\naudience: lists/zones.csv\nservices: [sink]\n"
                f"template: hello\nwindow: {{hours: '09:00-17:00', timezone: recipient, "
                f"fallback_timezone: America/New_York, except_dates: [{dates}]}}\n"
            ),
        },
    )
    started = time.time()
    daemon = make_daemon(root).start()
    for cid in ("news", "local"):
        wait_for(f"{cid}'s messages to wait for the window", lambda c=cid: _parked(
            daemon, c, started + 60))  # fmt: skip
    assert smtp.messages == []

    now = datetime.now(UTC)
    fixed = Window.model_validate(
        {"hours": "09:00-17:00", "timezone": "Europe/Berlin", "except_dates": closed}
    )
    news = daemon.campaign("news")
    assert news["state"] == "sending" and news["counts"]["queued"] == 20
    assert news["window_open"] is False
    expected = next_window_open(fixed, now, ZoneInfo("Europe/Berlin"))
    assert expected is not None and news["next_window"] == expected.isoformat()
    assert datetime.fromisoformat(news["next_window"]).astimezone(
        ZoneInfo("Europe/Berlin")
    ).date() == today + timedelta(days=3)

    # Per recipient: the earliest opening among their zones (the fallback for "none").
    local = daemon.campaign("local")
    per_zone = [
        next_window_open(fixed, now, ZoneInfo(z))
        for z in ("Asia/Tokyo", "America/Los_Angeles", "America/New_York")
    ]
    assert local["window_open"] is None
    assert local["next_window"] == min(z for z in per_zone if z is not None).isoformat()
    assert smtp.messages == []


def test_continuous_enrollment_takes_new_rows_once_and_skips_removed_ones(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(
        tmp_path,
        smtp.port,
        recipients=8,
        service_extra="rate: 1/second\n",
        campaign_extra="enroll: continuous\n",
    )
    daemon = make_daemon(root).start()
    wait_for("two messages to go", lambda: len(smtp.messages) >= 2)
    # user7 would go last, in about six seconds: remove it, and add a new row
    lines = recipients_csv(8).splitlines(keepends=True)
    (root / "lists/people.csv").write_text("".join(lines[:-1]) + "new@example.com,New\n")
    summary = daemon.wait_state("news", "waiting", timeout=60)
    assert summary["counts"]["sent"] == 8 and summary["counts"]["skipped"] == 1
    rows = {r["recipient"]: r for r in daemon.messages("news")}
    assert rows["user7@example.com"]["status"] == "skipped"
    assert rows["user7@example.com"]["last_error"] == REMOVED_REASON
    assert rows["new@example.com"]["status"] == "sent"

    # touched again without a change, and then a row appended: each row once, ever
    reads = daemon.log().count("campaign news: enrolled")
    (root / "lists/people.csv").write_text((root / "lists/people.csv").read_text())
    wait_for(
        "the list to be read again", lambda: daemon.log().count("campaign news: enrolled") > reads
    )
    with (root / "lists/people.csv").open("a") as f:
        f.write("later@example.com,Later\n")
    wait_for("the appended row to be sent", lambda: any(
        "later@example.com" in m.rcpt_tos for m in smtp.messages))  # fmt: skip
    daemon.wait_state("news", "waiting")
    got = Counter(r for m in smtp.messages for r in m.rcpt_tos)
    assert set(got.values()) == {1}
    assert "user7@example.com" not in got
    assert set(got) == {f"user{i}@example.com" for i in range(7)} | {
        "new@example.com",
        "later@example.com",
    }

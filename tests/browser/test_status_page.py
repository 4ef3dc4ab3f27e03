"""The status page in a real headless Chromium: it asks for the API token, shows a running
campaign's progress reach 100 %, and its pause button pauses a rate-limited campaign."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.integration.smtp.servers import RecordingServer
from tests.system.conftest import MakeDaemon, basic_root
from tests.system.harness import recipients_csv

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
FILES = {
    "templates.d/intro-a.yaml": "subject: A {{ first_name }}\ntext: 'Hi {{ first_name }}'\n",
    "templates.d/intro-b.yaml": "subject: B {{ first_name }}\ntext: 'Hello {{ first_name }}'\n",
    "campaigns.d/news.yaml": (
        "name: December newsletter\nkind: transactional\naudience: lists/people.csv\n"
        "services: [sink]\ntemplate: [intro-a, intro-b]\nrate: 8/second\n"
    ),
    "campaigns.d/slow.yaml": (
        "name: Partner outreach\nkind: transactional\naudience: lists/partners.csv\n"
        "services: [sink]\ntemplate: hello\nrate: 2/minute\n"
    ),
    "lists/partners.csv": recipients_csv(12, domain="partners.example"),
}


# The page swaps its live part every two seconds: read it in one script call, never through
# element handles that a refresh may have replaced.
SNAPSHOT = """
const s = document.getElementById("campaign-" + arguments[0]);
if (!s) return null;
const bar = s.querySelector("progress");
return {state: s.dataset.state, pct: Number(s.querySelector(".pct").dataset.pct),
        progress: Number(bar.value), max: Number(bar.max), text: s.innerText,
        actions: [...s.querySelectorAll("button[data-action]")].map((b) => b.dataset.action)};
"""
PRESS = """
const b = document.querySelector(
  "#campaign-" + arguments[0] + " button[data-action='" + arguments[1] + "']");
if (!b) return false;
b.click();
return true;
"""


def campaign(browser: Any, cid: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = browser.execute_script(SNAPSHOT, cid)
    return found


def press(browser: Any, cid: str, action: str) -> bool:
    """Click the button as a user does (a real click event, handled by the page's script)."""
    return bool(browser.execute_script(PRESS, cid, action))


def test_progress_to_100_and_pause_in_a_real_browser(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root = basic_root(
        tmp_path, smtp.port, recipients=40, service_extra="rate: 20/second\n", extra_files=FILES
    )
    smtp.reply("rcpt", "550 5.1.1 <user7@example.com>: no such user", address="user7@example.com")
    daemon = make_daemon(root).start()
    assert daemon.token

    browser.get(daemon.base + "/")
    wait = WebDriverWait(browser, 30, poll_frequency=0.1)
    # The page cannot receive a header on navigation: it asks for the token first.
    token_input = wait.until(lambda b: b.find_element(By.ID, "token"))
    assert token_input.is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, "section.campaign")
    token_input.send_keys(daemon.token)
    browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()

    # news sends 40 messages at 8/second: the page refreshes itself while it runs
    seen: list[int] = []

    def news_pct(b: Any) -> int | None:
        c = campaign(b, "news")
        if c is None:
            return None
        if not seen or seen[-1] != c["pct"]:
            seen.append(c["pct"])
        return int(c["pct"])

    wait.until(lambda b: news_pct(b) is not None)
    assert browser.execute_script("return sessionStorage.getItem('campaignd-api-token')")
    assert browser.get_cookies() == []  # the token never travels in a cookie
    WebDriverWait(browser, 60, poll_frequency=0.1).until(lambda b: news_pct(b) == 100)
    assert seen[0] < 100, seen  # the page was there while the campaign ran
    assert seen == sorted(seen), seen
    news = wait.until(lambda b: (c := campaign(b, "news")) and c["state"] == "completed" and c)
    assert news["progress"] == 40 and news["max"] == 40
    assert "user7@example.com" in news["text"]  # the bounce is among the last errors
    assert "December newsletter" in news["text"]

    # pause the rate-limited campaign with its button; the page shows the new state
    slow = wait.until(lambda b: campaign(b, "slow"))
    assert slow["state"] == "sending" and slow["actions"] == ["pause", "stop"]
    wait.until(lambda b: press(b, "slow", "pause"))
    slow = wait.until(lambda b: (c := campaign(b, "slow")) and c["state"] == "paused" and c)
    assert daemon.campaign("slow")["state"] == "paused"  # the real thing, not just the DOM
    assert daemon.campaign("slow")["reason"] == "paused by operator"
    assert slow["actions"] == ["resume", "stop"]
    assert "paused by operator" in slow["text"]

    # no CSP violation or script error happened along the way
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors

    shot = tmp_path / "status-page.png"
    browser.set_window_size(1280, 1000)
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("CAMPAIGND_UPDATE_SCREENSHOT"):  # refresh the README's picture
        shutil.copyfile(shot, REPO / "docs" / "status-page.png")

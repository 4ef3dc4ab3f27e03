"""Live reload: the watcher (in-process, real inotify) and the daemon as a process picking up
new, changed, broken and deleted files, SIGHUP, and the systemd unit's ExecReload."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from campaignd.config.load import config_stamps
from campaignd.runtime.watcher import Watcher, classify
from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess, wait_for

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "campaignd.service"


# ---------------------------------------------------------------- the watcher, in-process


def test_classify_keeps_to_config_and_audience_files(tmp_path: Path) -> None:
    root = tmp_path
    lists = {str(root / "lists/a.csv"), "/srv/shared/b.csv"}
    assert classify(root, lists, str(root / "campaignd.yaml")) == "config"
    assert classify(root, lists, str(root / "campaigns.d/news.yaml")) == "config"
    assert classify(root, lists, str(root / "templates.d/body.html.j2")) == "config"
    assert classify(root, lists, str(root / "services.d")) == "config"  # a directory event
    assert classify(root, lists, str(root / "lists/a.csv")) == "audience"
    assert classify(root, lists, "/srv/shared/b.csv") == "audience"
    for quiet in (
        "campaigns.d/.news.yaml.swp",
        "campaigns.d/news.yaml~",
        "state/campaignd.db-wal",
        "lists/other.csv",
        "daemon.log",
        ".git/index",
    ):
        assert classify(root, lists, str(root / quiet)) is None, quiet


def _root(tmp_path: Path) -> Path:
    for d in ("services.d", "templates.d", "campaigns.d", "lists"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "campaignd.yaml").write_text("timezone: UTC\n")
    return tmp_path


async def _watcher(root: Path, **kw: Any) -> tuple[Watcher, asyncio.Queue[str]]:
    events: asyncio.Queue[str] = asyncio.Queue()
    watcher = Watcher(
        root,
        reload=lambda why: events.put_nowait(f"reload:{why}"),
        audience_changed=lambda: events.put_nowait("audience"),
        stamps=lambda: config_stamps(root),
        **kw,
    )
    watcher.loaded(config_stamps(root))
    await watcher.start()
    return watcher, events


async def test_a_burst_of_file_changes_is_one_reload(tmp_path: Path) -> None:
    root = _root(tmp_path)
    watcher, events = await _watcher(root, debounce=0.3, max_delay=5.0, rescan=60)
    try:
        for i in range(25):  # like a git pull: many files, one after the other
            (root / "campaigns.d" / f"c{i}.yaml").write_text(f"name: c{i}\n")
            (root / "templates.d" / f"t{i}.yaml").write_text("subject: x\n")
        assert await asyncio.wait_for(events.get(), 10) == "reload:files changed"
        # nothing else was pending: a second reload could only come from a new change
        (root / "services.d" / "s.yaml").write_text("host: a\n")
        assert await asyncio.wait_for(events.get(), 10) == "reload:files changed"
        assert watcher.reloads == 2
    finally:
        await watcher.stop()


async def test_reading_the_files_and_writing_elsewhere_does_not_reload(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "campaigns.d" / "c.yaml").write_text("name: c\n")
    watcher, events = await _watcher(root, debounce=0.1, max_delay=1.0, rescan=60)
    try:
        (root / "campaigns.d" / "c.yaml").read_text()  # the daemon's own load reads them
        (root / "state").mkdir()
        (root / "state" / "campaignd.db").write_bytes(b"x" * 100)
        (root / "campaigns.d" / ".c.yaml.swp").write_text("vim")
        # a change that does count, written last: the first event must be this one
        (root / "lists" / "a.csv").write_text("email\n")
        watcher.watch_audience([root / "lists" / "a.csv"])
        (root / "lists" / "a.csv").write_text("email\nx@example.com\n")
        assert await asyncio.wait_for(events.get(), 10) == "audience"
        assert watcher.reloads == 0
    finally:
        await watcher.stop()


async def test_an_audience_file_outside_the_root_is_watched(tmp_path: Path) -> None:
    root = _root(tmp_path / "root")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "people.csv").write_text("email\n")
    watcher, events = await _watcher(root, debounce=0.1, max_delay=1.0, rescan=60)
    try:
        watcher.watch_audience([shared / "people.csv"])
        (shared / "people.csv").write_text("email\nnew@example.com\n")
        assert await asyncio.wait_for(events.get(), 10) == "audience"
    finally:
        await watcher.stop()


async def test_the_rescan_finds_a_change_no_event_reported(tmp_path: Path) -> None:
    root = _root(tmp_path)
    (root / "campaigns.d" / "c.yaml").write_text("name: c\n")
    watcher, events = await _watcher(root, observe=False, rescan=0.1)  # the OS says nothing
    try:
        assert await asyncio.wait_for(events.get(), 10) == "audience"  # a rescan, no change
        (root / "campaigns.d" / "c.yaml").write_text("name: changed\n")
        while (got := await asyncio.wait_for(events.get(), 10)) == "audience":
            pass
        assert got == "reload:rescan"
    finally:
        await watcher.stop()


# ---------------------------------------------------------------- the daemon


def received(server: RecordingServer) -> Counter[str]:
    return Counter(r for m in server.messages for r in m.rcpt_tos)


def known(daemon: DaemonProcess, cid: str) -> bool:
    return any(c["id"] == cid for c in daemon.get("/api/campaigns"))


def generation(daemon: DaemonProcess) -> int:
    return int(daemon.get("/api/status")["config"]["generation"])


def test_a_campaign_file_dropped_into_campaigns_d_is_sent(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=3)
    daemon = make_daemon(root).start()
    daemon.wait_state("news", "completed")
    pid = daemon.proc.pid if daemon.proc else None
    (root / "lists/more.csv").write_text(
        "email,first_name\nnew1@example.com,A\nnew2@example.com,B\n"
    )
    (root / "campaigns.d/more.yaml").write_text(
        "kind: transactional\naudience: lists/more.csv\nservices: [sink]\ntemplate: hello\n"
    )
    wait_for("the new file to be loaded", lambda: known(daemon, "more"))
    daemon.wait_state("more", "completed")
    assert set(received(smtp)) >= {"new1@example.com", "new2@example.com"}
    assert sum(received(smtp).values()) == 5
    assert daemon.proc is not None and daemon.proc.pid == pid  # no restart
    assert generation(daemon) >= 2
    assert "campaigns +more" in daemon.log()


def test_a_broken_file_keeps_its_last_good_version_sending_and_shows_the_error(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=16, service_extra="rate: 4/second\n")
    good = (root / "campaigns.d/news.yaml").read_text()
    daemon = make_daemon(root).start()
    wait_for("a few messages to go", lambda: len(smtp.messages) >= 3)
    (root / "campaigns.d/news.yaml").write_text(good + "steps: [oops\n")
    status = wait_for(
        "the error to show in /api/status",
        lambda: (s := daemon.get("/api/status"))["load_errors"] and s,
    )
    errors = [e for e in status["load_errors"] if e["file"] == "campaigns.d/news.yaml"]
    assert errors and errors[0]["line"] >= 1 and errors[0]["severity"] == "error"
    sent_when_broken = daemon.campaign("news")["counts"]["sent"]
    # the last good version keeps sending: not paused, not stopped, still progressing
    summary = wait_for(
        "sending to go on",
        lambda: (c := daemon.campaign("news"))["counts"]["sent"] > sent_when_broken + 2 and c,
    )
    assert summary["state"] in ("sending", "completed")
    assert "campaign news has errors: its last good version stays in force" in daemon.log()

    (root / "campaigns.d/news.yaml").write_text(good)
    wait_for("the error to clear", lambda: not daemon.get("/api/status")["load_errors"])
    daemon.wait_state("news", "completed")
    got = received(smtp)
    assert len(got) == 16 and set(got.values()) == {1}


def test_a_deleted_campaign_file_pauses_it_and_its_return_resumes_it(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(
        tmp_path, smtp.port, recipients=4, campaign_extra="window: {days: [], hours: null}\n"
    )
    text = (root / "campaigns.d/news.yaml").read_text()
    daemon = make_daemon(root).start()
    daemon.wait_state("news", "sending")  # but the window never opens
    (root / "campaigns.d/news.yaml").unlink()
    paused = daemon.wait_state("news", "paused")
    assert paused["reason"].startswith("file removed")
    assert paused["total"] == 4 and paused["in_config"] is False  # records kept
    (root / "campaigns.d/news.yaml").write_text(text)
    assert daemon.wait_state("news", "sending")["reason"] is None
    assert smtp.messages == []


def test_sighup_reloads_at_once(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=1)
    daemon = make_daemon(root).start()
    before = daemon.get("/api/status")["config"]
    daemon.signal(signal.SIGHUP)  # nothing changed on disk: only the signal can reload
    after = wait_for(
        "the SIGHUP reload",
        lambda: (
            (c := daemon.get("/api/status")["config"])["generation"] > before["generation"] and c
        ),
    )
    assert after["generation"] == before["generation"] + 1
    assert after["loaded_at"] > before["loaded_at"]
    # the generation is published a moment before the reload's log line is written
    wait_for("the reload's log line", lambda: "(SIGHUP): no object changed" in daemon.log())
    assert daemon.proc is not None and daemon.proc.poll() is None


def test_a_rate_changed_in_a_service_file_applies_without_restart(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(tmp_path, smtp.port, recipients=14, service_extra="rate: 1/second\n")
    service = (root / "services.d/sink.yaml").read_text()
    daemon = make_daemon(root).start()
    wait_for("three messages at 1/second", lambda: len(smtp.messages) >= 3)
    changed_at = time.time()
    (root / "services.d/sink.yaml").write_text(service.replace("1/second", "50/second"))
    daemon.wait_state("news", "completed")
    starts = sorted(m.mail_at for m in smtp.messages)
    assert len(starts) == 14
    assert starts[2] - starts[0] >= 1.9  # the old rate held before the change
    # at 1/second the rest would take another ~10 s
    assert starts[-1] - changed_at < 5.0
    assert "services ~sink" in daemon.log()


# ---------------------------------------------------------------- systemd


def _unit_value(key: str) -> str:
    values = re.findall(rf"^{key}=(.*)$", UNIT.read_text(), flags=re.M)
    assert len(values) == 1, f"{key}= must appear once in {UNIT.name}"
    return values[0].strip()


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("systemd-analyze is missing: .ci/system-deps.sh installs Debian's systemd")
        pytest.skip("systemd-analyze is not installed (Debian: apt-get install systemd)")
    # The unit runs /opt/campaignd/.venv/bin/campaignd; verify checks that it exists, so the
    # copy under test points at this checkout's entry point instead — nothing else changes.
    entry = Path(sys.executable).with_name("campaignd")
    assert entry.exists()
    text = UNIT.read_text()
    assert "/opt/campaignd/.venv/bin/campaignd" in text
    copy = tmp_path / "campaignd.service"
    copy.write_text(text.replace("/opt/campaignd/.venv/bin/campaignd", str(entry)))
    result = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "campaignd" in line
    ]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


def test_the_units_exec_reload_makes_the_daemon_reload(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    command = _unit_value("ExecReload")
    root = basic_root(tmp_path, smtp.port, recipients=1)
    daemon = make_daemon(root).start()
    assert daemon.proc is not None
    before = generation(daemon)
    # As systemd runs it: $MAINPID is the daemon's pid; a leading "-" etc. are prefixes.
    argv = shlex.split(command.replace("$MAINPID", str(daemon.proc.pid)).lstrip("-@+!:"))
    subprocess.run(argv, check=True, timeout=30)
    wait_for("the reload", lambda: generation(daemon) == before + 1)
    # the generation is set a moment before the reload's log line is written
    wait_for("the reload's log line", lambda: "(SIGHUP)" in daemon.log())

"""Live reload: the daemon as a process picking up new, changed, broken and deleted files,
SIGHUP, and the systemd unit's ExecReload (the watcher itself: tests/unit/runtime)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess, wait_for

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "campaignd.service"


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


def test_a_fifo_and_an_alias_bomb_dropped_into_the_root_never_stall_the_daemon(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    """Unsafe files reach a running daemon through its reload: each is a load error naming the
    file, /healthz keeps answering, and the campaign goes on with what was good."""
    root = basic_root(tmp_path, smtp.port, recipients=12, service_extra="rate: 4/second\n")
    daemon = make_daemon(root).start()
    wait_for("a first message", lambda: len(smtp.messages) >= 1)
    os.mkfifo(root / "templates.d/pipe.yaml")
    (root / "campaigns.d/bomb.yaml").write_text(
        'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
        "b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
        "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
        "f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n"
    )
    status = wait_for(
        "both files to be reported",
        lambda: (
            (s := daemon.get("/api/status"))
            and {e["file"] for e in s["load_errors"]}
            >= {"templates.d/pipe.yaml", "campaigns.d/bomb.yaml"}
            and s
        ),
    )
    by_file = {e["file"]: e["message"] for e in status["load_errors"]}
    assert "FIFO" in by_file["templates.d/pipe.yaml"]
    assert daemon.get("/healthz")["ok"] is True
    daemon.wait_state("news", "completed")
    assert sum(received(smtp).values()) == 12

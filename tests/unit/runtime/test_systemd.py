"""The sd_notify client and the journald progress lines (pure, plus a real datagram socket)."""

from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path

from campaignd.runtime.systemd import Notifier, progress_lines, status_line


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert n.send(READY="1") is False
    assert n.watchdog_interval is None


def test_watchdog_is_for_the_main_process_only() -> None:
    assert Notifier.from_env({"WATCHDOG_USEC": "4000000"}).watchdog_interval == 2.0
    other = {"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(other).watchdog_interval is None


def test_messages_arrive_as_key_value_lines(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        n = Notifier.from_env({"NOTIFY_SOCKET": str(path)})
        n.ready("1 campaigns sending")
        assert sock.recv(1024) == b"READY=1\nSTATUS=1 campaigns sending"
        n.stopping()
        assert sock.recv(1024).startswith(b"STOPPING=1\n")
        n.close()


def test_a_vanished_socket_is_not_fatal(tmp_path: Path) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.send(READY="1") is False


def test_progress_lines_report_only_what_changed() -> None:
    before = Counter({("news", "sink", "sent"): 10})
    now = Counter(
        {("news", "sink", "sent"): 25, ("news", "relay", "sent"): 5,
         ("news", "sink", "deferred"): 2, ("idle", "sink", "sent"): 3}
    )  # fmt: skip
    before[("idle", "sink", "sent")] = 3
    assert progress_lines(before, now, 10.0) == [
        "campaign news: 2 deferred, 20 sent in the last 10s"
    ]
    assert progress_lines(now, now, 10.0) == []


def test_status_line_mentions_problems_only_when_there_are_some() -> None:
    assert status_line(3, 1, 40, 0) == "1 campaigns sending, 3 messages in flight, 40 sent"
    assert status_line(0, 0, 0, 2).endswith("; 2 config problems")

"""sd_notify as systemd would see it: a real NOTIFY_SOCKET datagram socket made by the test,
the daemon as a process sending READY, WATCHDOG, RELOADING/READY and STOPPING to it."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root

pytestmark = pytest.mark.system


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(20)
    yield sock, path
    sock.close()


def next_message(sock: socket.socket, wanted: str) -> dict[str, str]:
    """The next datagram carrying ``wanted`` (others, e.g. watchdog pings, are skipped)."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        data = sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
        if wanted in fields:
            return fields
    raise AssertionError(f"no {wanted} notification within 20 s")


def test_ready_watchdog_reload_and_stopping_reach_the_notify_socket(
    tmp_path: Path,
    smtp: RecordingServer,
    make_daemon: MakeDaemon,
    notify_socket: tuple[socket.socket, Path],
) -> None:
    sock, path = notify_socket
    root = basic_root(tmp_path / "root", smtp.port, recipients=3)
    daemon = make_daemon(root, env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}).start(
        wait=False
    )

    ready = next_message(sock, "READY")
    assert ready["READY"] == "1"
    assert "campaigns sending" in ready["STATUS"]
    # READY comes after the API is up: it answers at once
    assert daemon.get("/healthz")["ok"] is True
    assert next_message(sock, "WATCHDOG")["WATCHDOG"] == "1"  # pinged every 0.5 s

    daemon.signal(signal.SIGHUP)
    reloading = next_message(sock, "RELOADING")
    assert reloading["RELOADING"] == "1" and int(reloading["MONOTONIC_USEC"]) > 0
    assert next_message(sock, "READY")["READY"] == "1"

    daemon.signal(signal.SIGTERM)
    assert next_message(sock, "STOPPING")["STOPPING"] == "1"
    assert daemon.wait_exit() == 0

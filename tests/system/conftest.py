"""Fixtures for system tests: a config root, real SMTP servers, campaignd processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.smtp.servers import RecordingServer

from .harness import TEMPLATE, DaemonProcess, recipients_csv, write_root

MakeDaemon = Callable[..., DaemonProcess]


@pytest.fixture
def smtp() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    yield server
    server.release()
    server.stop()


@pytest.fixture
def make_daemon() -> Iterator[MakeDaemon]:
    """DaemonProcesses that are stopped (SIGTERM, then SIGKILL) at teardown, by PID."""
    started: list[DaemonProcess] = []

    def make(root: Path, **kwargs: Any) -> DaemonProcess:
        d = DaemonProcess(root, **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


def basic_root(
    root: Path,
    smtp_port: int,
    *,
    recipients: int = 20,
    service_extra: str = "",
    campaign_extra: str = "",
    extra_files: dict[str, str] | None = None,
) -> Path:
    files = {
        "campaignd.yaml": "timezone: UTC\ndrain_timeout: 10s\n",
        "services.d/sink.yaml": (
            f'from: "Acme <news@acme.test>"\nhost: 127.0.0.1\nport: {smtp_port}\n'
            f"security: none\ntimeout: 5s\nmax_connections: 2\n"
            f"retry: {{backoff: 1s, max_backoff: 2s, give_up_after: 1h}}\n{service_extra}"
        ),
        "templates.d/hello.yaml": TEMPLATE,
        "campaigns.d/news.yaml": (
            "kind: transactional\naudience: lists/people.csv\nservices: [sink]\n"
            f"template: hello\n{campaign_extra}"
        ),
        "lists/people.csv": recipients_csv(recipients),
    }
    files.update(extra_files or {})
    return write_root(root, files)

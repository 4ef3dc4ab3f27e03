"""The daemon as a process while its database goes away: PostgreSQL stopped for a while in the
middle of a send. /healthz tells the truth (503 with the reason, then 200 again), sending
resumes by itself, nothing is lost and nothing is sent twice."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.smtp.servers import RecordingServer
from tests.integration.store.postgres import Cluster

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess, wait_for

pytestmark = pytest.mark.system


def healthz(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(daemon.base + "/healthz", timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_postgresql_outage_mid_send_is_weather(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon, pg_cluster: Cluster
) -> None:
    url = asyncio.run(pg_cluster.create_database())
    root = basic_root(tmp_path, smtp.port, recipients=60, service_extra="rate: 6/second\n")
    daemon = make_daemon(root, database=url).start()
    wait_for("a few messages to go", lambda: len(smtp.messages) >= 6)
    pg_cluster.stop()
    try:
        _, body = wait_for(
            "/healthz to say the database is away",
            lambda: (h := healthz(daemon))[0] == 503 and h,
            timeout=30,
        )
        assert body["ok"] is False
        assert body["reason"].startswith("database"), body
    finally:
        pg_cluster.start()
    wait_for("/healthz to be ok again", lambda: healthz(daemon)[0] == 200, timeout=60)
    daemon.wait_state("news", "completed")
    got = Counter(r for m in smtp.messages for r in m.rcpt_tos)
    counts = daemon.campaign("news")["counts"]
    assert counts["sending"] == 0 and counts["queued"] == 0
    # Nothing lost: every recipient arrived, or is reported uncertain (it may have arrived);
    # nothing sent twice.
    assert len(got) + counts["uncertain"] >= 60
    assert set(got.values()) == {1}
    assert "usable again" in daemon.log()


def test_a_killed_daemons_claims_go_to_the_survivor_within_the_heartbeat_timeout(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon, pg_cluster: Cluster
) -> None:
    """Two daemons on one PostgreSQL; one is SIGKILLed mid-send. The survivor settles its
    claims once its heartbeat is stale (~30 s, not the 600 s lease): rows it had not started
    are sent by the survivor, the ones it was sending are uncertain, nothing is sent twice."""
    url = asyncio.run(pg_cluster.create_database())
    root = basic_root(tmp_path, smtp.port, recipients=60, service_extra="rate: 4/second\n")
    first = make_daemon(root, database=url).start()
    wait_for("the first daemon to send", lambda: len(smtp.messages) >= 3)
    second = make_daemon(root, database=url).start()
    first.kill()
    summary = second.wait_state("news", "completed", timeout=150)
    counts = summary["counts"]
    got = Counter(r for m in smtp.messages for r in m.rcpt_tos)
    assert counts["sending"] == 0 and counts["queued"] == 0
    assert counts["uncertain"] <= 2  # at most the dead daemon's sessions in flight
    assert len(got) + counts["uncertain"] >= 60  # nothing lost
    assert set(got.values()) == {1}  # nothing sent twice
    assert "stopped sending heartbeats" in second.log()

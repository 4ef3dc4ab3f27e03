"""Two daemons on one real PostgreSQL database share their limits (issue 13, item 5),
measured where it counts: MAIL FROM arrivals at a real aiosmtpd server."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.smtp.pacing import most_in_window, pacing_root
from tests.integration.smtp.servers import RecordingServer
from tests.integration.store.postgres import Cluster

from .conftest import MakeDaemon
from .harness import DaemonProcess, wait_for

pytestmark = [pytest.mark.system, pytest.mark.postgres]

CAP = 30
SESSIONS = 4


def sent_by(daemon: DaemonProcess) -> int:
    """What this process itself recorded as sent (its /metrics counter, not the database)."""
    req = urllib.request.Request(daemon.base + "/metrics")
    req.add_header("Authorization", f"Bearer {daemon.token}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        text = resp.read().decode()
    found = re.findall(r'messages_total\{[^}]*status="sent"[^}]*\} (\d+(?:\.\d+)?)', text)
    return int(sum(float(n) for n in found))


def test_two_daemons_share_a_pace_and_a_warmup_cap(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon, pg_cluster: Cluster
) -> None:
    url = asyncio.run(pg_cluster.create_database())
    root = pacing_root(
        tmp_path, smtp.port, recipients=CAP * 2, rate="10/second", max_connections=SESSIONS
    )
    with (root / "services.d/relay.yaml").open("a") as f:
        f.write(f"warmup: {{start: {CAP}, until: {CAP}}}\n")
    first = make_daemon(root, database=url).start()
    second = make_daemon(root, database=url).start()
    wait_for("the warm-up cap to be reached", lambda: len(smtp.messages) >= CAP)
    reached = time.monotonic()
    # Nothing more may come today; give both daemons a few of their 0.5-s re-checks to try.
    time.sleep(2.5)
    arrivals = sorted(m.mail_at for m in smtp.messages)
    # Each daemon alone would allow 10/second and 30 today; together they hold the sum.
    assert most_in_window(arrivals, 1.0) <= 10, arrivals
    assert most_in_window(arrivals, 0.3) <= 4, arrivals
    # The cap is counted from the database: past it by at most the other daemon's transactions
    # in flight (a few milliseconds each at this relay).
    assert CAP <= len(arrivals) <= CAP + SESSIONS, len(arrivals)
    assert arrivals[-1] - arrivals[0] >= (CAP - 1) * 0.1 - 0.05  # paced, not a burst
    assert time.monotonic() - reached >= 2.5
    # Both sent: the limits were shared, not one daemon idle.
    mine, theirs = sent_by(first), sent_by(second)
    rcpts = sorted(r for m in smtp.messages for r in m.rcpt_tos)
    rows = {r["status"] for r in first.messages("news")}
    assert len(set(rcpts)) == len(rcpts), rcpts  # none twice
    assert mine + theirs == len(arrivals) and mine > 0 and theirs > 0, (mine, theirs, rows)
    for d in (first, second):  # every daemon's, from the database, even while idle
        wait_for(
            "sent_today to count both daemons",
            lambda d=d: (
                d.get("/api/status")["services"]["relay"]["warmup"]["sent_today"] == len(arrivals)
            ),
            timeout=10,
        )

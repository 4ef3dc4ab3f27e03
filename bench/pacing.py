"""Pacing at the wire: campaignd sending to a local aiosmtpd server that records when each
MAIL FROM arrives; for a few limits, the worst count in any window of the limit's period
against the limit, and the achieved rate against it — for one daemon (SQLite) and for two
daemons sharing one PostgreSQL database (the limits are shared: their sum must hold). Then two
daemons under one warm-up cap: messages accepted against the cap.

Run: ``.venv/bin/python bench/pacing.py [--seconds S] [--daemons 1,2]``. Each limit sends about
``S`` seconds of mail (default 12). The goal (issue 13): the worst window never above the
limit, and the achieved rate within 2 % of it. The achieved rate is (arrivals − burst) /
(last − first): the burst goes at once, then one every period/N. Two daemons need PostgreSQL
server binaries: a throwaway cluster is started as the tests do (tests/integration/store).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

HOST = "127.0.0.1"
TOKEN = "bench-token-0123456789"
# (rate as written in the service file, messages per second, period, limit count, burst)
LIMITS = [
    ("10/second", 10.0, 1.0, 10, 1),
    ("50/second", 50.0, 1.0, 50, 1),
    ("120/minute", 2.0, 60.0, 120, 1),
    ("{limit: 20/second, burst: 10}", 20.0, 1.0, 20, 10),
]


class Recorder:
    """aiosmtpd handler: accepts everything, keeps MAIL FROM arrival times."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.lock = threading.Lock()

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        with self.lock:
            self.arrivals.append(time.time())
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 2.0.0 Ok"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def api(port: int, path: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://{HOST}:{port}{path}")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        result: dict[str, Any] = json.loads(resp.read())
        return result


def write_root(root: Path, smtp_port: int, rate: str, messages: int, extra: str = "") -> None:
    for sub in ("services.d", "templates.d", "campaigns.d", "lists"):
        (root / sub).mkdir(parents=True)
    (root / "campaignd.yaml").write_text("timezone: UTC\n")
    (root / "services.d/relay.yaml").write_text(
        f'from: "Bench <bench@acme.test>"\nhost: {HOST}\nport: {smtp_port}\nsecurity: none\n'
        f"max_connections: 8\nmessages_per_connection: 1000\nrate: {rate}\n{extra}"
    )
    (root / "templates.d/t.yaml").write_text('subject: "Hello {{ first_name }}"\ntext: Hi!\n')
    (root / "campaigns.d/bench.yaml").write_text(
        "kind: transactional\naudience: lists/people.csv\nservices: [relay]\ntemplate: t\n"
    )
    rows = "".join(f"user{i}@example.com,U{i}\n" for i in range(messages))
    (root / "lists/people.csv").write_text("email,first_name\n" + rows)


def worst_window(times: list[float], width: float) -> int:
    """Most arrivals inside any half-open interval [t, t + width)."""
    times = sorted(times)
    j = best = 0
    for i, t in enumerate(times):
        while times[j] + width <= t:
            j += 1
        best = max(best, i - j + 1)
    return best


@contextmanager
def daemons(root: Path, count: int, database: str | None) -> Iterator[list[int]]:
    """``count`` campaignd processes on ``root`` (and ``database``); yields their API ports."""
    procs: list[subprocess.Popen[bytes]] = []
    ports = [free_port() for _ in range(count)]
    try:
        for http in ports:
            env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{http}"}
            env["CAMPAIGND_API_TOKEN"] = TOKEN
            env.pop("STATE_DIRECTORY", None)
            if database is not None:
                env["CAMPAIGND_DATABASE"] = database
            argv = [sys.executable, "-m", "campaignd", "--config", str(root)]
            procs.append(subprocess.Popen([*argv, "--log-level", "warning"], env=env))
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)


def run_one(
    rate: str, per_second: float, messages: int, *, count: int = 1, database: str | None = None
) -> list[float]:
    recorder = Recorder()
    controller = Controller(recorder, hostname=HOST, port=free_port(), ready_timeout=5.0)
    controller.start()
    try:
        with tempfile.TemporaryDirectory(prefix="campaignd-pacing-") as tmp:
            root = Path(tmp)
            write_root(root, int(controller.port), rate, messages)
            with daemons(root, count, database) as ports:
                deadline = time.monotonic() + 60 + messages / per_second * 2
                while time.monotonic() < deadline:
                    try:
                        if api(ports[0], "/api/campaigns/bench")["state"] == "completed":
                            break
                    except OSError:
                        pass
                    time.sleep(0.25)
                else:
                    raise SystemExit(f"{rate}: the campaign did not complete in time")
    finally:
        controller.stop()
    return sorted(recorder.arrivals)


def run_cap(cap: int, rate: str, count: int, database: str | None, quiet: float = 3.0) -> int:
    """Arrivals once ``count`` daemons reached a warm-up cap of ``cap`` and stayed quiet."""
    recorder = Recorder()
    controller = Controller(recorder, hostname=HOST, port=free_port(), ready_timeout=5.0)
    controller.start()
    try:
        with tempfile.TemporaryDirectory(prefix="campaignd-pacing-") as tmp:
            root = Path(tmp)
            extra = f"warmup: {{start: {cap}, until: {cap}}}\n"
            write_root(root, int(controller.port), rate, cap * 2, extra)
            with daemons(root, count, database):
                deadline = time.monotonic() + 120
                while len(recorder.arrivals) < cap and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(quiet)
                return len(recorder.arrivals)
    finally:
        controller.stop()


@contextmanager
def postgres() -> Iterator[Any]:
    """The tests' throwaway PostgreSQL cluster (initdb + pg_ctl in a temp dir)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.integration.store.postgres import cluster

    with cluster() as c:
        yield c


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=12.0, help="of mail per limit")
    parser.add_argument("--daemons", default="1,2", help="daemon counts to measure, e.g. 1,2")
    parser.add_argument("--cap", type=int, default=100, help="warm-up cap for two daemons")
    args = parser.parse_args()
    counts = [int(n) for n in args.daemons.split(",")]
    print(
        f"{'limit':32} {'daemons':>7} {'msgs':>5} {'worst window':>13} {'limit':>6}"
        f" {'achieved/s':>11} {'limit/s':>8} {'ratio':>7}"
    )
    failed = False
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(postgres()) if any(n > 1 for n in counts) else None
        for rate, per_second, period, count, burst in LIMITS:
            for n in counts:
                messages = max(burst + 2, int(per_second * args.seconds) + burst)
                database = asyncio.run(pg.create_database()) if n > 1 else None
                arrivals = run_one(rate, per_second, messages, count=n, database=database)
                if len(arrivals) != messages:
                    print(f"{rate}: {len(arrivals)} arrivals for {messages} messages")
                    failed = True
                    continue
                worst = worst_window(arrivals, period)
                allowed = count + burst - 1  # a full burst plus the pace within one period
                achieved = (messages - burst) / (arrivals[-1] - arrivals[0])
                ratio = achieved / per_second
                where = "sqlite" if n == 1 else "pg"
                print(
                    f"{rate:32} {f'{n} {where}':>7} {messages:5d} {worst:13d} {allowed:6d}"
                    f" {achieved:11.3f} {per_second:8.3f} {ratio:7.3f}",
                    flush=True,
                )
                failed |= worst > allowed or ratio > 1.0 + 1e-3
        if pg is not None:
            got = run_cap(args.cap, "20/second", 2, asyncio.run(pg.create_database()))
            print(
                f"warm-up cap {args.cap} at 20/second, 2 daemons on PostgreSQL: {got} accepted"
                f" ({got - args.cap:+d} past the cap; at most the other daemon's in-flight)"
            )
            failed |= got < args.cap or got > args.cap + 8
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Pacing at the wire: campaignd (one daemon, SQLite) sending to a local aiosmtpd server that
records when each MAIL FROM arrives; for a few limits, the worst count in any window of the
limit's period against the limit, and the achieved rate against it.

Run: ``.venv/bin/python bench/pacing.py [--seconds S]``. Each limit sends about ``S`` seconds
of mail (default 12). The goal (issue 13): the worst window never above the limit, and the
achieved rate within 2 % of it. The achieved rate is (arrivals − burst) / (last − first): the
burst goes at once, then one every period/N.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
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


def write_root(root: Path, smtp_port: int, rate: str, messages: int) -> None:
    for sub in ("services.d", "templates.d", "campaigns.d", "lists"):
        (root / sub).mkdir(parents=True)
    (root / "campaignd.yaml").write_text("timezone: UTC\n")
    (root / "services.d/relay.yaml").write_text(
        f'from: "Bench <bench@acme.test>"\nhost: {HOST}\nport: {smtp_port}\nsecurity: none\n'
        f"max_connections: 8\nmessages_per_connection: 1000\nrate: {rate}\n"
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


def run_one(rate: str, per_second: float, messages: int) -> list[float]:
    recorder = Recorder()
    controller = Controller(recorder, hostname=HOST, port=free_port(), ready_timeout=5.0)
    controller.start()
    http = free_port()
    try:
        with tempfile.TemporaryDirectory(prefix="campaignd-pacing-") as tmp:
            root = Path(tmp)
            write_root(root, int(controller.port), rate, messages)
            env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{http}"}
            env["CAMPAIGND_API_TOKEN"] = TOKEN
            env.pop("STATE_DIRECTORY", None)
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "campaignd",
                    "--config",
                    str(root),
                    "--log-level",
                    "warning",
                ],
                env=env,
            )
            try:
                deadline = time.monotonic() + 60 + messages / per_second * 2
                while time.monotonic() < deadline:
                    try:
                        if api(http, "/api/campaigns/bench")["state"] == "completed":
                            break
                    except OSError:
                        pass
                    time.sleep(0.25)
                else:
                    raise SystemExit(f"{rate}: the campaign did not complete in time")
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        controller.stop()
    return sorted(recorder.arrivals)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=12.0, help="of mail per limit")
    args = parser.parse_args()
    print(
        f"{'limit':32} {'msgs':>5} {'worst window':>13} {'limit':>6}"
        f" {'achieved/s':>11} {'limit/s':>8} {'ratio':>7}"
    )
    failed = False
    for rate, per_second, period, count, burst in LIMITS:
        messages = max(burst + 2, int(per_second * args.seconds) + burst)
        arrivals = run_one(rate, per_second, messages)
        if len(arrivals) != messages:
            print(f"{rate}: {len(arrivals)} arrivals for {messages} messages")
            failed = True
            continue
        worst = worst_window(arrivals, period)
        allowed = count + burst - 1  # a full burst plus the pace within one period
        achieved = (messages - burst) / (arrivals[-1] - arrivals[0])
        ratio = achieved / per_second
        print(
            f"{rate:32} {messages:5d} {worst:13d} {allowed:6d}"
            f" {achieved:11.3f} {per_second:8.3f} {ratio:7.3f}"
        )
        failed |= worst > allowed or ratio > 1.0 + 1e-3
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

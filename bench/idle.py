"""What an idle daemon costs: CPU of the daemon process while nothing is due.

Two situations an operator leaves running for weeks:
* ``--campaigns 100`` (default): a hundred loaded campaigns whose start is a week away;
* ``--waiting 200000``: one campaign whose rows all wait for a send window that is closed
  today (enrolled first; the measurement starts once they are all in the queue).

The daemon's user+system CPU time (``/proc/PID/stat``) is sampled over ``--seconds`` after a
short settling time and printed as a percentage of one core — last, as one line.

Run: ``.venv/bin/python bench/idle.py [--campaigns N | --waiting N] [--seconds S]``
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

HOST = "127.0.0.1"
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def get(port: int, path: str) -> object:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def write_root(root: Path, campaigns: int, waiting: int) -> None:
    for sub in ("services.d", "templates.d", "campaigns.d", "lists"):
        (root / sub).mkdir()
    (root / "campaignd.yaml").write_text("timezone: UTC\n")
    (root / "services.d/sink.yaml").write_text(
        'from: "Bench <bench@acme.test>"\nhost: 127.0.0.1\nport: 9\nsecurity: none\n'
    )
    (root / "templates.d/t.yaml").write_text(
        'subject: "Hi {{ first_name }}"\ntext: "Hello {{ first_name }} {{ unsubscribe_url }}"\n'
    )
    if waiting:
        with (root / "lists/big.csv").open("w") as f:
            f.write("email,first_name\n")
            for i in range(waiting):
                f.write(f"user{i}@example{i % 997}.com,User{i}\n")
        today = DAYS[datetime.now(UTC).weekday()]
        other = DAYS[(DAYS.index(today) + 3) % 7]
        (root / "campaigns.d/big.yaml").write_text(
            "kind: transactional\naudience: lists/big.csv\nservices: [sink]\ntemplate: t\n"
            f"window: {{days: [{other}], timezone: UTC}}\n"
        )
        return
    (root / "lists/few.csv").write_text("email,first_name\na@example.com,A\nb@example.org,B\n")
    start = (datetime.now(UTC) + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for i in range(campaigns):
        (root / f"campaigns.d/c{i:03d}.yaml").write_text(
            "kind: transactional\naudience: lists/few.csv\nservices: [sink]\ntemplate: t\n"
            f"start: {start}\n"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--campaigns", type=int, default=100)
    p.add_argument("--waiting", type=int, default=0, help="rows waiting for a closed window")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument(
        "--settle",
        type=float,
        default=None,
        help="seconds before measuring (default 5; 60 with --waiting: the first pass parks "
        "every enrolled row once, in batches, before the daemon is idle)",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="campaignd-idle-") as tmp:
        root = Path(tmp)
        write_root(root, args.campaigns, args.waiting)
        port = free_port()
        env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{port}"}
        env.pop("CAMPAIGND_API_TOKEN", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "campaignd", "--config", str(root), "--log-level", "warning"],
            env=env,
        )
        try:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    status = get(port, "/api/status")
                except OSError:
                    continue
                assert isinstance(status, dict)
                camps = status["campaigns"]
                if args.waiting:
                    if camps and camps[0]["total"] >= args.waiting:
                        break
                elif len(camps) >= args.campaigns:
                    break
            time.sleep(args.settle if args.settle is not None else (60 if args.waiting else 5))
            before, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            used, took = cpu_seconds(proc.pid) - before, time.monotonic() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    what = (
        f"{args.waiting:,} rows waiting for a closed window"
        if args.waiting
        else f"{args.campaigns} loaded campaigns, nothing due"
    )
    print(f"idle, {what}: {100 * used / took:.2f} % of a core over {took:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

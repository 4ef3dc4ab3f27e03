"""The daemon enrolling a 1,000,000-recipient audience: time until every row is in the queue,
and the daemon's peak memory (VmHWM). Nothing is sent: the campaign's send window is closed
today, so the rows wait in the queue — exactly the state a large campaign starts in.

Run: ``.venv/bin/python bench/enroll_1m.py [--rows N]`` (reuses the list that
``bench/plan_1m.py`` generates under bench/out/, generating it first if needed).
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
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).parent
HOST = "127.0.0.1"
GOAL_SECONDS = 20.0
GOAL_MB = 300.0
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    args = p.parse_args()
    source = HERE / "out" / f"plan-{args.rows}" / "lists" / "big.csv"
    if not source.exists():
        subprocess.run(
            [sys.executable, str(HERE / "plan_1m.py"), "--rows", str(args.rows), "--direct"],
            check=True,
        )
    today = DAYS[datetime.now(UTC).weekday()]
    with tempfile.TemporaryDirectory(prefix="campaignd-enroll-") as tmp:
        root = Path(tmp)
        for sub in ("services.d", "templates.d", "campaigns.d", "lists"):
            (root / sub).mkdir()
        (root / "lists/big.csv").symlink_to(source.resolve())
        (root / "campaignd.yaml").write_text("timezone: UTC\n")
        (root / "services.d/sink.yaml").write_text(
            'from: "Bench <bench@acme.test>"\nhost: 127.0.0.1\nport: 9\nsecurity: none\n'
        )
        (root / "templates.d/t.yaml").write_text(
            'subject: "Hi {{ first_name }}"\ntext: "Hello {{ first_name }} {{ unsubscribe_url }}"\n'
        )
        # open only on a day that is not today: every message waits in the queue
        other = DAYS[(DAYS.index(today) + 3) % 7]
        (root / "campaigns.d/big.yaml").write_text(
            "kind: transactional\naudience: lists/big.csv\nservices: [sink]\ntemplate: t\n"
            f"window: {{days: [{other}], timezone: UTC}}\n"
        )
        port = free_port()
        env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{port}"}
        env.pop("CAMPAIGND_API_TOKEN", None)
        t0 = time.monotonic()
        # The end is the daemon's own log line ("campaign big: enrolled N new messages …"):
        # polling the API for counts would itself cost the daemon CPU while it enrolls.
        proc = subprocess.Popen(
            [sys.executable, "-m", "campaignd", "--config", str(root), "--log-level", "info"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            done = threading.Event()
            lines: list[str] = []

            def watch() -> None:
                assert proc.stderr is not None
                for line in proc.stderr:
                    lines.append(line)
                    if "campaign big: enrolled" in line or "enrollment failed" in line:
                        done.set()

            threading.Thread(target=watch, daemon=True).start()
            finished = done.wait(900)
            elapsed = time.monotonic() - t0
            rss = peak_rss_mb(proc.pid)
            with urllib.request.urlopen(f"http://{HOST}:{port}/api/campaigns/big", timeout=60) as r:
                total = int(json.loads(r.read()).get("total", 0))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        if not finished or total < args.rows:
            sys.stderr.write("".join(lines[-20:]))
            print(
                f"enrollment did not finish: {total:,} of {args.rows:,} rows after {elapsed:.0f} s"
            )
            return 1
    ok = elapsed <= GOAL_SECONDS and rss < GOAL_MB
    print(
        f"{total:,} list rows enrolled in {elapsed:.1f} s ({total / elapsed:,.0f} rows/s, "
        f"from the daemon's start); daemon peak RSS {rss:.0f} MB "
        f"(goal <= {GOAL_SECONDS:.0f} s, < {GOAL_MB:.0f} MB: {'met' if ok else 'missed'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

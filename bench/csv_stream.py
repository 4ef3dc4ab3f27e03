"""Memory and speed of ``GET /api/campaigns/{id}/log.csv``: the daemon must stream it.

    .venv/bin/python bench/csv_stream.py [--rows 100000] [--small 10000]

Builds (under bench/out/, once per row count) a SQLite database holding one stopped campaign
with ``--rows`` messages, starts campaignd on it as a process, downloads the CSV log through
the HTTP API reading slowly at first (so a daemon that buffered the whole answer would show
it), and reports rows, seconds, and the daemon's peak RSS growth (VmHWM) during the download.
The same is done for ``--small`` rows: streaming means the growth does not depend on the row
count. Exit status 1 when the large download grows the peak RSS by more than 40 MB or by more
than 2.5× the small one's growth plus 8 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO / "daemon"))

from campaignd.queue.store import RecipientIn, Store  # noqa: E402

GOAL_MB = 40.0
TOKEN = "bench-token-0123456789"


async def build(root: Path, rows: int) -> None:
    db = root / "state" / "campaignd.db"
    if db.exists():
        return
    store = await Store.open("sqlite:///state/campaignd.db", root=root)
    try:
        await store.ensure_campaign("bench", state="stopped")
        people = [
            RecipientIn(
                key=f"user{i}@example.com",
                email=f"User{i}@Example.com",
                smtp_address=f"user{i}@example.com",
                domain="example.com",
                fields={"first_name": f"User{i}"},
                source=f"lists/big.csv:{i + 2}",
            )
            for i in range(rows)
        ]
        await store.add_recipients("bench", people, batch=5000)
        items = [(p.key, "intro-a" if i % 2 else "intro-b") for i, p in enumerate(people)]
        await store.enqueue(
            "bench", 0, 1, items, due=time.time(), status="skipped", batch=5000,
            reason="=HYPERLINK(\"http://x\") an error text a spreadsheet must not run",
        )  # fmt: skip
    finally:
        await store.close()


def vm(pid: int, field: str) -> float:
    """VmHWM / VmRSS of a process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def measure(rows: int) -> tuple[int, float, float]:
    """(rows received, seconds, peak RSS growth in MB) for one download."""
    root = OUT / f"csv-{rows}"
    (root / "state").mkdir(parents=True, exist_ok=True)
    (root / "campaignd.yaml").write_text("timezone: UTC\n")
    for sub in ("services.d", "templates.d", "campaigns.d"):
        (root / sub).mkdir(exist_ok=True)
    asyncio.run(build(root, rows))
    port = free_port()
    env = {**os.environ, "CAMPAIGND_LISTEN": f"127.0.0.1:{port}", "CAMPAIGND_API_TOKEN": TOKEN}
    env["PYTHONPATH"] = str(REPO / "daemon")
    proc = subprocess.Popen(
        [sys.executable, "-m", "campaignd", "--config", str(root), "--log-level", "warning"],
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        # Warm up (imports, first query) so the baseline is the running daemon.
        req = urllib.request.Request(
            base + "/api/campaigns/bench/messages?limit=1000",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        urllib.request.urlopen(req, timeout=30).read()
        before = vm(proc.pid, "VmHWM")
        started = time.perf_counter()
        req = urllib.request.Request(
            base + "/api/campaigns/bench/log.csv", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        received = io.BytesIO()
        with urllib.request.urlopen(req, timeout=600) as resp:
            slow_until = time.perf_counter() + 1.0
            while block := resp.read(1 << 16):
                received.write(block)
                if time.perf_counter() < slow_until:
                    time.sleep(0.05)  # a slow client: the daemon must wait, not buffer
        seconds = time.perf_counter() - started
        grown = vm(proc.pid, "VmHWM") - before
        text = received.getvalue().decode()
        count = sum(1 for _ in csv.reader(io.StringIO(text))) - 1
        assert count == rows, (count, rows)
        assert "'=HYPERLINK" in text and ",=HYPERLINK" not in text
        return count, seconds, grown
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    args = parser.parse_args()
    results = {}
    for n in (args.small, args.rows):
        count, seconds, grown = measure(n)
        results[n] = grown
        print(
            f"log.csv of {count:>8,} messages: {seconds:6.2f} s ({count / seconds:,.0f} rows/s), "
            f"daemon peak RSS +{grown:.1f} MB",
            flush=True,
        )
    big, small = results[args.rows], results[args.small]
    ok = big <= GOAL_MB and big <= 2.5 * small + 8
    verdict = "met" if ok else "MISSED"
    print(f"goal: +{GOAL_MB:.0f} MB at most, independent of the row count — {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

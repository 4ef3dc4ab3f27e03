"""Memory over a long campaign: the daemon's resident set sampled while it sends ``--messages``
(SQLite, rates off) to Postfix's ``smtp-sink`` (else campaignd's aiosmtpd sink). A daemon that
runs for weeks must not grow with the messages it has sent: the RSS after the first quarter
of the sends should stay where it is.

Prints the RSS at each tenth of the sends, the peak (VmHWM, enrollment included) and, last,
whether the sending phase was flat: the median RSS of the last quarter of the samples against
the second quarter's, flat when it grew by less than 10 MB per 100,000 messages.

Run: ``.venv/bin/python bench/rss_long.py [--messages 200000] [--connections 16]``
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import HOST, api, free_port, start_sink, wait_port, write_root

GOAL_MB = 250.0
FLAT_MB_PER_100K = 10.0


def status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--every", type=float, default=2.0, help="seconds between RSS samples")
    args = p.parse_args()
    sink_port = free_port()
    sink, sink_name = start_sink(sink_port)
    samples: list[tuple[float, int, float]] = []  # (seconds, sent so far, RSS MB)
    try:
        wait_port(sink_port)
        with tempfile.TemporaryDirectory(prefix="campaignd-rss-") as tmp:
            root = Path(tmp)
            write_root(root, sink_port, args.messages, args.connections)
            port = free_port()
            env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{port}"}
            env.pop("CAMPAIGND_API_TOKEN", None)
            log = (root / "daemon.log").open("wb")
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
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            t0 = time.monotonic()
            sent, state, next_poll = 0, "", 0.0
            try:
                deadline = t0 + max(600.0, args.messages / 20)
                while time.monotonic() < deadline and state != "completed":
                    if proc.poll() is not None:
                        raise SystemExit((root / "daemon.log").read_text())
                    now = time.monotonic()
                    # The summary counts every row: asked every 10 s, not at every sample.
                    if now >= next_poll:
                        try:
                            summary = api(port, "/api/campaigns/bench")
                            counts = summary.get("counts", {})
                            sent = int(counts.get("sent", 0)) if isinstance(counts, dict) else 0
                            state = str(summary.get("state", ""))
                        except OSError:
                            pass
                        next_poll = now + 10.0
                    samples.append((now - t0, sent, status_mb(proc.pid, "VmRSS")))
                    time.sleep(args.every)
                peak = status_mb(proc.pid, "VmHWM")
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
                log.close()
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
    if state != "completed":
        print(f"the campaign did not complete: {sent} of {args.messages} sent")
        return 1

    sending = [s for s in samples if 0 < s[1] < args.messages] or samples
    print(f"sink: {sink_name}; {args.messages:,} messages, {args.connections} connections")
    for tenth in range(1, 11):
        goal = args.messages * tenth / 10
        at = next((s for s in samples if s[1] >= goal), samples[-1])
        print(f"  {at[1]:>9,} sent at {at[0]:6.0f} s: RSS {at[2]:6.1f} MB")
    q = max(1, len(sending) // 4)
    second = statistics.median(s[2] for s in sending[q : 2 * q])
    last = statistics.median(s[2] for s in sending[-q:])
    sent_between = max(1, sending[-1][1] - sending[q][1])
    growth = (last - second) / sent_between * 100_000
    flat = growth < FLAT_MB_PER_100K
    ok = flat and peak < GOAL_MB
    print(
        f"daemon RSS over {args.messages:,} messages: {'flat' if flat else 'GROWING'} "
        f"({second:.0f} → {last:.0f} MB, {growth:+.1f} MB per 100k sent), peak {peak:.0f} MB "
        f"(goal flat, < {GOAL_MB:.0f} MB: {'met' if ok else 'missed'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

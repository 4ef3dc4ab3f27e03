"""End-to-end throughput: the daemon (SQLite, real SMTP) sending one campaign to a local sink,
against a naive baseline that opens one SMTP connection per message and sends sequentially.

Run: ``.venv/bin/python bench/throughput.py [--messages N] [--connections C]``. The sink is
Postfix's ``smtp-sink`` when installed (``apt-get install postfix``; what the figures in the
README were taken with), else campaignd's own aiosmtpd sink. The daemon runs as a separate
process exactly as in production (``python -m campaignd``); the time is measured from the
campaign's start to its completion as the API reports them, so enrollment, rendering, the
queue's commits and SMTP are all included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def start_sink(port: int) -> tuple[subprocess.Popen[bytes], str]:
    exe = shutil.which("smtp-sink") or (
        "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
    )
    if exe:
        # -c: count, 256: backlog; runs until killed
        args = (
            [exe, "-u", "nobody", f"{HOST}:{port}", "256"]
            if os.geteuid() == 0
            else [exe, f"{HOST}:{port}", "256"]
        )
        return subprocess.Popen(args, stdout=subprocess.DEVNULL), "postfix smtp-sink"
    proc = subprocess.Popen(
        [sys.executable, "-m", "campaignd.ctl", "sink", "--listen", f"{HOST}:{port}"],
        stdout=subprocess.DEVNULL,
    )
    return proc, "campaignd sink (aiosmtpd)"


def wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {HOST}:{port} after {timeout}s")


def write_root(root: Path, smtp_port: int, messages: int, connections: int) -> None:
    for sub in ("services.d", "templates.d", "campaigns.d", "lists"):
        (root / sub).mkdir(parents=True)
    (root / "campaignd.yaml").write_text("timezone: UTC\n")
    (root / "services.d/sink.yaml").write_text(
        f'from: "Bench <bench@acme.test>"\nhost: {HOST}\nport: {smtp_port}\nsecurity: none\n'
        f"max_connections: {connections}\nmessages_per_connection: 1000\n"
    )
    (root / "templates.d/t.yaml").write_text(
        'subject: "Hello {{ first_name }}"\n'
        "text: |\n  Hi {{ first_name }},\n\n  "
        + "A line of ordinary newsletter text. "
        * 20
        + "\n\n  Unsubscribe: {{ unsubscribe_url }}\n"
        "html: |\n  <p>Hi {{ first_name }},</p><p>"
        + "A line of ordinary newsletter text. " * 20
        + '</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n'
    )
    (root / "campaigns.d/bench.yaml").write_text(
        "kind: marketing\npostal_address: 1 Bench Street, Testville\n"
        "audience: lists/people.csv\nservices: [sink]\ntemplate: t\n"
    )
    with (root / "lists/people.csv").open("w") as f:
        f.write("email,first_name\n")
        for i in range(messages):
            f.write(f"user{i}@example{i % 50}.com,User{i}\n")


def api(port: int, path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as resp:
        data: dict[str, object] = json.loads(resp.read())
        return data


def run_daemon(smtp_port: int, messages: int, connections: int) -> tuple[float, dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="campaignd-bench-") as tmp:
        root = Path(tmp)
        write_root(root, smtp_port, messages, connections)
        port = free_port()
        env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{port}"}
        env.pop("CAMPAIGND_API_TOKEN", None)
        log = (root / "daemon.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "campaignd", "--config", str(root), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + max(120.0, messages / 50)
            summary: dict[str, object] = {}
            while time.monotonic() < deadline:
                try:
                    summary = api(port, "/api/campaigns/bench")
                except OSError:
                    summary = {}
                if summary.get("state") == "completed":
                    break
                if proc.poll() is not None:
                    raise SystemExit((root / "daemon.log").read_text())
                time.sleep(0.1)
            else:
                raise SystemExit(f"not completed in time: {summary}")
            t0 = datetime.fromisoformat(str(summary["started_at"])).timestamp()
            t1 = datetime.fromisoformat(str(summary["finished_at"])).timestamp()
            return t1 - t0, summary
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            log.close()


async def naive(smtp_port: int, messages: int) -> float:
    """One connection per message, one at a time: what a cron script with smtplib does."""
    import aiosmtplib

    body = ("Subject: hi\r\nFrom: bench@acme.test\r\n\r\n" + "x" * 2000 + "\r\n").encode()
    t0 = time.perf_counter()
    for i in range(messages):
        await aiosmtplib.send(
            body, sender="bench@acme.test", recipients=[f"user{i}@example.com"],
            hostname=HOST, port=smtp_port, use_tls=False, start_tls=False,
        )  # fmt: skip
    return time.perf_counter() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--baseline", type=int, default=1000, help="messages for the naive baseline")
    args = p.parse_args()
    port = free_port()
    sink, sink_name = start_sink(port)
    try:
        wait_port(port)
        base = asyncio.run(naive(port, args.baseline))
        elapsed, summary = run_daemon(port, args.messages, args.connections)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
    counts = summary.get("counts", {})
    sent = counts.get("sent", 0) if isinstance(counts, dict) else 0
    print(f"sink: {sink_name}")
    print(
        f"naive baseline: {args.baseline} messages in {base:.2f}s "
        f"= {args.baseline / base:,.0f} msg/s"
    )
    print(
        f"campaignd: {sent}/{args.messages} sent with {args.connections} connections in "
        f"{elapsed:.2f}s = {args.messages / elapsed:,.0f} msg/s (enrol + render + queue + SMTP)"
    )
    return 0 if sent == args.messages else 1


if __name__ == "__main__":
    raise SystemExit(main())

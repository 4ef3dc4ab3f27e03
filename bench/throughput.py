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
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from idle import cpu_seconds

HOST = "127.0.0.1"
BODY = "A line of ordinary newsletter text. " * 20


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
        + "\n\n  Unsubscribe: {{ unsubscribe_url }} · {{ postal_address }}\n"
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


PHASE: dict[str, float] = {}
"""The last run's sending phase: CPU seconds and messages between the first poll that saw
sends and completion (start-up and enrollment excluded), for ``phase_ms``."""


def phase_ms() -> float | None:
    """CPU ms per message of the last run's sending phase (None if too short to tell)."""
    if PHASE.get("sent", 0) < 1000:
        return None
    return PHASE["cpu"] * 1000 / PHASE["sent"]


def run_daemon(
    smtp_port: int, messages: int, connections: int
) -> tuple[float, float, dict[str, object]]:
    """(seconds from campaign start to completion, CPU seconds of the daemon, summary)."""
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
            PHASE.clear()
            deadline = time.monotonic() + max(120.0, messages / 50)
            summary: dict[str, object] = {}
            while time.monotonic() < deadline:
                try:
                    summary = api(port, "/api/campaigns/bench")
                except OSError:
                    summary = {}
                counts = summary.get("counts")
                sent_now = counts.get("sent", 0) if isinstance(counts, dict) else 0
                if isinstance(sent_now, int) and sent_now > 0 and "sent0" not in PHASE:
                    PHASE.update(sent0=sent_now, cpu0=cpu_seconds(proc.pid))
                if summary.get("state") == "completed":
                    if "sent0" in PHASE and isinstance(sent_now, int):
                        PHASE.update(
                            sent=sent_now - PHASE["sent0"],
                            cpu=cpu_seconds(proc.pid) - PHASE["cpu0"],
                        )
                    break
                if proc.poll() is not None:
                    raise SystemExit((root / "daemon.log").read_text())
                # A summary counts every row: polling it often would bill the daemon's CPU for
                # the benchmark's own curiosity. The times below come from the database anyway.
                time.sleep(1.0)
            else:
                raise SystemExit(f"not completed in time: {summary}")
            t0 = datetime.fromisoformat(str(summary["started_at"])).timestamp()
            t1 = datetime.fromisoformat(str(summary["finished_at"])).timestamp()
        finally:
            proc.send_signal(signal.SIGTERM)
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = 0
            log.close()
        # The whole run's CPU (start-up, enrollment of the list, draining) is charged.
        return t1 - t0, usage.ru_utime + usage.ru_stime, summary


async def baseline(smtp_port: int, messages: int, connections: int) -> tuple[float, float]:
    """What a competent script does: aiosmtplib with ``connections`` reused sessions, each
    message built per recipient with Jinja2 + ``email.message.EmailMessage``. Returns
    (seconds, CPU seconds of this process)."""
    import aiosmtplib
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment(autoescape=True)
    subject = env.from_string("Hello {{ first_name }}")
    text = env.from_string("Hi {{ first_name }},\n\n" + BODY + "\n\nUnsubscribe: {{ url }}\n")
    html = env.from_string(
        "<p>Hi {{ first_name }},</p><p>" + BODY + '</p><p><a href="{{ url }}">Unsubscribe</a></p>'
    )
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(messages):
        queue.put_nowait(i)

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname=HOST, port=smtp_port, use_tls=False, start_tls=False)
        await client.connect()
        try:
            while not queue.empty():
                i = queue.get_nowait()
                fields = {"first_name": f"User{i}", "url": f"https://acme.test/u/{i}"}
                msg = EmailMessage()
                msg["From"] = "Bench <bench@acme.test>"
                msg["To"] = f"user{i}@example{i % 50}.com"
                msg["Subject"] = subject.render(fields)
                msg["Message-ID"] = make_msgid(domain="acme.test")
                msg.set_content(text.render(fields))
                msg.add_alternative(html.render(fields), subtype="html")
                await client.send_message(msg)
        finally:
            await client.quit()

    wall0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - wall0, time.process_time() - cpu0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--connections", type=int, default=16)
    args = p.parse_args()
    port = free_port()
    sink, sink_name = start_sink(port)
    try:
        wait_port(port)
        base, base_cpu = asyncio.run(baseline(port, args.messages, args.connections))
        elapsed, cpu, summary = run_daemon(port, args.messages, args.connections)
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)
    counts = summary.get("counts", {})
    sent = counts.get("sent", 0) if isinstance(counts, dict) else 0
    n = args.messages
    print(f"sink: {sink_name}; {n} messages, {args.connections} connections, rates off")
    print(
        f"(a) baseline  aiosmtplib + Jinja2 + EmailMessage: {n / base:8,.0f} msg/s  "
        f"{base_cpu * 1000 / n:5.2f} CPU ms/msg"
    )
    print(
        f"(b) campaignd end to end (SQLite, one row per message): {n / elapsed:8,.0f} msg/s  "
        f"{cpu * 1000 / n:5.2f} CPU ms/msg  (sent {sent})"
    )
    phase = phase_ms()
    if phase is not None:
        print(
            f"    of which the sending phase alone (start-up and enrollment excluded): "
            f"{phase:5.2f} CPU ms/msg over {PHASE['sent']:,.0f} messages"
        )
    print(f"ratio campaignd / baseline: {base / elapsed:.2f}")
    return 0 if sent == n else 1


if __name__ == "__main__":
    raise SystemExit(main())

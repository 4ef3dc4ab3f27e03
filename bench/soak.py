"""Soak: the daemon killed with SIGKILL at random moments, and paused/resumed over and over,
while it sends to a local recording SMTP server. What an operator cares about is counted:

* lost: recipients that never arrived and are not reported ``uncertain`` (must be 0);
* duplicates: recipients that arrived twice (must be 0: an uncertain row is never resent by
  itself; only ``campaignctl retry --uncertain`` sends it again, the operator's decision);
* uncertain per kill: never more than the sessions that were in flight (``max_connections``).

Run: ``.venv/bin/python bench/soak.py [--kills 100] [--pauses 100] [--recipients 3000]``
Bounded: every loop has a count and every wait a deadline; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller

HOST = "127.0.0.1"
SESSIONS = 4


class Recorder:
    """Counts every recipient of every message the daemon hands over (after DATA)."""

    def __init__(self) -> None:
        self.got: Counter[str] = Counter()
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.got.update(envelope.rcpt_tos)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    return port


def call(port: int, method: str, path: str, body: object | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://{HOST}:{port}{path}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"} if data is not None else {},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def write_root(root: Path, smtp_port: int, recipients: int) -> None:
    for sub in ("services.d", "templates.d", "campaigns.d", "lists"):
        (root / sub).mkdir()
    (root / "campaignd.yaml").write_text("timezone: UTC\ndrain_timeout: 5s\n")
    (root / "services.d/sink.yaml").write_text(
        f'from: "Soak <soak@acme.test>"\nhost: {HOST}\nport: {smtp_port}\nsecurity: none\n'
        f"max_connections: {SESSIONS}\nrate: 200/second\n"
    )
    (root / "templates.d/t.yaml").write_text(
        'subject: "Hi {{ n }}"\ntext: "Hello {{ n }} {{ unsubscribe_url }}"\n'
    )
    (root / "campaigns.d/soak.yaml").write_text(
        "kind: transactional\naudience: lists/people.csv\nservices: [sink]\ntemplate: t\n"
    )
    with (root / "lists/people.csv").open("w") as f:
        f.write("email,n\n")
        for i in range(recipients):
            f.write(f"r{i}@soak.example.com,{i}\n")


class Daemon:
    def __init__(self, root: Path, api: int) -> None:
        self.root, self.api = root, api
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{self.api}"}
        env.pop("CAMPAIGND_API_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "campaignd", "--config", str(self.root), "--log-level", "error"],
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                call(self.api, "GET", "/api/campaigns/soak")
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the daemon did not come up within 60 s")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def counts(self) -> dict[str, int]:
        data = call(self.api, "GET", "/api/campaigns/soak")
        return {k: int(v) for k, v in data["counts"].items() if isinstance(v, int)}

    def wait_done(self, timeout: float = 600) -> dict[str, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            counts = self.counts()
            if not any(counts.get(s, 0) for s in ("queued", "sending", "deferred")):
                return counts
            time.sleep(0.2)
        raise RuntimeError("the campaign did not finish in time")


@contextlib.contextmanager
def sending(recipients: int) -> Iterator[tuple[Recorder, Daemon]]:
    """A recording SMTP server and a (not yet started) daemon on a fresh root sending to it."""
    rec = Recorder()
    smtp = Controller(rec, hostname=HOST, port=free_port())
    smtp.start()
    try:
        with tempfile.TemporaryDirectory(prefix="campaignd-soak-") as tmp:
            root = Path(tmp)
            write_root(root, smtp.port, recipients)
            yield rec, Daemon(root, free_port())
    finally:
        smtp.stop()


def soak_kills(kills: int, recipients: int, rng: random.Random) -> str:
    with sending(recipients) as (rec, daemon):
        worst = done_kills = 0
        uncertain_before = 0
        for _ in range(kills + 1):
            # Each start marks what the killed run had in flight uncertain.
            daemon.start()
            uncertain = daemon.counts().get("uncertain", 0)
            worst = max(worst, uncertain - uncertain_before)
            uncertain_before = uncertain
            if done_kills == kills or sum(rec.got.values()) >= recipients:
                break
            time.sleep(rng.uniform(0.05, 0.6))
            daemon.kill()
            done_kills += 1
        counts = daemon.wait_done()
        daemon.stop()
    uncertain = counts.get("uncertain", 0)
    expected = {f"r{i}@soak.example.com" for i in range(recipients)}
    lost = len(expected - set(rec.got)) - uncertain
    dupes = sum(1 for n in rec.got.values() if n > 1)
    return (
        f"kills {done_kills}: {sum(rec.got.values())} arrivals for {recipients} recipients, "
        f"lost {max(lost, 0)}, duplicates {dupes}, uncertain {uncertain} "
        f"(worst per kill {worst}, sessions {SESSIONS})"
    )


def soak_pauses(pauses: int, recipients: int, rng: random.Random) -> str:
    with sending(recipients) as (rec, daemon):
        daemon.start()
        cycles = 0
        for _ in range(pauses):
            time.sleep(rng.uniform(0.01, 0.2))
            call(daemon.api, "POST", "/api/campaigns/soak/pause", {})
            time.sleep(rng.uniform(0.01, 0.1))
            call(daemon.api, "POST", "/api/campaigns/soak/resume", {})
            cycles += 1
        counts = daemon.wait_done()
        daemon.stop()
    expected = {f"r{i}@soak.example.com" for i in range(recipients)}
    lost = len(expected - set(rec.got)) - counts.get("uncertain", 0)
    dupes = sum(1 for n in rec.got.values() if n > 1)
    return (
        f"pause/resume cycles {cycles}: {sum(rec.got.values())} arrivals for {recipients} "
        f"recipients, lost {max(lost, 0)}, duplicates {dupes}, "
        f"uncertain {counts.get('uncertain', 0)}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--pauses", type=int, default=100)
    p.add_argument("--recipients", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    rng = random.Random(args.seed)
    lines = []
    if args.pauses:
        lines.append(soak_pauses(args.pauses, args.recipients, rng))
        print(lines[-1], flush=True)
    if args.kills:
        lines.append(soak_kills(args.kills, args.recipients, rng))
        print(lines[-1], flush=True)
    print("soak: " + "; ".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PostgreSQL, one daemon against two: does a second daemon on the same queue add throughput
without burning the CPU it adds? The measure is messages per CPU-second of everything that
works for them — the daemons and the database server — with two daemons against one.

Each round starts from a fresh database in one throwaway cluster (the store tests' fixture:
``initdb`` in a temp dir, 127.0.0.1, durability off — the same for both sides), sends
``--messages`` to Postfix's ``smtp-sink`` (else campaignd's aiosmtpd sink), rates off,
``--connections`` sessions per daemon. Time is the campaign's start to completion as the API
reports it; the CPU is the daemons' whole run (wait4) plus the server's (the postmaster and all
its children, reaped or alive) over the same span.

Run: ``.venv/bin/python bench/pg_daemons.py [--messages 20000] [--connections 16] [--rounds 3]``
(as root the cluster runs as the ``postgres`` user, as in the tests). The goal is a ratio of
messages per CPU-second within 10 % of one daemon's (≥ 0.90).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository: the store tests' PostgreSQL fixture

from throughput import HOST, api, free_port, start_sink, wait_port, write_root  # noqa: E402

from tests.integration.store.postgres import Cluster, cluster  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
GOAL = 0.90


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def server_cpu(c: Cluster) -> float:
    """CPU seconds of the cluster so far: the postmaster, its reaped children (cutime) and
    the children alive now (backends, checkpointer, WAL writer, autovacuum)."""
    pid = int((c.data / "postmaster.pid").read_text().split()[0])
    f = _stat(pid)
    total = sum(int(x) for x in f[11:15])
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            g = _stat(int(child))
        except OSError:  # exited meanwhile: its time is in cutime by now or soon
            continue
        total += sum(int(x) for x in g[11:15])
    return total / TICKS


def one_round(c: Cluster, sink_port: int, messages: int, connections: int, daemons: int) -> dict:
    url = asyncio.run(c.create_database())
    with tempfile.TemporaryDirectory(prefix="campaignd-pg-bench-") as tmp:
        root = Path(tmp)
        write_root(root, sink_port, messages, connections)
        ports = [free_port() for _ in range(daemons)]
        before = server_cpu(c)
        procs = []
        for i, port in enumerate(ports):
            env = {**os.environ, "CAMPAIGND_LISTEN": f"{HOST}:{port}", "CAMPAIGND_DATABASE": url}
            env.pop("CAMPAIGND_API_TOKEN", None)
            log = (root / f"daemon{i}.log").open("wb")
            procs.append(
                subprocess.Popen(
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
            )
        cpu = 0.0
        try:
            deadline = time.monotonic() + max(180.0, messages / 20)
            summary: dict = {}
            while time.monotonic() < deadline:
                try:
                    summary = api(ports[0], "/api/campaigns/bench")
                except OSError:
                    summary = {}
                if summary.get("state") == "completed":
                    break
                for i, p in enumerate(procs):
                    if p.poll() is not None:
                        raise SystemExit((root / f"daemon{i}.log").read_text())
                time.sleep(1.0)
            else:
                raise SystemExit(f"not completed in time: {summary}")
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                _, _, usage = os.wait4(p.pid, 0)
                p.returncode = 0
                cpu += usage.ru_utime + usage.ru_stime
        time.sleep(0.5)  # the backends of the closed connections are reaped
        server = server_cpu(c) - before
    t0 = datetime.fromisoformat(str(summary["started_at"])).timestamp()
    t1 = datetime.fromisoformat(str(summary["finished_at"])).timestamp()
    sent = summary.get("counts", {}).get("sent", 0)
    if sent != messages:
        raise SystemExit(f"{daemons} daemon(s): sent {sent} of {messages}")
    seconds = t1 - t0
    return {
        "daemons": daemons,
        "msg_s": messages / seconds,
        "daemon_cpu": cpu,
        "server_cpu": server,
        "per_cpu_s": messages / (cpu + server),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=20000)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument(
        "--rounds", type=int, default=3, help="rounds; the even-numbered ones run two daemons first"
    )
    args = p.parse_args()
    sink_port = free_port()
    sink, sink_name = start_sink(sink_port)
    ratios: list[float] = []
    speedups: list[float] = []
    try:
        wait_port(sink_port)
        with cluster() as c:
            for r in range(args.rounds):
                # Alternate which side runs first: a drift over the run (the cluster warming
                # up, another job on the box) then weighs on both sides alike.
                order = (1, 2) if r % 2 == 0 else (2, 1)
                results = {
                    n: one_round(c, sink_port, args.messages, args.connections, n) for n in order
                }
                one, two = results[1], results[2]
                for res in (results[n] for n in order):
                    print(
                        f"round {r + 1}: {res['daemons']} daemon(s): {res['msg_s']:6,.0f} msg/s, "
                        f"CPU daemons {res['daemon_cpu']:5.1f} s + server "
                        f"{res['server_cpu']:5.1f} s = {res['per_cpu_s']:5,.0f} msg per CPU-s",
                        flush=True,
                    )
                ratios.append(two["per_cpu_s"] / one["per_cpu_s"])
                speedups.append(two["msg_s"] / one["msg_s"])
    finally:
        sink.send_signal(signal.SIGTERM)
        sink.wait(timeout=10)

    def spread(xs: list[float]) -> str:
        return f"{min(xs):.2f}/{statistics.median(xs):.2f}/{max(xs):.2f}"

    print(
        f"sink: {sink_name}; {args.messages} messages, {args.connections} sessions per daemon; "
        f"min/median/max over {args.rounds} round(s)"
    )
    ok = statistics.median(ratios) >= GOAL
    print(
        f"PostgreSQL 2 daemons vs 1: messages per CPU-second (daemons + server) "
        f"{spread(ratios)}× (goal ≥ {GOAL:.2f}: {'met' if ok else 'missed'}); "
        f"throughput {spread(speedups)}×"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

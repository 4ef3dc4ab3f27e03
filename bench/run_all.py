"""Every benchmark, one after the other (``make bench``): figures quoted in the README.

Each prints its figure last. They are CPU-bound and timed: run them on an otherwise quiet
machine (the load average before each is printed with its name). ``--quick`` runs the short
ones only (no 1M-row enrollment, no long campaign, no PostgreSQL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
RUNS = [
    ["render.py"],
    ["throughput.py"],
    ["plan_1m.py"],
    ["enroll_1m.py"],
    ["csv_stream.py"],
    ["idle.py", "--campaigns", "100"],
    ["idle.py", "--waiting", "200000"],
    ["pg_daemons.py"],
    ["rss_long.py"],
    ["postfix_anchor.py"],
    ["soak.py"],
    ["pacing.py"],
]
LONG = {"plan_1m.py", "enroll_1m.py", "pg_daemons.py", "rss_long.py", "soak.py"}


def main() -> int:
    quick = "--quick" in sys.argv[1:]
    status = 0
    for args in RUNS:
        if quick and args[0] in LONG:
            continue
        load = os.getloadavg()[0]
        print(f"\n=== {' '.join(args)}  (load average {load:.2f})", flush=True)
        status |= subprocess.run(
            [sys.executable, str(HERE / args[0]), *args[1:]], check=False
        ).returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())

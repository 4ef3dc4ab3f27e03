"""Every benchmark, one after the other (``make bench``): figures quoted in the README."""

from __future__ import annotations

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
    ["soak.py"],
    ["pacing.py"],
]


def main() -> int:
    status = 0
    for args in RUNS:
        print(f"\n=== {' '.join(args)}", flush=True)
        status |= subprocess.run(
            [sys.executable, str(HERE / args[0]), *args[1:]], check=False
        ).returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())

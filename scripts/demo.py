"""`make demo`: campaignd sending the example campaign to a local sink, for real.

1. validates the example config root (this repository) and shows the plan;
2. starts `campaignctl sink` on 127.0.0.1:2525 (messages are printed and kept in sink-mail/);
3. runs `campaignd` on the example root with a fresh SQLite database (state/demo.db).

Open http://127.0.0.1:8470/api/status while it runs. Ctrl-C stops both processes.
`--until-done` exits by itself once the launch campaign has completed (used by the tests).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CTL = [str(BIN / "campaignctl"), "--config", str(ROOT)]
DEMO_DB = ROOT / "state" / "demo.db"


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def api(path: str) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:8470{path}", timeout=2) as r:
        data: dict[str, object] = json.loads(r.read())
        return data


def launch_state() -> tuple[str, dict[str, int]]:
    data = api("/api/campaigns/product-launch")
    return str(data["state"]), dict(data["counts"])  # type: ignore[call-overload]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--until-done", action="store_true")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()

    step("campaignctl validate")
    if subprocess.call([*CTL, "validate"]) != 0:
        return 1
    step("campaignctl plan product-launch")
    subprocess.call([*CTL, "plan", "product-launch"])

    for suffix in ("", "-wal", "-shm"):
        Path(f"{DEMO_DB}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "CAMPAIGND_DATABASE": f"sqlite:///{DEMO_DB}"}

    step("campaignctl sink --listen 127.0.0.1:2525 --maildir sink-mail   (messages appear below)")
    sink = subprocess.Popen(
        [*CTL, "sink", "--listen", "127.0.0.1:2525", "--maildir", str(ROOT / "sink-mail")]
    )
    step("campaignd --config .   (API: http://127.0.0.1:8470/api/status — Ctrl-C stops)")
    daemon = subprocess.Popen([str(BIN / "campaignd"), "--config", str(ROOT)], env=env)
    procs = [daemon, sink]

    def stop(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        if args.until_done:
            deadline = time.monotonic() + args.timeout
            state, counts = "", {}
            while time.monotonic() < deadline and daemon.poll() is None:
                try:
                    state, counts = launch_state()
                except OSError:
                    state = ""
                if state == "completed":
                    break
                time.sleep(0.5)
            step(f"product-launch: {state or 'unknown'} {counts}")
            code = 0 if state == "completed" else 1
        else:
            daemon.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    return code


if __name__ == "__main__":
    raise SystemExit(main())

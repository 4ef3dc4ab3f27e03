"""campaignctl against a running daemon in the README's default setup (no API token, loopback):
campaigns, tables that are never cut when piped, --json, suppress remove and import from
standard input, and a resume that refuses to undo a stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.integration.smtp.servers import RecordingServer

from .conftest import MakeDaemon, basic_root
from .harness import DaemonProcess

LONG = "a-campaign-id-long-enough-that-an-80-column-table-would-cut-it-short"


def ctl(
    daemon: DaemonProcess, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CAMPAIGND_API_TOKEN"}
    env["CAMPAIGND_API"] = daemon.base
    return subprocess.run(
        [sys.executable, "-m", "campaignd.ctl", "--config", str(daemon.root), *args],
        capture_output=True, text=True, env=env, timeout=60, check=False, input=stdin,
    )  # fmt: skip


def test_the_cli_in_the_default_setup(
    tmp_path: Path, smtp: RecordingServer, make_daemon: MakeDaemon
) -> None:
    root = basic_root(
        tmp_path,
        smtp.port,
        recipients=4,
        extra_files={
            f"campaigns.d/{LONG}.yaml": (
                "kind: transactional\naudience: lists/people.csv\nservices: [sink]\n"
                "template: hello\nrate: 1/hour\n"
            )
        },
    )
    daemon = make_daemon(root, token=None).start()
    daemon.wait_state("news", "completed")
    daemon.wait_state(LONG, "sending")

    # campaigns: from the daemon, one TSV line each, the long id whole
    result = ctl(daemon, "campaigns")
    assert result.returncode == 0, result.stderr
    assert f"source: daemon at {daemon.base}" in result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines[0] == ["campaign", "state", "progress", "next send", "reason"]
    assert {row[0]: row[1] for row in lines[1:]} == {"news": "completed", LONG: "sending"}
    assert "100% of 4" in result.stdout
    data = json.loads(ctl(daemon, "campaigns", "--json").stdout)
    assert data["source"].startswith("daemon at ")
    assert sorted(c["id"] for c in data["campaigns"]) == sorted(["news", LONG])
    status = ctl(daemon, "status")
    assert status.returncode == 0 and f"\n{LONG}\tsending\t" in status.stdout
    assert "…" not in status.stdout

    # suppress remove without a token (was 415), import from standard input, --json
    assert ctl(daemon, "suppress", "add", "gone@example.com").returncode == 0
    removed = ctl(daemon, "suppress", "remove", "gone@example.com", "--json")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(removed.stdout) == {
        "ok": True, "removed": ["gone@example.com"], "not_suppressed": [],
    }  # fmt: skip
    for name in ("-", "/dev/stdin"):
        imported = ctl(
            daemon, "suppress", "import", name, stdin=f"email\nx{len(name)}@example.com\n"
        )
        assert imported.returncode == 0, imported.stderr
        assert "read 1 addresses: 1 added" in imported.stdout
    missing = ctl(daemon, "suppress", "import", str(tmp_path / "nope.csv"))
    assert (
        missing.returncode == 1 and "no such file (use - to read standard input)" in missing.stderr
    )
    listed = ctl(daemon, "suppress", "list")
    assert listed.stdout.splitlines()[0].split("\t")[0] == "address"
    exported = json.loads(ctl(daemon, "suppress", "export", "--json").stdout)
    assert sorted(r["key"] for r in exported) == ["x10@example.com", "x1@example.com"]

    # stop is final: resume says so and exits 1; --json on the control commands
    stopped = ctl(daemon, "stop", LONG, "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["state"] == "stopped"
    resumed = ctl(daemon, "resume", LONG)
    assert resumed.returncode == 1
    assert "stop is final" in resumed.stderr and "cannot be resumed" in resumed.stderr
    data = json.loads(ctl(daemon, "resume", LONG, "--json").stdout)
    assert (data["ok"], data["state"]) == (False, "stopped") and "stop is final" in data["message"]
    paused = ctl(daemon, "pause", "news")
    assert paused.returncode == 1 and "completed, which is final" in paused.stderr
    retried = ctl(daemon, "retry", "news", "--failed", "--json")
    assert retried.returncode == 0 and json.loads(retried.stdout)["requeued"] == 0
    unknown = ctl(daemon, "pause", "nope", "--json")
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["ok"] is False

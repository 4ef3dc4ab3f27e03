"""The systemd unit file passes ``systemd-analyze verify`` (with this checkout's entry point)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.suites import not_run

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "campaignd.service"


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        not_run(
            "systemd unit", "systemd-analyze is not installed (Debian: apt-get install systemd)"
        )
    # The unit runs /opt/campaignd/.venv/bin/campaignd; verify checks that it exists, so the
    # copy under test points at this checkout's entry point instead — nothing else changes.
    entry = Path(sys.executable).with_name("campaignd")
    assert entry.exists()
    text = UNIT.read_text()
    assert "/opt/campaignd/.venv/bin/campaignd" in text
    copy = tmp_path / "campaignd.service"
    copy.write_text(text.replace("/opt/campaignd/.venv/bin/campaignd", str(entry)))
    result = subprocess.run(
        [tool, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [
        line for line in (result.stdout + result.stderr).splitlines() if "campaignd" in line
    ]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr

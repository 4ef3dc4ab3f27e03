"""A real headless Chromium (Debian's ``chromium`` and ``chromium-driver``, installed by
.ci/system-deps.sh) driven by Selenium; nothing is downloaded. Without them the browser tests
say so loudly and skip — except under CI=true, where a missing browser fails the run."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.suites import not_run
from tests.system.conftest import make_daemon, smtp

__all__ = ["browser", "make_daemon", "smtp"]

CHROMIUM = os.environ.get("CAMPAIGND_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CAMPAIGND_CHROMEDRIVER", "/usr/bin/chromedriver")
# As root on a closed network: no sandbox (it needs user namespaces), no GPU, and nothing
# that phones home (component updates, sync, background fetches, first-run pages).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[object]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(p))]
    if missing:
        message = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
        not_run("browser", message)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for drivers
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()

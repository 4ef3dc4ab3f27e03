"""Suites that need a system service (PostgreSQL, Dovecot, Chromium, systemd-analyze).

``make test`` installs them when it can (root on Debian: ``.ci/system-deps.sh``). Where one is
still missing, its tests are not run — never quietly: ``not_run`` records the suite and why, and
the session ends with one loud line per suite (``tests/conftest.py``). Under ``CI=true`` a
missing suite is a failure instead.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

NOT_RUN: dict[str, str] = {}


def not_run(suite: str, why: object) -> NoReturn:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the {suite} tests cannot run: {why}", pytrace=False)
    NOT_RUN.setdefault(suite, str(why))
    pytest.skip(f"!!! {suite} tests NOT RUN: {why}")

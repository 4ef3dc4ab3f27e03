"""Session-wide fixtures shared by the store and system suites."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.store.postgres import Cluster, Missing, cluster
from tests.suites import NOT_RUN, not_run


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster per test session (PostgreSQL is installed by .ci/run;
    without it locally the PostgreSQL variants say so loudly, and under CI=true they fail)."""
    try:
        with cluster() as c:
            yield c
    except Missing as exc:
        not_run("PostgreSQL", exc)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One loud line per suite that could not run, at the very end where nobody misses it."""
    for suite, why in sorted(NOT_RUN.items()):
        terminalreporter.write_line(
            f"!!! {suite} tests NOT RUN: {why} — root on Debian: bash .ci/system-deps.sh",
            red=True,
            bold=True,
        )

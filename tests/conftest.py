"""Session-wide fixtures shared by the store and system suites."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.store.postgres import Cluster, Missing, cluster


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster per test session (PostgreSQL is installed by .ci/run;
    without it locally the PostgreSQL variants say so loudly, and under CI=true they fail)."""
    try:
        with cluster() as c:
            yield c
    except Missing as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {exc}", pytrace=False)
        pytest.skip(f"!!! PostgreSQL tests NOT RUN: {exc}")

"""Every store test runs twice: on SQLite (a real file under tmp_path) and on a real PostgreSQL
cluster started once per session. Without PostgreSQL binaries the PostgreSQL half is skipped
with the reason shown — except under CI=true, where that is a failure."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from campaignd.queue.store import Store

from .factory import OpenStore
from .postgres import Cluster

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest) -> str:
    """A URL to a fresh, empty database. SQLite's is relative: Store.open resolves it against
    the root (tmp_path) and creates the state/ directory."""
    if request.param == "sqlite":
        return "sqlite:///state/campaignd.db"
    pg: Cluster = request.getfixturevalue("pg_cluster")
    return await pg.create_database()


@pytest.fixture
async def store(db_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(db_url, root=tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def open_store(db_url: str, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """A factory for more Store instances on the same database (other daemons, re-opens)."""
    opened: list[Store] = []

    async def factory() -> Store:
        s = await Store.open(db_url, root=tmp_path)
        opened.append(s)
        return s

    try:
        yield factory
    finally:
        for s in opened:
            await s.close()

"""Fixtures for the feedback tests: a store on SQLite and PostgreSQL, a Dovecot, TLS files."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from campaignd.queue.store import Store
from tests.integration.smtp.servers import TlsFiles, make_tls
from tests.integration.store.postgres import Cluster
from tests.suites import not_run

from .dovecot import Dovecot, Missing

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh database: a SQLite file under tmp_path, or one on the session's PostgreSQL."""
    if request.param == "sqlite":
        url = "sqlite:///state/campaignd.db"
    else:
        pg: Cluster = request.getfixturevalue("pg_cluster")
        url = await pg.create_database()
    s = await Store.open(url, root=tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open("sqlite:///state/campaignd.db", root=tmp_path)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="session")
def imap_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("imap-tls"), name="campaignd IMAP test CA")


MakeDovecot = Callable[..., Dovecot]


@pytest.fixture
def make_dovecot(imap_tls: TlsFiles) -> Iterator[MakeDovecot]:
    """Dovecots of this test's own (keyword arguments as ``Dovecot``), stopped by PID and
    removed at teardown. Without Dovecot the test is skipped loudly — under CI=true it fails."""
    started: list[Dovecot] = []

    def make(**kwargs: Any) -> Dovecot:
        server = Dovecot(imap_tls, **kwargs)
        started.append(server)
        try:
            return server.start()
        except Missing as exc:
            not_run("Dovecot", exc)

    yield make
    for server in started:
        server.cleanup()


@pytest.fixture
def dovecot(make_dovecot: MakeDovecot) -> Dovecot:
    return make_dovecot()


@pytest.fixture(scope="session")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA that signed nothing the test servers use: trusting only it must fail."""
    return make_tls(tmp_path_factory.mktemp("other-ca"), name="somebody else's CA").ca_file

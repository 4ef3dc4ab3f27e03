"""Fixtures for SMTP tests: real aiosmtpd servers on loopback, stopped after each test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from campaignd.config.model import Service
from campaignd.delivery.smtp import Envelope, SmtpPool

from .servers import RecordingServer, TlsFiles, make_tls

MakeServer = Callable[..., RecordingServer]
MakePool = Callable[..., SmtpPool]
_ids = itertools.count(1)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A CA plus a localhost/127.0.0.1 certificate it signed (made once per run)."""
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def other_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A second, unrelated CA: its certificates are unknown to a client trusting tls_files."""
    return make_tls(tmp_path_factory.mktemp("other-tls"), name="somebody else's CA")


@pytest.fixture
def make_server() -> Iterator[MakeServer]:
    """Start RecordingServers (keyword arguments as RecordingServer); all stop at teardown."""
    started: list[RecordingServer] = []

    def make(**kwargs: Any) -> RecordingServer:
        server = RecordingServer(**kwargs).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def server(make_server: MakeServer) -> RecordingServer:
    """A plain SMTP server that accepts everything unless told otherwise."""
    return make_server()


@pytest.fixture
async def make_pool() -> AsyncIterator[MakePool]:
    """SmtpPools that are closed at teardown (so no session outlives its test)."""
    pools: list[SmtpPool] = []

    def make(service: Service, **kwargs: Any) -> SmtpPool:
        kwargs.setdefault("local_hostname", "client.test")
        pool = SmtpPool("relay", service, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        await pool.close(grace=1.0)


def envelope(to: str = "ann@example.com", *, body: str = "Hello!", subject: str = "Hi") -> Envelope:
    """A small, valid message for ``to``."""
    data = (
        f"From: Acme <outreach@acme.test>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{next(_ids)}@acme.test>\r\n\r\n{body}\r\n"
    ).encode()
    return Envelope("outreach@acme.test", to, data, to.rpartition("@")[2])

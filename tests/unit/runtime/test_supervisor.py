"""The supervisor: a failing loop is logged and restarted with backoff, progress clears its
failures, one-shot jobs never lose an exception, and stopping is bounded."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

from campaignd.runtime.daemon import Daemon
from campaignd.runtime.supervisor import FAILING_AFTER, Supervisor
from campaignd.runtime.systemd import Notifier


async def test_a_failing_loop_is_restarted_until_it_runs(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor(initial_backoff=0.001, max_backoff=0.004)
    runs = 0
    done = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs <= 4:
            raise ConnectionError(f"database went away ({runs})")
        sup.progress("flaky")
        done.set()
        await asyncio.Event().wait()  # a loop that now runs for good

    with caplog.at_level(logging.ERROR, logger="campaignd.supervisor"):
        sup.start("flaky", flaky)
        await asyncio.wait_for(done.wait(), 5)
    loop = sup.loops["flaky"]
    assert loop.restarts == 4 and loop.state == "running"
    assert loop.failures == 0  # progress cleared them
    assert loop.last_error == "ConnectionError: database went away (4)"
    assert sup.failing() == []
    # each failure is logged; the traceback only with the first of a streak
    assert sum("flaky loop failed" in r.message for r in caplog.records) == 4
    assert sum(bool(r.exc_info) for r in caplog.records) == 1
    assert await sup.stop() == []
    assert loop.state == "stopped"


async def test_a_loop_that_keeps_failing_counts_as_failing() -> None:
    sup = Supervisor(initial_backoff=0.001, max_backoff=0.002)
    failed = asyncio.Event()

    async def broken() -> None:
        if sup.loops["broken"].failures + 1 >= FAILING_AFTER:
            failed.set()
        raise OSError("disk I/O error")

    sup.start("broken", broken)
    await asyncio.wait_for(failed.wait(), 5)
    await asyncio.wait_for(_until(lambda: bool(sup.failing())), 5)
    assert sup.failing()[0].name == "broken"
    assert sup.snapshot()["broken"]["last_error"] == "OSError: disk I/O error"
    await sup.stop()


async def test_a_loop_that_returns_has_finished() -> None:
    sup = Supervisor()

    async def once() -> None:
        sup.progress("once")

    sup.start("once", once)
    assert await sup.wait("once", 5)
    assert sup.loops["once"].state == "stopped" and sup.loops["once"].restarts == 0


async def test_a_spawned_job_logs_its_exception(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor()

    async def job() -> None:
        raise RuntimeError("pause could not be written")

    with caplog.at_level(logging.ERROR, logger="campaignd.supervisor"):
        sup.spawn("auto-pause-news", job())
        await asyncio.gather(*sup._jobs, return_exceptions=True)
        await asyncio.sleep(0)  # the done-callback runs on the next loop turn
    assert any("auto-pause-news failed" in r.message for r in caplog.records)


async def test_stop_does_not_wait_forever_for_a_loop_that_swallows_cancellation() -> None:
    sup = Supervisor()
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue  # a driver that eats the cancellation

    sup.start("stubborn", stubborn)
    await asyncio.sleep(0)
    assert await sup.stop(timeout=0.05) == ["stubborn"]
    release.set()
    sup._tasks["stubborn"].cancel()


async def _until(check: object) -> None:
    """For state the supervisor exposes no event for; callers bound it with wait_for."""
    while not check():  # type: ignore[operator]  # noqa: ASYNC110
        await asyncio.sleep(0.001)


async def test_health_names_the_failing_loop_and_the_watchdog_stops_pinging(
    tmp_path: Path,
) -> None:
    """A daemon whose loop keeps failing answers unhealthy and sends no WATCHDOG=1, so
    systemd's WatchdogSec= restarts it; READY/STATUS still say why."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        address = str(tmp_path / "notify.sock")
        server.bind(address)
        server.setblocking(False)
        daemon = Daemon(tmp_path)
        daemon.run_state = "running"
        daemon.notifier = Notifier(address, watchdog_usec=20_000)
        daemon.supervisor = Supervisor(initial_backoff=0.001, max_backoff=0.002)

        async def broken() -> None:
            raise ConnectionRefusedError("could not connect to server")

        assert daemon.health() == (True, "")
        daemon.supervisor.start("conductor", broken)
        await asyncio.wait_for(_until(lambda: bool(daemon.supervisor.failing())), 5)
        ok, why = daemon.health()
        assert not ok
        assert why.startswith("the conductor loop keeps failing")
        assert "could not connect to server" in why

        interval = daemon.notifier.watchdog_interval
        assert interval is not None
        daemon.supervisor.start("watchdog", lambda: daemon._watchdog(interval))
        await asyncio.wait_for(
            _until(lambda: daemon.supervisor.loops["watchdog"].last_progress > 0), 5
        )
        await daemon.supervisor.stop()
        sent = []
        while True:
            try:
                sent.append(server.recv(4096).decode())
            except BlockingIOError:
                break
        assert sent, "the watchdog loop said nothing"
        assert not any("WATCHDOG=1" in s for s in sent)
        assert any("NOT HEALTHY: the conductor loop keeps failing" in s for s in sent)

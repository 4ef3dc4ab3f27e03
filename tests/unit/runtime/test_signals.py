"""Two-stage stop, in-process with real signals: the first SIGTERM drains, a second one exits
at once without waiting for a stalled SMTP transaction, which is marked uncertain."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from campaignd.queue.store import Store
from campaignd.runtime.daemon import Daemon, database_url
from tests.integration.smtp.servers import RecordingServer
from tests.rootfiles import make_root


async def _until(what: str, check: object, within: float = 15.0) -> None:
    """Await a state the daemon exposes no event for (its run_state), bounded."""
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def one_session_root(tmp_path: Path, port: int, *, drain: str, extra: str = "") -> Path:
    """The minimal root sending through one session to the test's server."""
    return make_root(
        tmp_path,
        {
            "campaignd.yaml": f"timezone: UTC\ndrain_timeout: {drain}\n",
            "services.d/sink.yaml": (
                f'from: "Acme <news@acme.example>"\nhost: 127.0.0.1\nport: {port}\n'
                f"security: none\nmax_connections: 1\n{extra}"
            ),
        },
    )


async def test_a_second_sigterm_exits_without_waiting_for_a_stalled_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAMPAIGND_LISTEN", "127.0.0.1:0")
    with RecordingServer() as smtp:
        smtp.stall("data")  # every DATA waits for release(), which never comes before the exit
        root = one_session_root(tmp_path, smtp.port, drain="1h")
        daemon = Daemon(root)
        run = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)
        assert await asyncio.to_thread(smtp.wait_stalled, 1, 15.0)

        os.kill(os.getpid(), signal.SIGTERM)
        await _until("draining", lambda: daemon.run_state == "draining")
        # The first signal waits (drain_timeout is an hour) for the stalled transaction.
        done, _ = await asyncio.wait({run}, timeout=0.3)
        assert not done

        os.kill(os.getpid(), signal.SIGTERM)
        rc = await asyncio.wait_for(run, 15)
        assert rc == 0 and daemon.run_state == "stopped"
        assert not smtp.messages  # it did not wait for the relay to take the message
        smtp.release()

    assert daemon.config is not None
    store = await Store.open(database_url(daemon.config), root=root, day_zone=ZoneInfo("UTC"))
    try:
        # The stalled message may have been delivered: it is marked uncertain at the exit and
        # never resent by itself; the other recipient was never started and is still queued.
        assert await store.recover(now=time.time()) == 0
        counts = (await store.counts("launch")).counts
        assert counts.get("uncertain") == 1 and counts.get("queued") == 1
        assert counts.get("sent", 0) == 0
    finally:
        await store.close()


async def test_drain_timeout_bounds_the_exit_even_while_a_relay_stalls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One SIGTERM, drain_timeout 1s, a DATA that never answers: the daemon cancels the send
    after the timeout, marks it uncertain and exits 0 — it does not wait for the relay."""
    monkeypatch.setenv("CAMPAIGND_LISTEN", "127.0.0.1:0")
    with RecordingServer() as smtp:
        smtp.stall("data")
        root = one_session_root(tmp_path, smtp.port, drain="1s", extra="timeout: 1h\n")
        daemon = Daemon(root)
        run = asyncio.create_task(daemon.run())
        await asyncio.wait_for(daemon.ready.wait(), 30)
        assert await asyncio.to_thread(smtp.wait_stalled, 1, 15.0)
        os.kill(os.getpid(), signal.SIGTERM)
        # Without the bound this waits for the relay, which only answers after release().
        rc = await asyncio.wait_for(run, 15)
        assert rc == 0 and not smtp.messages
        smtp.release()

    assert daemon.config is not None
    store = await Store.open(database_url(daemon.config), root=root, day_zone=ZoneInfo("UTC"))
    try:
        counts = (await store.counts("launch")).counts
        assert counts.get("uncertain") == 1 and counts.get("queued") == 1
    finally:
        await store.close()

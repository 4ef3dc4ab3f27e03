"""Self-healing with the real parts failing: completion against retry, dead daemons, a SQLite disk
that fills up, a PostgreSQL server restarted and stopped in the middle of sending.

Each asserts what the operator cares about: nothing lost, no row left in ``sending``, sending
resumes by itself, and ``health`` says why while it cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from campaignd.queue.states import ClaimLost, TransitionError
from campaignd.queue.store import Outcome, Store, StoreUnavailable
from tests.suites import not_run

from .factory import T0, OpenStore, seed
from .postgres import Cluster

Check = Callable[[], bool | Awaitable[bool]]


async def until(check: Check, what: str, *, within: float = 30.0) -> None:
    """Wait for a condition of the outside world (a server's lock table, a thread's retries)
    that no event announces, checking every 20 ms."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        got = check()
        if not isinstance(got, bool):
            got = await got
        if got:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


async def failed_campaign(store: Store, n: int) -> list[int]:
    """A campaign whose ``n`` messages all failed: nothing pending, ready to complete."""
    await seed(store, n=n)
    got = await store.claim(worker="w:1", now=T0, lease=600, limit=n, campaign_ids=["launch"])
    await store.record(
        [Outcome(id=c.id, status="failed", at=T0, error="550 no", code=550) for c in got]
    )
    return [c.id for c in got]


class Gate:
    """A ``_race_hook`` that holds the named transaction open until ``go`` is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.inside = asyncio.Event()
        self.go = asyncio.Event()

    async def __call__(self, name: str) -> None:
        if name == self.name:
            self.inside.set()
            await self.go.wait()


async def _blocked_on_lock(db_url: str, n: int = 1) -> bool:
    """PostgreSQL: ``n`` backends wait for a row lock (the second transaction really queued
    behind the first, not merely started later)."""
    conn = await asyncpg.connect(db_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        )
    finally:
        await conn.close()
    return int(waiting) >= n


async def _second_waits(db_url: str, task: asyncio.Task[Any]) -> None:
    if db_url.startswith("postgresql"):
        await until(lambda: _blocked_on_lock(db_url), "the second transaction waits for the lock")
    else:
        # SQLite: BEGIN IMMEDIATE serializes writers; the second is in its busy wait (or not
        # yet begun) — either way it cannot have read anything the first will change.
        await asyncio.sleep(0)
    assert not task.done()


async def test_retry_inside_completion_reopens_the_campaign(
    db_url: str, open_store: OpenStore
) -> None:
    conductor, api = await open_store(), await open_store()
    ids = await failed_campaign(conductor, 3)
    gate = Gate("complete")
    conductor._race_hook = gate
    completing = asyncio.create_task(conductor.complete("launch", "no step can follow"))
    await gate.inside.wait()  # completion has proved "nothing pending" and holds the row
    retrying = asyncio.create_task(api.retry("launch", ["failed"], now=T0 + 60))
    await _second_waits(db_url, retrying)
    gate.go.set()
    row = await completing
    assert row.state == "completed"
    assert await retrying == 3
    after = await api.get_campaign("launch")
    assert after is not None and (after.state, after.finished_at) == ("sending", None)
    for mid in ids:
        msg = await api.get_message(mid)
        assert msg is not None and msg.status == "queued"
        assert msg.last_error == "re-queued by the operator (was failed)"
        assert msg.last_code is None


async def test_completion_inside_retry_leaves_the_campaign_open(
    db_url: str, open_store: OpenStore
) -> None:
    conductor, api = await open_store(), await open_store()
    await failed_campaign(conductor, 3)
    await conductor.set_campaign_state("launch", "waiting", "next drip step due later")
    gate = Gate("retry")
    api._race_hook = gate
    retrying = asyncio.create_task(api.retry("launch", ["failed"], now=T0 + 60))
    await gate.inside.wait()  # rows re-queued, not committed yet
    completing = asyncio.create_task(conductor.complete("launch"))
    await _second_waits(db_url, completing)
    gate.go.set()
    assert await retrying == 3
    row = await completing
    assert row.state == "sending", "completed although 3 rows were just re-queued"
    assert (await conductor.pending("launch")) == 3


async def test_complete_only_when_nothing_is_pending(store: Store) -> None:
    await seed(store, n=2)
    assert (await store.complete("launch", "done")).state == "sending"
    got = await store.claim(worker="w:1", now=T0, lease=600, limit=2, campaign_ids=["launch"])
    await store.record([Outcome(id=c.id, status="sent", service="r", at=T0) for c in got])
    row = await store.complete("launch", "no step can follow")
    assert (row.state, row.reason) == ("completed", "no step can follow")
    assert row.finished_at is not None
    await store.set_campaign_state("launch", "stopped", "stopped by operator")
    assert (await store.complete("launch")).state == "stopped"  # stop is final


async def test_claims_of_a_daemon_that_stopped_its_heartbeat_are_released(
    open_store: OpenStore,
) -> None:
    dead, alive = await open_store(), await open_store()
    await seed(dead, n=4)
    await dead.heartbeat("host-a:1", now=T0)
    await alive.heartbeat("host-b:2", now=T0)
    held = await dead.claim(worker="host-a:1", now=T0, lease=600, limit=2, campaign_ids=["launch"])
    mine = await alive.claim(worker="host-b:2", now=T0, lease=600, limit=1, campaign_ids=["launch"])
    await dead.start(held[0].id, "relay")  # in its SMTP transaction when it died
    await alive.start(mine[0].id, "relay")
    # 20 s later host-a is merely quiet; host-b has kept its heartbeat.
    await alive.heartbeat("host-b:2", now=T0 + 20)
    assert await alive.release_dead("host-b:2", now=T0 + 20) == 0
    # 40 s later it is dead: its unstarted row goes back, its started one is uncertain.
    await alive.heartbeat("host-b:2", now=T0 + 40)
    assert await alive.release_dead("host-b:2", now=T0 + 40) == 2
    started = await alive.get_message(held[0].id)
    unstarted = await alive.get_message(held[1].id)
    own = await alive.get_message(mine[0].id)
    assert started is not None and started.status == "uncertain"
    assert started.last_error is not None and "heartbeats" in started.last_error
    assert unstarted is not None and (unstarted.status, unstarted.attempts) == ("queued", 0)
    assert own is not None and own.status == "sending"
    # Settled once: a second survivor finds nothing left to do, and host-a's row is gone.
    assert await alive.release_dead("host-c:3", now=T0 + 41) == 0
    await alive.retire("host-b:2")
    assert await alive.release_dead("host-c:3", now=T0 + 400) == 0


# ------------------------------------------------------------------ SQLite disk full


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        # Only where mounting is impossible (not root, no CAP_SYS_ADMIN); CI runs as root.
        not_run("disk-full", f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk``; returns the file to delete to give them back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
async def full_disk_store(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    with tmpfs(tmp_path / "disk", "3m") as disk:
        store = await Store.open(f"sqlite:///{disk}/campaignd.db", root=tmp_path, retry_for=1)
        try:
            yield store, disk
        finally:
            with contextlib.suppress(FileNotFoundError):
                (disk / "filler").unlink()
            await store.close()


async def test_sqlite_disk_full_holds_outcomes_and_resumes_when_space_is_back(
    full_disk_store: tuple[Store, Path],
) -> None:
    store, disk = full_disk_store
    await seed(store, n=40)
    claimed = await store.claim(worker="w:1", now=T0, lease=600, limit=40, campaign_ids=["launch"])
    first, rest = claimed[:20], claimed[20:]
    for c in first:
        await store.start(c.id, "relay")
    # Every page in the database file, none in the log: the next commit needs new space.
    with sqlite3.connect(disk / "campaignd.db") as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    filler = fill(disk)

    async def session(mid: int, started: bool) -> None:
        if not started:
            await store.start(mid, "relay")
        await store.record([Outcome(id=mid, status="sent", service="relay", at=T0 + 1)])

    sessions = [asyncio.create_task(session(c.id, True)) for c in first]
    sessions += [asyncio.create_task(session(c.id, False)) for c in rest]
    await until(lambda: store.health == "database disk full", "health says the disk is full")
    assert not store.healthy
    assert not any(t.done() for t in sessions), "an outcome returned before it was committed"
    # Reads still answer, and show nothing was half-written.
    counts = (await store.counts("launch")).counts
    assert (counts["sending"], counts["sent"]) == (40, 0)

    filler.unlink()
    await asyncio.wait_for(asyncio.gather(*sessions), timeout=30)
    assert store.health == "ok"
    counts = (await store.counts("launch")).counts
    assert (counts["sent"], counts["sending"]) == (40, 0)


# ------------------------------------------------------------------ PostgreSQL restart, outage


@pytest.mark.postgres
async def test_postgres_restart_and_outage_mid_send_lose_nothing(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    url = await pg_cluster.create_database()
    store = await Store.open(url, root=tmp_path)
    total, sessions = 240, 8
    try:
        await seed(store, n=total)
        sent_by_smtp: Counter[int] = Counter()
        progress = asyncio.Condition()

        async def session() -> None:
            while True:
                got = await store.claim(
                    worker="host:1", now=T0, lease=600, limit=1, campaign_ids=["launch"]
                )
                if not got:
                    if await store.pending("launch") == 0:
                        return
                    await asyncio.sleep(0.05)
                    continue
                mid = got[0].id
                await store.start(mid, "relay")
                await asyncio.sleep(0.005)  # the SMTP transaction
                sent_by_smtp[mid] += 1
                await store.record([Outcome(id=mid, status="sent", service="relay", at=T0)])
                async with progress:
                    progress.notify_all()

        async def sent_at_least(n: int) -> None:
            async with progress:
                await progress.wait_for(lambda: sum(sent_by_smtp.values()) >= n)

        workers = [asyncio.create_task(session()) for _ in range(sessions)]
        await asyncio.wait_for(sent_at_least(40), timeout=60)
        await asyncio.to_thread(pg_cluster.restart)
        await asyncio.wait_for(sent_at_least(100), timeout=60)
        await asyncio.to_thread(pg_cluster.stop)
        await until(lambda: store.health.startswith("database unreachable"), "health says so")
        await asyncio.sleep(10)  # a 10 s outage while every session wants the database
        assert not store.healthy
        stalled = sum(sent_by_smtp.values())
        await asyncio.to_thread(pg_cluster.start)
        await asyncio.wait_for(asyncio.gather(*workers), timeout=120)
        assert sum(sent_by_smtp.values()) > stalled, "sending did not resume"
        assert store.health == "ok"
        counts = (await store.counts("launch")).counts
        assert counts["sending"] == 0, "a row was left in sending"
        assert counts["sent"] == total
        # Exactly once: nothing lost, nothing sent twice.
        assert set(sent_by_smtp) == {r.id async for r in store.iter_messages("launch")}
        assert max(sent_by_smtp.values()) == 1
    finally:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(pg_cluster.start)  # if the test died while it was down
        await store.close()


async def test_a_daemon_taken_for_dead_cannot_start_what_it_no_longer_holds(
    open_store: OpenStore,
) -> None:
    slow, survivor = await open_store(), await open_store()
    await seed(slow, n=2)
    await slow.heartbeat("host-a:1", now=T0)
    a, b = await slow.claim(worker="host-a:1", now=T0, lease=600, limit=2, campaign_ids=["launch"])
    # host-a stalls (no heartbeat for 40 s) without dying; host-b settles its claims.
    await survivor.heartbeat("host-b:2", now=T0 + 40)
    assert await survivor.release_dead("host-b:2", now=T0 + 40) == 2
    # Back in the queue and not claimed again yet: starting it is a refused transition.
    with pytest.raises(TransitionError, match="is queued: start"):
        await slow.start(a.id, "relay")
    # Claimed again by the survivor: the stale claim must not send it a second time.
    again = await survivor.claim(
        worker="host-b:2", now=T0 + 41, lease=600, limit=2, campaign_ids=["launch"]
    )
    assert {c.id for c in again} == {a.id, b.id}
    with pytest.raises(ClaimLost, match="held by host-b:2, not host-a:1"):
        await slow.start(b.id, "relay")
    await survivor.start(b.id, "relay")
    # Nor may its outcome (here the "internal error → try later" a worker records when a
    # send fails oddly) land on the row the survivor is sending now.
    late = Outcome(id=b.id, status="deferred", at=T0 + 42, next_attempt_at=T0 + 99, error="x")
    with pytest.raises(ClaimLost, match="held by host-b:2, not host-a:1"):
        await slow.record([late])
    row = await survivor.get_message(b.id)
    assert row is not None and (row.status, row.service, row.claimed_by) == (
        "sending", "relay", "host-b:2",
    )  # fmt: skip


async def test_heartbeat_renews_the_claims_of_a_live_daemon(store: Store) -> None:
    await seed(store, n=3)
    mine = await store.claim(worker="host-a:1", now=T0, lease=60, limit=2, campaign_ids=["launch"])
    other = await store.claim(worker="host-b:2", now=T0, lease=60, limit=1, campaign_ids=["launch"])
    await store.heartbeat("host-a:1", now=T0 + 50, lease=60)
    # host-b did not renew: only its claim has run out at T0 + 100.
    assert await store.reclaim_expired(now=T0 + 100) == 0  # unstarted: back to the queue
    rows = {r.id: r for r in await store.messages_page("launch")}
    assert [rows[c.id].status for c in mine] == ["sending", "sending"]
    assert rows[other[0].id].status == "queued"
    assert await store.reclaim_expired(now=T0 + 111) == 0
    assert (await store.counts("launch")).counts["queued"] == 3


@pytest.mark.postgres
async def test_check_reports_an_unreachable_server_and_recovers(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    store = await Store.open(await pg_cluster.create_database(), root=tmp_path, retry_for=0.5)
    try:
        assert await store.check() == "ok"
        await asyncio.to_thread(pg_cluster.stop)
        try:
            assert (await store.check()).startswith("database unreachable: ")
            assert not store.healthy
            with pytest.raises(StoreUnavailable, match="database unreachable"):
                await store.counts("launch")
        finally:
            await asyncio.to_thread(pg_cluster.start)
        assert await store.check() == "ok" and store.healthy
        assert (await store.counts("launch")).counts["sent"] == 0
    finally:
        await store.close()

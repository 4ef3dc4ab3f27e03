"""Pace permits shared through one real PostgreSQL database by two engines (two daemons)."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from campaignd.delivery.limits import PaceWant, decide
from campaignd.errors import StoreError
from campaignd.queue.paces import create_table, take
from campaignd.queue.store import Outcome, Store
from tests.integration.store.factory import T0
from tests.integration.store.postgres import Cluster
from tests.integration.store.test_record import claimed_ids


def test_decide_is_the_limiters_arithmetic() -> None:
    wants = [PaceWant("service:s", 0.1), PaceWant("campaign:c", 1.0, burst=2)]
    at, after = decide(wants, {}, 100.0)
    assert at == 100.0 and after == {"service:s": (100.1, 0.1), "campaign:c": (101.0, 1.0)}
    at, _ = decide(wants, after, 100.05)
    assert at == pytest.approx(100.1)  # the service's pace
    at, _ = decide(wants, {"service:s": (100.1, 0.1), "campaign:c": (103.0, 1.0)}, 100.2)
    assert at == pytest.approx(102.0)  # the campaign's, burst 2: tat − 1 interval


def most_in_window(times: list[float], width: float) -> int:
    times = sorted(times)
    j = best = 0
    for i, t in enumerate(times):
        while times[j] + width <= t:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.postgres
async def test_two_daemons_share_one_pace(pg_cluster: Cluster) -> None:
    url = await pg_cluster.create_database()
    engines: list[AsyncEngine] = [create_async_engine(url) for _ in range(2)]
    try:
        await create_table(engines[0])
        wants = [PaceWant("service:relay", 0.1), PaceWant("campaign:news", 0.05)]
        taken: list[float] = []
        end = time.time() + 1.5

        async def sender(engine: AsyncEngine) -> None:
            while True:
                now = time.time()
                if now >= end:
                    return
                async with engine.begin() as conn:
                    later = await take_one(conn, wants, now)
                if later is None:
                    taken.append(now)
                else:
                    await asyncio.sleep(max(0.0, later - time.time()))

        await asyncio.gather(*(sender(e) for e in engines for _ in range(3)))
        taken.sort()
        assert 8 <= len(taken) <= 16  # 1.5 s at 10/second: at most one each 0.1 s, plus one
        gaps = [b - a for a, b in itertools.pairwise(taken)]
        assert min(gaps) >= 0.1 - 1e-9, gaps  # one every 0.1 s across both
        assert most_in_window(taken, 1.0) <= 10
    finally:
        for e in engines:
            await e.dispose()


@pytest.mark.postgres
async def test_a_permit_is_all_or_nothing(pg_cluster: Cluster) -> None:
    url = await pg_cluster.create_database()
    engine = create_async_engine(url)
    try:
        await create_table(engine)
        async with engine.begin() as conn:
            assert await take_one(conn, [PaceWant("campaign:c", 60.0)], 1000.0) is None
        both = [PaceWant("service:s", 1.0), PaceWant("campaign:c", 60.0)]
        async with engine.begin() as conn:
            assert await take_one(conn, both, 1001.0) == pytest.approx(1060.0)
        # the refused permit left the service's pace untouched
        async with engine.begin() as conn:
            assert await take_one(conn, [PaceWant("service:s", 1.0)], 1001.0) is None
            assert await take_one(conn, [PaceWant("service:s", 1.0)], 1001.5) == pytest.approx(
                1002.0
            )
    finally:
        await engine.dispose()


async def take_one(conn: object, wants: list[PaceWant], now: float) -> float | None:
    return await take(conn, wants, now, decide)  # type: ignore[arg-type]


# ---------------------------------------------------------------- through the Store


@pytest.mark.postgres
async def test_store_permits_are_shared_by_two_stores_at_the_databases_clock(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    url = await pg_cluster.create_database()
    a = await Store.open(url, root=tmp_path)  # the migration creates limit_paces
    b = await Store.open(url, root=tmp_path)
    try:
        assert a.shares_limits and b.shares_limits
        wants = [PaceWant("service:relay", 0.2), PaceWant("campaign:news", 0.05)]
        assert await a.take_paces(wants, decide) is None
        before = time.time()
        later = await b.take_paces(wants, decide)  # the other daemon: the pace is taken
        assert later is not None and before < later <= time.time() + 0.2
        await asyncio.sleep(max(0.0, later - time.time()))
        assert await b.take_paces(wants, decide) is None
        assert await a.take_paces([], decide) is None  # nothing to pace: nothing to lock
        # Booking: a permit due within the horizon is taken now for its slot.
        taken, at = await a.book_paces(wants, decide, horizon=0.5)
        assert taken and time.time() < at <= time.time() + 0.25
        taken, again = await b.book_paces(wants, decide, horizon=0.05)
        assert not taken and again == pytest.approx(at + 0.2, abs=0.02)
    finally:
        await a.close()
        await b.close()


async def test_sqlite_keeps_paces_in_process(tmp_path: Path) -> None:
    store = await Store.open("sqlite:///state/c.db", root=tmp_path)
    try:
        assert not store.shares_limits
        with pytest.raises(StoreError, match="PostgreSQL"):
            await store.take_paces([PaceWant("service:s", 1.0)], decide)
    finally:
        await store.close()


async def test_accepted_use_counts_every_daemons_acceptances(store: Store) -> None:
    ids = await claimed_ids(store, 5)
    times = [T0 - 3000, T0 - 50, T0 - 20, T0 - 10]
    await store.record(
        [
            Outcome(id=i, status="sent", service="relay", at=t)
            for i, t in zip(ids[:4], times, strict=True)
        ]
        + [Outcome(id=ids[4], status="failed", service="relay", at=T0 - 5, code=550)]
    )
    day = datetime.fromtimestamp(T0, UTC).date()
    counts, today = await store.accepted_use(service="relay", windows=[60, 3600], now=T0, day=day)
    assert counts == {60: (3, [T0 - 50, T0 - 20, T0 - 10]), 3600: (4, times)}
    assert today == 4  # the failed one does not count
    counts, today = await store.accepted_use(campaign="launch", windows=[30], now=T0)
    assert counts == {30: (2, [T0 - 20, T0 - 10])} and today is None
    with pytest.raises(ValueError):
        await store.accepted_use(windows=[60], now=T0)


@pytest.mark.postgres
async def test_a_daemon_whose_clock_is_off_still_keeps_the_shared_schedule(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    url = await pg_cluster.create_database()
    right = await Store.open(url, root=tmp_path)
    ahead = await Store.open(url, root=tmp_path, clock=lambda: time.time() + 30.0)
    try:
        wants = [PaceWant("service:relay", 0.5)]
        taken, at = await right.book_paces(wants, decide, horizon=0.1)
        assert taken and at == pytest.approx(time.time(), abs=0.05)
        # The other host's clock is 30 s ahead: it is told the next slot in its own clock,
        # one interval after the first — not 30 s early or late.
        taken, again = await ahead.book_paces(wants, decide, horizon=0.1)
        assert not taken and again == pytest.approx(at + 30.0 + 0.5, abs=0.05)
    finally:
        await right.close()
        await ahead.close()

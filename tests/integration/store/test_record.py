"""Recording outcomes: group commit, events, suppression of hard bounces, per-day counts and the
limiter's rebuild from what was sent."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from campaignd.errors import StoreError
from campaignd.queue.store import Outcome, Store
from campaignd.queue.tables import events

from .factory import T0, WORKER, OpenStore, seed

CALLERS = 16


async def claimed_ids(store: Store, n: int, campaign: str = "launch") -> list[int]:
    await seed(store, campaign, n=n)
    got = await store.claim(worker=WORKER, now=T0, lease=600, limit=n, campaign_ids=[campaign])
    return [c.id for c in got]


async def test_concurrent_callers_share_transactions_and_all_commit(
    store: Store, open_store: OpenStore
) -> None:
    ids = await claimed_ids(store, CALLERS * 5)
    per_caller = [ids[i::CALLERS] for i in range(CALLERS)]

    async def session(mine: list[int]) -> None:
        # Like one SMTP connection: each message is committed before the next one is sent.
        for k, mid in enumerate(mine):
            await store.record(
                [
                    Outcome(
                        id=mid, status="sent", service="relay", message_id=f"<{mid}@x>", at=T0 + k
                    )
                ]
            )

    await asyncio.gather(*(session(m) for m in per_caller))
    stats = store.commit_stats
    assert stats.items == len(ids)
    assert stats.transactions < stats.requests, "no two outcomes ever shared a transaction"
    assert stats.largest > 1
    await store.close()
    reopened = await open_store()
    counts = await reopened.counts("launch")
    assert counts.counts["sent"] == len(ids) and counts.counts["sending"] == 0
    row = await reopened.get_message(ids[7])
    assert row is not None
    assert (row.message_id, row.service, row.claimed_by, row.sent_at) == (
        f"<{ids[7]}@x>", "relay", None, T0 + 7 // CALLERS,
    )  # fmt: skip


async def test_a_bad_outcome_does_not_fail_its_neighbours(store: Store) -> None:
    ids = await claimed_ids(store, 3)
    good = [Outcome(id=i, status="sent", service="relay", at=T0) for i in ids[:2]]
    bad = Outcome(id=ids[2], status="failed", at=T0)
    object.__setattr__(bad, "status", "exploded")  # past validation: the CHECK constraint fails
    results = await asyncio.gather(
        store.record(good[:1]), store.record([bad]), store.record(good[1:]), return_exceptions=True
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], sa.exc.IntegrityError)
    counts = (await store.counts("launch")).counts
    assert (counts["sent"], counts["sending"]) == (2, 1)


async def test_hard_bounce_suppresses_the_address_in_the_same_commit(store: Store) -> None:
    [mid] = await claimed_ids(store, 1)
    await store.record(
        [
            Outcome(
                id=mid, status="bounced", service="relay", at=T0 + 2, code=550,
                enhanced="5.1.1", error="550 5.1.1 no such user", suppress=True,
                reason="hard bounce",
            )
        ]
    )  # fmt: skip
    assert await store.suppressed(["USER0@example.com", "user9@example.com"]) == {
        "USER0@example.com"
    }
    [sup] = await store.list_suppressions()
    assert (sup.key, sup.reason, sup.source, sup.campaign_id, sup.created_at) == (
        "user0@example.com", "hard bounce", "relay", "launch", T0 + 2,
    )  # fmt: skip
    row = await store.get_message(mid)
    assert row is not None
    assert (row.status, row.bounced_at, row.last_enhanced) == ("bounced", T0 + 2, "5.1.1")


async def test_every_outcome_leaves_an_event(store: Store) -> None:
    a, b = await claimed_ids(store, 2)
    await store.record(
        [
            Outcome(id=a, status="deferred", service="relay", at=T0, code=421,
                    error="421 slow down", next_attempt_at=T0 + 60),
            Outcome(id=b, status="suppressed", at=T0, error="on the suppression list"),
        ]
    )  # fmt: skip

    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.select(events.c.message, events.c.kind, events.c.code, events.c.source).order_by(
                    events.c.message
                )
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (a, "deferred", 421, "relay"),
        (b, "suppressed", None, "dispatcher"),
    ]


async def test_outcome_for_a_deleted_message_is_dropped_not_fatal(store: Store) -> None:
    [mid] = await claimed_ids(store, 1)
    await store.set_campaign_state("launch", "stopped", "stopped by operator")
    await store.delete_campaign("launch")
    await store.record([Outcome(id=mid, status="sent", service="relay", at=T0)])
    assert await store.get_message(mid) is None


def test_outcomes_are_validated() -> None:
    with pytest.raises(ValueError, match="next_attempt_at"):
        Outcome(id=1, status="deferred", at=T0)
    with pytest.raises(ValueError, match="queued"):
        Outcome(id=1, status="queued", at=T0)


async def test_service_days_and_limiter_rebuild(db_url: str, tmp_path: Path) -> None:
    # Days are counted in the store's day zone: 23:30 UTC is already tomorrow in Berlin.
    store = await Store.open(db_url, root=tmp_path, day_zone=ZoneInfo("Europe/Berlin"))
    try:
        ids = await claimed_ids(store, 6)
        day1 = 1_799_971_200.0  # 2027-01-15 00:00 UTC
        times = [day1 + 3600, day1 + 7200, day1 + 23.5 * 3600, day1 + 86400 + 60]
        await store.record(
            [
                Outcome(id=i, status="sent", service="relay", at=t)
                for i, t in zip(ids[:4], times, strict=True)
            ]
            + [Outcome(id=ids[4], status="failed", service="relay", at=day1, code=550)]
            + [Outcome(id=ids[5], status="sent", service="other", at=day1 + 10)]
        )
        assert await store.first_send_day("relay") == date(2027, 1, 15)
        assert await store.first_send_day("nobody") is None
        assert await store.sent_on_day("relay", date(2027, 1, 15)) == 2
        assert await store.sent_on_day("relay", date(2027, 1, 16)) == 2
        assert await store.sent_on_day("relay", date(2027, 1, 17)) == 0
        assert await store.sent_starts("relay", day1 + 3600) == times
        assert await store.sent_starts("relay", day1 + 5000) == times[1:]
        assert await store.campaign_starts("launch", day1) == sorted([*times, day1 + 10])
        # Deleting the campaign keeps the days: warm-up does not start over.
        await store.set_campaign_state("launch", "completed")
        await store.delete_campaign("launch")
        assert await store.first_send_day("relay") == date(2027, 1, 15)
        assert await store.sent_on_day("relay", date(2027, 1, 16)) == 2
    finally:
        await store.close()


async def test_a_cancelled_caller_still_gets_its_outcome_committed(
    store: Store, open_store: OpenStore
) -> None:
    [mid] = await claimed_ids(store, 1)
    outcome = Outcome(id=mid, status="sent", service="relay", at=T0)
    task = asyncio.create_task(store.record([outcome]))
    await asyncio.sleep(0)  # one loop turn: the task hands its outcome to the writer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await store.close()  # commits what was handed over
    with pytest.raises(StoreError, match="closed"):
        await store.record([outcome])
    row = await (await open_store()).get_message(mid)
    assert row is not None and row.status == "sent"

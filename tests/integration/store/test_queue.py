"""The queue: idempotent enqueue, claims with leases, release, pause, recovery, retry."""

from __future__ import annotations

import asyncio

import pytest

from campaignd.queue.store import Outcome, Store

from .factory import T0, WORKER, OpenStore, person, seed


async def claim_all(
    store: Store, campaigns: tuple[str, ...] = ("launch",), **kw: float
) -> list[int]:
    got = await store.claim(
        worker=WORKER,
        now=kw.get("now", T0),
        lease=kw.get("lease", 600.0),
        limit=int(kw.get("limit", 1000)),
        campaign_ids=campaigns,
    )
    return [c.id for c in got]


async def test_enqueue_twice_creates_each_message_once(store: Store) -> None:
    await store.ensure_campaign("launch", state="sending")
    people = [person(i) for i in range(5)]
    assert await store.add_recipients("launch", people) == 5
    assert await store.add_recipients("launch", people) == 0
    items = [(p.key, "intro") for p in people]
    assert await store.enqueue("launch", 0, 1, items, due=T0, batch=2) == 5
    assert await store.enqueue("launch", 0, 1, items, due=T0, batch=2) == 0
    # A re-run with overlap creates only the new pairs; a second step is another message.
    assert await store.enqueue("launch", 0, 1, items[:2], due=T0) == 0
    assert await store.enqueue("launch", 0, 2, items[:2], due=T0) == 2
    counts = await store.counts("launch")
    assert counts.total == 7
    assert counts.by_step[1]["queued"] == 5


async def test_claim_carries_what_the_worker_renders_and_sends(store: Store) -> None:
    await seed(store, n=2, templates=("a", "b"))
    claimed = await store.claim(
        worker=WORKER, now=T0 + 1, lease=60, limit=10, campaign_ids=["launch"]
    )
    assert [(c.recipient, c.template) for c in claimed] == [
        ("user0@example.com", "a"),
        ("user1@example.com", "b"),
    ]
    c = claimed[1]
    assert (c.campaign_id, c.edition, c.step, c.attempts) == ("launch", 0, 1, 1)
    assert (c.email, c.smtp_address, c.domain) == ("User1@example.com",) * 2 + ("example.com",)
    assert dict(c.fields) == {"email": "User1@example.com", "first_name": "Name1", "n": "1"}
    assert c.timezone == "Europe/Berlin"
    assert c.first_attempt_at == T0 + 1
    row = await store.get_message(c.id)
    assert row is not None
    assert (row.status, row.claimed_by, row.claimed_until) == ("sending", WORKER, T0 + 61)


async def test_claim_tells_which_recipients_are_on_the_suppression_list(store: Store) -> None:
    # Read in the claim's own transaction (both drivers), compared as the list compares keys:
    # the dispatcher asks the database nothing else before it sends.
    await seed(store, n=3)
    await store.suppress(" USER1@Example.com ", reason="bounced", source="test")
    claimed = await store.claim(
        worker=WORKER, now=T0 + 1, lease=60, limit=10, campaign_ids=["launch"]
    )
    assert [(c.recipient, c.suppressed) for c in claimed] == [
        ("user0@example.com", False),
        ("user1@example.com", True),
        ("user2@example.com", False),
    ]


async def test_claim_takes_due_rows_oldest_first_and_only_due(store: Store) -> None:
    await seed(store, n=3, due=T0 + 100)
    await seed(store, n=2, due=T0 - 50, start=3)
    assert await store.next_due(["launch"]) == T0 - 50
    first = await store.claim(worker=WORKER, now=T0, lease=60, limit=10, campaign_ids=["launch"])
    assert [c.recipient for c in first] == ["user3@example.com", "user4@example.com"]
    assert await store.next_due(["launch"]) == T0 + 100
    assert await claim_all(store, now=T0 + 99) == []
    assert len(await claim_all(store, now=T0 + 100, limit=2)) == 2
    assert len(await claim_all(store, now=T0 + 100)) == 1


async def test_two_daemons_never_claim_the_same_row(store: Store, open_store: OpenStore) -> None:
    await seed(store, n=300)
    other = await open_store()
    seen: dict[str, list[int]] = {"a": [], "b": []}

    async def daemon(name: str, s: Store) -> None:
        while True:
            got = await s.claim(
                worker=f"{name}:1", now=T0, lease=600, limit=7, campaign_ids=["launch"]
            )
            if not got:
                return
            seen[name].extend(c.id for c in got)

    await asyncio.gather(daemon("a", store), daemon("b", other), daemon("a", store))
    a, b = seen["a"], seen["b"]
    assert len(a) + len(b) == 300
    assert len(set(a) | set(b)) == 300, "a row was handed out twice"
    if store.dialect != "sqlite":
        # SQLite's busy handler backs off, so a waiting second process may lose every race;
        # one daemon per SQLite file is the supported set-up. PostgreSQL must interleave.
        assert b, "the second daemon never got a row: claims did not interleave"


async def test_paused_in_the_database_means_nothing_is_claimed(store: Store) -> None:
    await seed(store, n=3)
    await seed(store, "other", n=2)
    await store.set_campaign_state("launch", "paused", "paused by operator")
    # The worker still lists it as active: the database wins.
    claimed = await store.claim(
        worker=WORKER, now=T0, lease=60, limit=10, campaign_ids=["launch", "other"]
    )
    assert {c.campaign_id for c in claimed} == {"other"}
    await store.set_campaign_state("launch", "sending", None, only_from=["paused"])
    assert len(await claim_all(store)) == 3


async def test_release_hands_rows_back_without_counting_an_attempt(store: Store) -> None:
    await seed(store, n=2)
    a, b = await claim_all(store)
    await store.release([a], next_attempt_at=T0 + 30)
    row = await store.get_message(a)
    assert row is not None
    assert (row.status, row.attempts, row.first_attempt_at, row.claimed_by) == (
        "queued", 0, None, None,
    )  # fmt: skip
    assert await claim_all(store, now=T0 + 29) == []
    assert await claim_all(store, now=T0 + 30) == [a]
    # A row that had been deferred before goes back as deferred, its history kept.
    await store.record(
        [Outcome(id=b, status="deferred", at=T0, error="451 busy", next_attempt_at=T0 + 40)]
    )
    assert await claim_all(store, now=T0 + 40) == [b]
    await store.release([b], next_attempt_at=T0 + 50)
    row = await store.get_message(b)
    assert row is not None
    assert (row.status, row.attempts, row.first_attempt_at) == ("deferred", 1, T0)


async def test_deferred_is_not_claimable_before_its_time(store: Store) -> None:
    await seed(store, n=1)
    [mid] = await claim_all(store)
    await store.record(
        [
            Outcome(
                id=mid, status="deferred", service="relay", at=T0 + 1, code=451,
                enhanced="4.7.1", error="451 4.7.1 try later", next_attempt_at=T0 + 300,
            )
        ]
    )  # fmt: skip
    row = await store.get_message(mid)
    assert row is not None
    assert (row.status, row.last_code, row.last_enhanced, row.next_attempt_at) == (
        "deferred", 451, "4.7.1", T0 + 300,
    )  # fmt: skip
    assert await store.pending("launch") == 1
    assert await claim_all(store, now=T0 + 299) == []
    again = await store.claim(
        worker=WORKER, now=T0 + 300, lease=60, limit=5, campaign_ids=["launch"]
    )
    assert [(c.id, c.attempts, c.first_attempt_at) for c in again] == [(mid, 2, T0)]


async def test_has_pending_follows_the_rows_until_the_last_is_settled(store: Store) -> None:
    assert await store.has_pending("launch") is False  # no row at all
    await seed(store, n=2)
    first, second = await claim_all(store)
    assert await store.has_pending("launch") is True  # sending counts
    await store.record([Outcome(id=first, status="sent", service="relay", at=T0 + 1)])
    assert await store.has_pending("launch") is True
    await store.record(
        [Outcome(id=second, status="deferred", at=T0 + 1, error="451", next_attempt_at=T0 + 9)]
    )
    assert await store.has_pending("launch") is True  # deferred counts
    [again] = await claim_all(store, now=T0 + 9)
    await store.record([Outcome(id=again, status="failed", service="relay", at=T0 + 10)])
    assert await store.has_pending("launch") is False
    assert await store.pending("launch") == 0


async def test_restart_marks_in_flight_rows_uncertain_not_resent(
    store: Store, open_store: OpenStore
) -> None:
    await seed(store, n=4)
    claimed = await claim_all(store, limit=3)
    await store.start(claimed[0], "relay")
    await store.start(claimed[1], "relay")
    await store.record([Outcome(id=claimed[0], status="sent", service="relay", at=T0 + 1)])
    # kill -9 here: claimed[1] was in its SMTP transaction, claimed[2] only claimed.
    await store.close()
    fresh = await open_store()
    assert await fresh.recover(now=T0 + 10) == 1
    counts = (await fresh.counts("launch")).counts
    assert (counts["sent"], counts["uncertain"], counts["queued"], counts["sending"]) == (
        1,
        1,
        2,
        0,
    )
    rows = await fresh.messages_page("launch", status="uncertain")
    assert [r.id for r in rows] == [claimed[1]]
    assert rows[0].service == "relay"
    assert "may have been delivered" in (rows[0].last_error or "")
    assert WORKER in (rows[0].last_error or "")
    back = await fresh.get_message(claimed[2])
    assert back is not None and back.status == "queued" and back.attempts == 0
    # Uncertain rows are never claimed again on their own.
    again = await claim_all(fresh, now=T0 + 3600)
    assert len(again) == 2 and claimed[1] not in again
    assert await fresh.recover(now=T0 + 20) == 0  # claimed, never started: handed back
    assert (await fresh.counts("launch")).counts["queued"] == 2


async def test_expired_leases_become_uncertain_live_ones_stay(store: Store) -> None:
    await seed(store, n=2)
    [short] = await claim_all(store, limit=1, lease=10)
    [long] = await claim_all(store, limit=1, lease=1000)
    await store.start(short, "relay")
    await store.start(long, "relay")
    assert await store.reclaim_expired(now=T0 + 5) == 0
    assert await store.reclaim_expired(now=T0 + 11) == 1
    s, lg = await store.get_message(short), await store.get_message(long)
    assert s is not None and lg is not None
    assert (s.status, lg.status) == ("uncertain", "sending")


async def test_recover_with_a_worker_spares_live_daemons_on_postgresql(store: Store) -> None:
    await seed(store, n=3)
    ids = []
    # host-a:999999999 no longer runs (no such pid); host-a:100 is us
    for worker in ("host-a:999999999", "host-b:7", "host-a:100"):
        got = await store.claim(worker=worker, now=T0, lease=600, limit=1, campaign_ids=["launch"])
        ids.append(got[0].id)
        await store.start(got[0].id, "relay")
    marked = await store.recover(now=T0 + 1, worker="host-a:100")
    statuses = [(await store.get_message(i)).status for i in ids]  # type: ignore[union-attr]
    if store.dialect == "sqlite":  # one daemon per SQLite file: everything in flight was ours
        assert (marked, statuses) == (3, ["uncertain"] * 3)
    else:  # host-a's earlier process died; host-b's daemon is alive; we are host-a:100
        assert (marked, statuses) == (1, ["uncertain", "sending", "sending"])


async def test_release_claims_at_shutdown_settles_only_this_worker(store: Store) -> None:
    await seed(store, n=2)
    for worker in ("me:1", "other:2"):
        got = await store.claim(worker=worker, now=T0, lease=600, limit=1, campaign_ids=["launch"])
        await store.start(got[0].id, "relay")
    assert await store.release_claims(worker="me:1", now=T0 + 5) == 1
    counts = (await store.counts("launch")).counts
    assert (counts["uncertain"], counts["sending"]) == (1, 1)


async def test_retry_requeues_only_what_the_operator_names(store: Store) -> None:
    await seed(store, n=4)
    a, b, c, d = await claim_all(store)
    await store.record(
        [
            Outcome(id=a, status="failed", at=T0, error="550 5.7.1 policy", code=550),
            Outcome(id=b, status="sent", at=T0, service="relay"),
            Outcome(id=c, status="bounced", at=T0, code=550, enhanced="5.1.1", suppress=True),
        ]
    )
    await store.start(d, "relay")
    await store.recover(now=T0 + 1)  # d → uncertain
    assert await store.retry("launch", ["failed", "uncertain"], now=T0 + 100) == 2
    counts = (await store.counts("launch")).counts
    assert (counts["queued"], counts["sent"], counts["bounced"]) == (2, 1, 1)
    again = await store.claim(
        worker=WORKER, now=T0 + 100, lease=60, limit=10, campaign_ids=["launch"]
    )
    assert sorted((x.id, x.attempts, x.first_attempt_at) for x in again) == [
        (a, 1, T0 + 100),
        (d, 1, T0 + 100),
    ]
    with pytest.raises(ValueError, match="bounced"):
        await store.retry("launch", ["bounced"], now=T0)
    assert await store.retry("launch", ["failed"], now=T0) == 0


async def test_wake_parked_makes_waiting_queued_rows_due_and_nothing_else(store: Store) -> None:
    """A reload changed the window: rows parked for the old opening become due now; a row
    another worker holds, and rows of other campaigns, are left alone."""
    await seed(store, n=4)
    await seed(store, "other", n=2, due=T0 + 3600)
    ids = await claim_all(store)
    await store.release(ids[:3], next_attempt_at=T0 + 7200)  # parked for a closed window
    assert await store.next_due(["launch"]) == pytest.approx(T0 + 7200)
    assert await store.wake_parked("launch", now=T0 + 10) == 3
    assert await store.next_due(["launch"]) == pytest.approx(T0 + 10)
    assert await store.wake_parked("launch", now=T0 + 10) == 0  # nothing left waiting
    assert await store.next_due(["other"]) == pytest.approx(T0 + 3600)
    counts = await store.counts("launch")
    assert counts.counts.get("queued") == 3 and counts.counts.get("sending") == 1

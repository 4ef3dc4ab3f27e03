"""Feedback and history: events applied once, suppressions, who was contacted, drip steps."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from campaignd.queue.store import EventIn, Outcome, Store

from .factory import T0, WORKER, seed


async def send_all(store: Store, campaign: str = "launch", at: float = T0) -> dict[str, int]:
    """Claim and record every due row of the campaign as sent at ``at``; recipient → row id."""
    got = await store.claim(worker=WORKER, now=at, lease=60, limit=1000, campaign_ids=[campaign])
    await store.record(
        [
            Outcome(id=c.id, status="sent", service="relay", at=at, message_id=f"<m{c.id}@acme>")
            for c in got
        ]
    )
    return {c.recipient: c.id for c in got}


async def test_the_same_event_applied_twice_changes_nothing(store: Store) -> None:
    await seed(store, n=1)
    [mid] = (await send_all(store)).values()
    ev = EventIn(
        kind="bounced", source="webhook:ses", at=T0 + 60, message=mid, code=550,
        enhanced="5.1.1", detail="mailbox unknown", dedupe="ses:abc-123", suppress=True,
        status="bounced",
    )  # fmt: skip
    assert await store.add_event(ev) is True
    assert await store.add_event(ev) is False
    row = await store.get_message(mid)
    assert row is not None
    assert (row.status, row.bounced_at, row.last_enhanced, row.last_error) == (
        "bounced", T0 + 60, "5.1.1", "mailbox unknown",
    )  # fmt: skip
    assert await store.suppressed(["user0@example.com"]) == {"user0@example.com"}
    [sup] = await store.list_suppressions()
    assert (sup.source, sup.campaign_id) == ("webhook:ses", "launch")
    # Events without a dedupe key (counted auto-replies, say) are all kept.
    plain = EventIn(kind="auto-reply", source="imap", at=T0, campaign_id="launch")
    assert await store.add_event(plain) and await store.add_event(plain)


async def test_event_times_are_set_once(store: Store) -> None:
    await seed(store, n=1)
    [mid] = (await send_all(store)).values()
    assert await store.mark_event(mid, "opened", T0 + 10) is True
    assert await store.mark_event(mid, "opened", T0 + 20) is False
    first = EventIn(kind="clicked", source="link", at=T0 + 30, message=mid, dedupe="c1")
    later = EventIn(kind="clicked", source="link", at=T0 + 40, message=mid, dedupe="c2")
    assert await store.add_event(first) and await store.add_event(later)
    row = await store.get_message(mid)
    assert row is not None and (row.opened_at, row.clicked_at) == (T0 + 10, T0 + 30)
    assert (await store.counts("launch")).counts["clicked"] == 1
    with pytest.raises(ValueError, match="leaves no time"):
        await store.mark_event(mid, "delivered", T0)


async def test_replies_find_their_message_by_message_id(store: Store) -> None:
    await seed(store, n=2)
    sent = await send_all(store)
    mid = sent["user1@example.com"]
    for spelled in (f"<m{mid}@acme>", f"m{mid}@acme", f"  <m{mid}@acme> "):
        row = await store.find_by_message_id(spelled)
        assert row is not None and row.id == mid
    assert await store.find_by_message_id("<unknown@acme>") is None
    assert await store.find_by_message_id("<>") is None


async def test_suppression_list_add_remove_import_page(store: Store) -> None:
    assert await store.suppress(" Someone@Example.com ", reason="asked", source="operator")
    assert not await store.suppress("someone@example.com", reason="again", source="operator")
    assert await store.suppressed(["SOMEONE@example.com", "x@y.z"]) == {"SOMEONE@example.com"}
    n = await store.import_suppressions(
        [f"u{i}@list.example" for i in range(25)] + ["someone@example.com", ""],
        reason="imported",
        source="suppress import",
        batch=10,
    )
    assert n == 25
    keys: list[str] = []
    after = None
    while page := await store.list_suppressions(after=after, limit=7):
        keys.extend(s.key for s in page)
        after = page[-1].key
    assert len(keys) == 26 and keys == sorted(keys)
    assert await store.unsuppress("SOMEONE@example.com")
    assert not await store.unsuppress("someone@example.com")
    assert await store.suppressed(["someone@example.com"]) == set()


async def test_history_for_audience_filters(store: Store) -> None:
    await seed(store, "q3", n=3, due=T0 - 86400 * 40)
    assert len(await send_all(store, "q3", at=T0 - 86400 * 40)) == 3  # 40 days ago
    await seed(store, "q4", n=2, start=2, due=T0 - 86400)
    assert len(await send_all(store, "q4", at=T0 - 86400)) == 2
    keys = [f"user{i}@example.com" for i in range(5)]
    since = datetime.fromtimestamp(T0 - 86400 * 30, UTC)
    assert await store.contacted_since(keys, since) == {"user2@example.com", "user3@example.com"}
    assert await store.contacted_since(keys, since, exclude_campaign="q4") == set()
    assert await store.contacted_since(keys, T0 - 86400 * 41) == set(keys[:4])
    assert await store.received_campaigns(keys, ["q3"]) == set(keys[:3])
    assert await store.received_campaigns(["USER0@example.com"], ["q3"]) == {"USER0@example.com"}
    assert await store.received_campaigns(keys, []) == set()
    await store.suppress("user4@example.com", reason="asked", source="operator")
    snap = await store.history_snapshot(since=since, campaign_ids=["q3"])
    assert snap.contacted_since(keys, since) == {"user2@example.com", "user3@example.com"}
    assert snap.received_campaigns(keys, ["q3"]) == set(keys[:3])
    assert snap.received_campaigns(keys, ["q4"]) == set()  # not loaded
    assert snap.suppressed(keys) == {"user4@example.com"}


async def test_drip_steps_fall_due_after_the_previous_one(store: Store) -> None:
    keys = await seed(store, n=4)
    sent = await send_all(store, at=T0)
    assert await store.sent_steps("launch", 0, 1, sent_before=T0) == []
    due = await store.sent_steps("launch", 0, 1, sent_before=T0 + 1)
    assert due == [(k, T0) for k in keys]
    assert len(await store.sent_steps("launch", 0, 1, sent_before=float("inf"), limit=1)) == 1
    # keys[0] replied, so its step 2 is recorded as skipped; keys[1] left the list.
    await store.add_event(EventIn(kind="replied", source="imap", at=T0, message=sent[keys[0]]))
    assert await store.engaged("launch", 0, keys, ["replied", "clicked"]) == {keys[0]}
    await store.enqueue(
        "launch", 0, 2, [(keys[0], "f1")], due=T0, status="skipped", reason="unless: replied"
    )
    assert await store.remove_recipients("launch", [keys[1]], at=T0) == 1
    left = await store.sent_steps("launch", 0, 1, sent_before=T0 + 1)
    assert [k for k, _ in left] == keys[2:]
    assert await store.enqueue("launch", 0, 2, [(k, "f1") for k, _ in left], due=T0) == 2
    assert await store.sent_steps("launch", 0, 1, sent_before=T0 + 1) == []
    counts = (await store.counts("launch")).by_step[2]
    assert (counts["skipped"], counts["queued"]) == (1, 2)
    # A skipped step is never claimed and does not keep the campaign pending.
    assert await store.pending("launch") == 2
    with pytest.raises(ValueError, match="sent"):
        await store.enqueue("launch", 0, 3, [(keys[2], "f2")], due=T0, status="sent")

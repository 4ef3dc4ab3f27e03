"""Reading back: campaign states, counters, pages, streaming, deleting a finished campaign."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from campaignd.errors import StoreError
from campaignd.queue.store import EventIn, Outcome, Store

from .factory import T0, WORKER, seed


async def test_campaign_states_follow_the_rules(store: Store) -> None:
    row = await store.ensure_campaign("launch", state="scheduled")
    assert (row.state, row.started_at, row.finished_at) == ("scheduled", None, None)
    assert (await store.ensure_campaign("launch", state="paused")).state == "scheduled"
    row = await store.set_campaign_state("launch", "sending")
    assert row.started_at is not None
    started = row.started_at
    row = await store.set_campaign_state("launch", "paused", "auto-paused: 50 failures")
    assert (row.state, row.reason) == ("paused", "auto-paused: 50 failures")
    # resume only from paused; a waiting campaign is not "resumed"
    assert (
        await store.set_campaign_state("launch", "sending", only_from=["paused"])
    ).reason is None
    await store.set_campaign_state("launch", "waiting")
    row = await store.set_campaign_state("launch", "sending", only_from=["paused"])
    assert row.state == "waiting"
    row = await store.set_campaign_state("launch", "completed")
    assert row.finished_at is not None and row.started_at == started
    row = await store.set_campaign_state("launch", "sending")  # a retry re-opens it
    assert row.finished_at is None
    row = await store.set_campaign_state("launch", "stopped", "stopped by operator")
    assert (await store.set_campaign_state("launch", "sending")).state == "stopped"  # final
    assert [c.id for c in await store.list_campaigns()] == ["launch"]
    with pytest.raises(StoreError, match="no campaign 'nope'"):
        await store.set_campaign_state("nope", "paused")
    with pytest.raises(ValueError, match="running"):
        await store.set_campaign_state("launch", "running")


async def test_editions_are_recorded_once(store: Store) -> None:
    await store.ensure_campaign("weekly", state="sending")
    assert not await store.has_edition("weekly", 0)
    assert await store.ensure_edition("weekly", 0, fired_at=T0)
    assert not await store.ensure_edition("weekly", 0, fired_at=T0 + 5)
    assert await store.ensure_edition("weekly", 2, fired_at=T0 + 20, caught_up=True)
    assert await store.ensure_edition("weekly", 1, fired_at=T0 + 10)
    assert await store.has_edition("weekly", 1)
    row = await store.get_campaign("weekly")
    assert row is not None and (row.last_edition, row.last_fired_at) == (2, T0 + 20)


async def test_counts_by_status_step_and_template(store: Store) -> None:
    keys = await seed(store, n=6, templates=("intro-a", "intro-b"))
    got = await store.claim(worker=WORKER, now=T0, lease=60, limit=4, campaign_ids=["launch"])
    ids = {c.recipient: c.id for c in got}
    await store.record(
        [
            Outcome(id=ids[keys[0]], status="sent", service="r", at=T0),
            Outcome(id=ids[keys[1]], status="sent", service="r", at=T0),
            Outcome(id=ids[keys[2]], status="failed", service="r", at=T0, code=550),
        ]
    )
    await store.add_event(EventIn(kind="opened", source="pixel", at=T0 + 5, message=ids[keys[0]]))
    await store.add_event(EventIn(kind="clicked", source="link", at=T0 + 6, message=ids[keys[0]]))
    await store.add_event(EventIn(kind="replied", source="imap", at=T0 + 7, message=ids[keys[1]]))
    await store.enqueue("launch", 0, 2, [(keys[0], "follow-up")], due=T0)
    counts = await store.counts("launch")
    assert counts.total == 7
    assert {k: v for k, v in counts.counts.items() if v} == {
        "queued": 3, "sending": 1, "sent": 2, "failed": 1, "opened": 1, "clicked": 1, "replied": 1,
    }  # fmt: skip
    assert counts.by_step[1]["total"] == 6 and counts.by_step[2]["queued"] == 1
    a, b = counts.by_template["intro-a"], counts.by_template["intro-b"]
    assert (a["sent"], a["opened"], a["clicked"], a["failed"]) == (1, 1, 1, 1)
    assert (b["sent"], b["replied"], b["sending"]) == (1, 1, 1)
    data = counts.as_dict()
    assert data["by_step"]["2"]["total"] == 1 and data["counts"]["sent"] == 2
    empty = await store.counts("nothing")
    assert empty.total == 0 and empty.counts["sent"] == 0 and not empty.by_step


async def test_pages_are_keyset_and_filtered(store: Store) -> None:
    await seed(store, n=25, templates=("a", "b"))
    seen: list[int] = []
    after = None
    while page := await store.messages_page("launch", limit=10, after=after):
        seen.extend(r.id for r in page)
        after = page[-1].id
    assert len(seen) == 25 and seen == sorted(seen)
    only_b = await store.messages_page("launch", template="b", limit=100)
    assert len(only_b) == 12 and {r.template for r in only_b} == {"b"}
    [one] = await store.messages_page("launch", recipient="USER7@example.com")
    assert (one.recipient, one.email) == ("user7@example.com", "User7@example.com")
    assert await store.messages_page("launch", status="sent") == []
    assert await store.messages_page("launch", step=2) == []
    d = one.as_dict()
    assert d["id"] == one.id and d["created_at"].endswith("+00:00") and d["sent_at"] is None


async def test_iter_messages_streams_in_constant_batches(store: Store) -> None:
    await seed(store, n=25)
    selects: list[str] = []

    def count(conn, cursor, statement: str, *args: object) -> None:  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT") and "FROM messages" in statement:
            selects.append(statement)

    sa.event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        got = []
        async for row in store.iter_messages("launch", batch=10):
            got.append(row.id)
            if len(got) == 12:
                # A write while the consumer is mid-stream: no snapshot is held open.
                await store.set_campaign_state("launch", "paused")
    finally:
        sa.event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert len(got) == 25 and got == sorted(got)
    assert len(selects) == 3  # 10 + 10 + 5 rows
    assert all("LIMIT" in s.upper() for s in selects)


async def test_delete_keeps_suppressions_and_refuses_a_live_campaign(store: Store) -> None:
    await seed(store, n=3)
    [c] = await store.claim(worker=WORKER, now=T0, lease=60, limit=1, campaign_ids=["launch"])
    await store.record([Outcome(id=c.id, status="bounced", at=T0, suppress=True, reason="5.1.1")])
    await store.suppress("manual@example.com", reason="asked", source="operator")
    with pytest.raises(StoreError, match="stop it first"):
        await store.delete_campaign("launch")
    await store.set_campaign_state("launch", "stopped", "stopped by operator")
    assert await store.delete_campaign("launch") == 3
    assert await store.get_campaign("launch") is None
    assert await store.counts("launch") == await store.counts("never-existed")
    assert {s.key for s in await store.list_suppressions()} == {
        "manual@example.com",
        "user0@example.com",
    }
    with pytest.raises(StoreError, match="no campaign"):
        await store.delete_campaign("launch")
    # The id can be used again from scratch.
    assert len(await seed(store, n=2)) == 2
    assert (await store.counts("launch")).total == 2

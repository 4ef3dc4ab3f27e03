"""Every audience row ends in one visible state: enrollment records the rows it does not
enroll (with why), the counts and the audience block include them, a recipient's story finds
them; and the read-only history reader that ``campaignctl plan`` uses answers as enrollment's.
Both run on SQLite and on PostgreSQL."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from campaignd.campaigns.enroll import enroll, removed_keys
from campaignd.config.load import load_root
from campaignd.errors import StoreError
from campaignd.queue.lookup import ReadOnlyDatabase, database_history
from campaignd.queue.store import Outcome, RecipientIn, Store
from tests.rootfiles import make_root

from .factory import T0, WORKER

NOW = datetime.fromtimestamp(T0, UTC)

LIST = """
    email,first_name
    ann@example.com,Ann
    not-an-address,Nobody
    gone@example.com,Gone
    ANN@example.com,Ann again
    eve@spam.example,Eve
    old@example.com,Old
    pat@example.com,Pat
"""
CAMPAIGN = """
    kind: transactional
    audience: [lists/people.csv]
    services: [sink]
    template: hello
    filters:
      exclude_domains: [spam.example]
      exclude_contacted_within: 30d
      exclude_campaigns: [spring]
"""


async def _history(store: Store) -> None:
    """gone@ is suppressed; old@ got campaign 'earlier' 3 days ago; pat@ got 'spring' long ago."""
    await store.suppress(
        "gone@example.com",
        reason="unsubscribed",
        source="link",
        campaign_id="earlier",
        at=T0 - 86400,
    )
    for cid, key, at in (
        ("earlier", "old@example.com", T0 - 3 * 86400),
        ("spring", "pat@example.com", T0 - 90 * 86400),
    ):
        await store.ensure_campaign(cid, state="sending")
        email = key
        await store.add_recipients(
            cid,
            [
                RecipientIn(
                    key=key,
                    email=email,
                    smtp_address=email,
                    domain="example.com",
                    fields={"email": email},
                    source="lists/x.csv:2",
                )
            ],
        )
        await store.enqueue(cid, 0, 1, [(key, "hello")], due=at)
        (claimed,) = await store.claim(worker=WORKER, now=at, lease=60, limit=1, campaign_ids=[cid])
        await store.start(claimed.id, "sink")
        await store.record([Outcome(id=claimed.id, status="sent", at=at, service="sink")])


async def test_every_row_is_recorded_once_with_why(store: Store, tmp_path: Path) -> None:
    root = make_root(tmp_path, {"lists/people.csv": LIST, "campaigns.d/launch.yaml": CAMPAIGN})
    config = load_root(root).config
    await _history(store)
    await store.ensure_campaign("launch", state="sending")
    result = await enroll(store, config, "launch", edition=0, now=NOW, due=T0)
    assert (result.created, result.excluded) == (1, 6)

    counts = await store.counts("launch")
    assert counts.audience == {
        "rows": 7, "invalid": 1, "duplicates": 1, "filtered": 3, "suppressed": 1, "enrolled": 1,
    }  # fmt: skip
    assert counts.total == 7
    assert (counts.counts["queued"], counts.counts["skipped"], counts.counts["suppressed"]) == (
        1, 5, 1,
    )  # fmt: skip
    assert counts.as_dict()["audience"]["rows"] == 7

    rows = {(r.source, r.excluded): r for r in await store.messages_page("launch")}
    why = {source: (r.status, r.last_error) for (source, _), r in rows.items()}
    assert why["lists/people.csv:2"] == ("queued", None)
    status, text = why["lists/people.csv:3"]
    assert status == "skipped" and text is not None and text.startswith("invalid address: ")
    assert why["lists/people.csv:4"][0] == "suppressed"
    assert why["lists/people.csv:4"][1] == (
        "suppressed: unsubscribed (source link, campaign earlier, since 2027-01-14T08:00:00+00:00)"
    )
    assert why["lists/people.csv:5"] == ("skipped", "duplicate of lists/people.csv:2")
    assert why["lists/people.csv:6"] == (
        "skipped", "filtered by exclude_domains: the domain is in exclude_domains",
    )  # fmt: skip
    assert why["lists/people.csv:7"] == (
        "skipped",
        "filtered by exclude_contacted_within: contacted by campaign earlier at "
        "2027-01-12T08:00:00+00:00",
    )
    assert why["lists/people.csv:8"] == (
        "skipped",
        "filtered by exclude_campaigns: received campaign spring at 2026-10-17T08:00:00+00:00",
    )

    # re-running records nothing twice, and exclusions never look "removed from the list"
    again = await enroll(store, config, "launch", edition=0, now=NOW, due=T0)
    assert (again.created, again.excluded) == (0, 0)
    assert (await store.counts("launch")).total == 7
    listed = {"ann@example.com", "gone@example.com", "eve@spam.example", "old@example.com",
              "pat@example.com"}  # fmt: skip
    assert await removed_keys(store, "launch", 0, listed) == set()

    # by address: the enrolled message and the duplicate row, in any spelling
    found = await store.messages_page("launch", recipient="Ann@Example.com")
    assert sorted((r.source, r.status) for r in found) == [
        ("lists/people.csv:2", "queued"), ("lists/people.csv:5", "skipped"),
    ]  # fmt: skip
    assert [r.email for r in await store.messages_page("launch", recipient="not-an-address")] == [
        "not-an-address"
    ]
    story = await store.story("launch", "gone@example.com")
    assert story["suppression"]["reason"] == "unsubscribed"
    assert story["recipient"]["source"] == "lists/people.csv:4"
    assert [(m["status"], m["excluded"]) for m in story["messages"]] == [
        ("suppressed", "suppressed")
    ]
    nobody = await store.story("launch", "nobody@example.com")
    assert (nobody["messages"], nobody["recipient"], nobody["suppression"]) == ([], None, None)


async def test_a_story_has_each_step_with_its_events(store: Store) -> None:
    from campaignd.queue.store import EventIn

    key = "ann@example.com"
    await store.ensure_campaign("launch", state="sending")
    await store.add_recipients(
        "launch",
        [
            RecipientIn(
                key=key,
                email="Ann@example.com",
                smtp_address=key,
                domain="example.com",
                fields={},
                source="lists/people.csv:2",
            )
        ],
    )
    await store.enqueue("launch", 0, 1, [(key, "hello")], due=T0)
    (c,) = await store.claim(worker=WORKER, now=T0, lease=60, limit=1, campaign_ids=["launch"])
    await store.start(c.id, "sink")
    await store.record([Outcome(id=c.id, status="sent", at=T0 + 1, service="sink", code=250,
                                message_id="<m1@acme.example>")])  # fmt: skip
    await store.add_event(EventIn(kind="opened", source="pixel", at=T0 + 60, message=c.id))
    await store.enqueue("launch", 0, 2, [(key, "nudge")], due=T0 + 86400)
    story = await store.story("launch", key)
    steps = [(m["step"], m["status"], m["service"]) for m in story["messages"]]
    assert steps == [(1, "sent", "sink"), (2, "queued", None)]
    assert [(e["kind"], e["source"]) for e in story["messages"][0]["events"]] == [
        ("sent", "sink"), ("opened", "pixel"),
    ]  # fmt: skip
    assert story["messages"][0]["sent_at"] == "2027-01-15T08:00:01+00:00"


async def test_the_read_only_reader_answers_as_the_store(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    await _history(store)
    keys = ["gone@example.com", "old@example.com", "pat@example.com", "ann@example.com"]
    db = await ReadOnlyDatabase.open(db_url, root=tmp_path)
    try:
        assert await db.suppressed(keys) == await store.suppressed(keys) == {"gone@example.com"}
        since = NOW - timedelta(days=30)
        assert await db.contacted_since(keys, since, exclude_campaign="x") == {"old@example.com"}
        assert await db.contacted_since(keys, since, exclude_campaign="earlier") == set()
        assert await db.received_campaigns(keys, ["spring"]) == {"pat@example.com"}
    finally:
        await db.close()


async def test_the_sync_history_for_plan(store: Store, db_url: str, tmp_path: Path) -> None:
    await _history(store)
    with database_history(db_url, root=tmp_path, campaign_id="earlier") as h:
        assert "(read-only)" in h.source
        assert h.suppressed(["GONE@example.com", "x@example.com"]) == {"GONE@example.com"}
        # a campaign's own sends are not "contact" for its own plan
        assert h.contacted_since(["old@example.com"], NOW - timedelta(days=30)) == set()
        assert h.received_campaigns(["pat@example.com"], ["spring"]) == {"pat@example.com"}


async def test_no_database_yet_is_said_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no database yet at .*campaignd.db"):
        await ReadOnlyDatabase.open("sqlite:///state/campaignd.db", root=tmp_path)
    assert not (tmp_path / "state").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(StoreError, match="has no campaignd schema yet"):
        await ReadOnlyDatabase.open(f"sqlite:///{empty}", root=tmp_path)


async def test_the_reader_cannot_write(store: Store, db_url: str, tmp_path: Path) -> None:
    """SQLite's mode=ro; PostgreSQL sessions with default_transaction_read_only."""
    db = await ReadOnlyDatabase.open(db_url, root=tmp_path)
    try:
        async with db.engine.connect() as conn:
            with pytest.raises(Exception, match=r"readonly|read-only|query_only"):
                await conn.exec_driver_sql("DELETE FROM suppressions")
    finally:
        await db.close()

"""Enrollment's batch write (``Store.enroll_batch``): recipients, queued step-1 messages and the
recorded exclusions of one batch in one transaction, idempotent, on SQLite and PostgreSQL; and
a list row's fields, whatever characters they hold, come back from the queue exactly."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from campaignd.queue import hot
from campaignd.queue.store import ExclusionIn, RecipientIn, Store

from .factory import T0, WORKER, person

ODD_FIELDS = {
    "email": "chloé@bücher.example",
    "first_name": 'Chloé "the" \\ O\'Brien',
    "note": "line one\nline two\t\u2028 🎉",
    "empty-looking": " ",
}


def _excluded(i: int, status: str, kind: str, why: str) -> ExclusionIn:
    return ExclusionIn(
        recipient=person(i), template="intro", status=status, excluded=kind, reason=why
    )


async def test_one_batch_writes_recipients_messages_and_exclusions_once(store: Store) -> None:
    await store.ensure_campaign("launch", state="sending")
    odd = RecipientIn(
        key="chloé@bücher.example",
        email="chloé@bücher.example",
        smtp_address="chloé@xn--bcher-kva.example",
        domain="bücher.example",
        fields=ODD_FIELDS,
        source="lists/people.csv:9",
        timezone="Asia/Tokyo",
    )
    accepted = [(person(0), "intro"), (person(1), "outro"), (odd, "intro")]
    excluded = [
        _excluded(2, "skipped", "filtered", "filtered by exclude_domains: the domain is …"),
        _excluded(3, "suppressed", "suppressed", "suppressed: unsubscribed"),
    ]
    assert await store.enroll_batch("launch", 0, accepted, excluded, due=T0) == (3, 2)
    # a re-run, and a later batch naming a known key with other fields, create nothing
    assert await store.enroll_batch("launch", 0, accepted, excluded, due=T0) == (0, 0)
    changed = RecipientIn(**{**_fields(person(0)), "fields": {"email": "other"}})
    assert await store.enroll_batch("launch", 0, [(changed, "intro")], due=T0) == (0, 0)
    assert await store.enroll_batch("launch", 0, [], [], due=T0) == (0, 0)

    rows = {r.recipient: r for r in await store.messages_page("launch")}
    assert len(rows) == 5
    assert (rows["user0@example.com"].status, rows["user0@example.com"].template) == (
        "queued", "intro",
    )  # fmt: skip
    assert rows["user1@example.com"].template == "outro"
    assert rows["user0@example.com"].next_attempt_at == T0
    assert (rows["user2@example.com"].status, rows["user2@example.com"].excluded) == (
        "skipped", "filtered",
    )  # fmt: skip
    assert rows["user3@example.com"].status == "suppressed"
    assert rows["user3@example.com"].last_error == "suppressed: unsubscribed"
    assert rows["user3@example.com"].next_attempt_at is None

    # only the queued ones are due; each comes back with its row exactly as enrolled
    claimed = await store.claim(worker=WORKER, now=T0, lease=60, limit=10, campaign_ids=["launch"])
    by_key = {c.recipient: c for c in claimed}
    assert set(by_key) == {"user0@example.com", "user1@example.com", "chloé@bücher.example"}
    assert by_key["chloé@bücher.example"].fields == ODD_FIELDS
    assert by_key["chloé@bücher.example"].timezone == "Asia/Tokyo"
    assert by_key["chloé@bücher.example"].smtp_address == "chloé@xn--bcher-kva.example"
    assert by_key["user0@example.com"].fields == dict(person(0).fields)  # the first row kept
    assert by_key["user0@example.com"].timezone is None


async def test_an_exclusion_outside_the_accounting_states_is_refused(store: Store) -> None:
    await store.ensure_campaign("launch", state="sending")
    bad = _excluded(1, "queued", "filtered", "no")
    try:
        await store.enroll_batch("launch", 0, [(person(0), "intro")], [bad], due=T0)
    except ValueError as exc:
        assert "use skipped/suppressed" in str(exc)
    else:
        raise AssertionError("a queued exclusion was accepted")
    assert await store.messages_page("launch") == []  # nothing of the batch was written


def _fields(r: RecipientIn) -> dict[str, object]:
    return {k: getattr(r, k) for k in RecipientIn.__dataclass_fields__}


# ---------------------------------------------------------------- fields, any text


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One migrated SQLite database for every example (each example empties it)."""
    tmp = tmp_path_factory.mktemp("fields")

    async def make() -> None:
        store = await Store.open("sqlite:///state/campaignd.db", root=tmp)
        await store.ensure_campaign("c", state="sending")
        await store.close()

    asyncio.run(make())
    return tmp / "state" / "campaignd.db"


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=80, deadline=None)
@given(
    fields=st.dictionaries(_text, _text, max_size=6),
    zone=st.none() | _text,
    email=_text,
    source=_text,
)
def test_any_fields_come_back_exactly(
    migrated: Path, fields: dict[str, str], zone: str | None, email: str, source: str
) -> None:
    """A list's cells are outside input: quotes, backslashes, control characters (NUL too),
    any script — the batch's JSON encoding and SQLite's reading of it must keep every one."""
    conn = sqlite3.connect(migrated, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        row = RecipientIn(
            key="k@example.com",
            email=email,
            smtp_address="k@example.com",
            domain="example.com",
            fields=fields,
            source=source,
            timezone=zone,
        )
        conn.execute("BEGIN IMMEDIATE")
        made = hot.enroll(
            conn,
            False,
            campaign_id="c",
            edition=0,
            due=T0,
            now=T0,
            accepted=[(row, "t")],
            excluded=[],
        )
        stored = conn.execute("SELECT fields, timezone, email, source FROM recipients").fetchone()
        conn.execute("ROLLBACK")  # the next example starts from an empty table
        assert made == (1, 0)
        assert json.loads(stored[0]) == fields
        assert stored[1:] == (zone, email, source)
    finally:
        conn.close()


async def test_the_readers_own_suppression_lookup_answers_as_the_store(store: Store) -> None:
    await store.suppress("Gone@Example.com", reason="unsubscribed", source="link", at=T0)
    keys = ["gone@example.com", " GONE@example.com", "here@example.com"]
    direct = store.suppression_reader()
    if store.dialect != "sqlite":
        assert direct is None  # PostgreSQL: enrollment asks the store through the loop
        return
    assert direct is not None
    try:
        got = await asyncio.to_thread(direct.suppressed, keys)
        assert await asyncio.to_thread(direct.suppressed, []) == set()
    finally:
        direct.close()
    assert got == await store.suppressed(keys) == {"gone@example.com", " GONE@example.com"}

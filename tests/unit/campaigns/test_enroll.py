"""Enrollment as a pipeline on a real SQLite store: batches are written in list order while the
next one is read (a duplicate in a later batch still names the row it repeats), a re-run adds
only new rows, and a failed write stops the reading at once and is raised. Each runs with the
reader in a thread (small lists) and in a child process (large lists): the same records."""

from __future__ import annotations

import multiprocessing
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest

from campaignd.campaigns.enroll import enroll
from campaignd.config.load import load_root
from campaignd.errors import AudienceError
from campaignd.queue.lookup import SqliteSuppressions
from campaignd.queue.store import AudienceRow, EnrollTexts, ExclusionIn, Store
from tests.rootfiles import make_root

T0 = datetime(2027, 1, 12, 8, 0, tzinfo=UTC).timestamp()
NOW = datetime.fromtimestamp(T0, UTC)
Reader = Literal["thread", "process"]
READERS = ["thread", "process"]


def _list(n: int, extra: str = "") -> str:
    rows = "".join(f"user{i}@example.com,User{i}\n" for i in range(n))
    return "email,first_name\n" + rows + extra


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open("sqlite:///state/campaignd.db", root=tmp_path)
    await s.ensure_campaign("launch", state="sending")
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.parametrize("reader", READERS)
async def test_small_batches_keep_list_order_and_rerun_adds_only_new_rows(
    store: Store, tmp_path: Path, reader: Reader
) -> None:
    # user1 again at the end, and an invalid row: each lands in a later batch than the first
    root = make_root(tmp_path, {"lists/people.csv": _list(7, "USER1@example.com,Again\nnope,X\n")})
    config = load_root(root).config
    first = await enroll(
        store, config, "launch", edition=0, now=NOW, due=T0, batch_size=2, reader=reader
    )
    assert (first.created, first.excluded) == (7, 2)
    assert (first.report.accepted, first.report.duplicates, first.report.invalid) == (7, 1, 1)
    why = {r.source: (r.status, r.last_error) for r in await store.messages_page("launch")}
    assert why["lists/people.csv:9"] == ("skipped", "duplicate of lists/people.csv:3")
    assert why["lists/people.csv:10"][1].startswith("invalid address: ")
    # the ids follow the list: the queue sends in list order
    queued = [r.source for r in await store.messages_page("launch") if r.status == "queued"]
    assert queued == [f"lists/people.csv:{n}" for n in range(2, 9)]

    (root / "lists/people.csv").write_text(_list(12), encoding="utf-8")
    again = await enroll(
        store, config, "launch", edition=0, now=NOW, due=T0, batch_size=5, reader=reader
    )
    assert (again.created, again.excluded) == (5, 0)
    assert (await store.counts("launch")).total == 14


async def test_a_duplicate_in_the_same_batch_names_its_first_row(
    store: Store, tmp_path: Path
) -> None:
    root = make_root(tmp_path, {"lists/people.csv": _list(3, "user0@EXAMPLE.com,Again\n")})
    config = load_root(root).config
    await enroll(store, config, "launch", edition=0, now=NOW, due=T0, reader="process")
    why = {r.source: r.last_error for r in await store.messages_page("launch")}
    assert why["lists/people.csv:5"] == "duplicate of lists/people.csv:2"


class AskingStore(Store):
    """The real store without the reader's own suppression connection: the reader asks."""

    def suppression_reader(self) -> SqliteSuppressions | None:
        return None


@pytest.mark.parametrize("reader", READERS)
async def test_the_reader_asks_the_store_about_suppressions(tmp_path: Path, reader: Reader) -> None:
    root = make_root(tmp_path, {"lists/people.csv": _list(4)})
    config = load_root(root).config
    store = await AskingStore.open("sqlite:///state/campaignd.db", root=tmp_path)
    try:
        await store.ensure_campaign("launch", state="sending")
        await store.suppress("user2@example.com", reason="unsubscribed", source="test")
        result = await enroll(store, config, "launch", edition=0, now=NOW, due=T0, reader=reader)
        assert (result.created, result.excluded, result.report.suppressed) == (3, 1, 1)
        rows = {r.source: r.status for r in await store.messages_page("launch")}
        assert rows["lists/people.csv:4"] == "suppressed"
    finally:
        await store.close()


async def test_an_unreadable_list_in_the_reader_process_is_named_with_its_line(
    store: Store, tmp_path: Path
) -> None:
    bad = b"email,first_name\nann@example.com,Ann\nbob@example.com,B\xe9a\n"
    root = make_root(tmp_path, {"lists/people.csv": bad})
    config = load_root(root).config
    with pytest.raises(AudienceError, match=r"lists/people\.csv:3: byte 0xe9"):
        await enroll(store, config, "launch", edition=0, now=NOW, due=T0, reader="process")
    assert (await store.counts("launch")).total == 0
    assert multiprocessing.active_children() == []


class FailingStore(Store):
    """The real store, whose second batch write fails."""

    calls = 0

    async def enroll_batch(
        self,
        campaign_id: str,
        edition: int,
        accepted: Sequence[tuple[AudienceRow, str]] | EnrollTexts,
        excluded: Sequence[ExclusionIn] = (),
        *,
        due: float | datetime,
    ) -> tuple[int, int]:
        type(self).calls += 1
        if type(self).calls == 2:
            raise RuntimeError("disk on fire")
        return await super().enroll_batch(campaign_id, edition, accepted, excluded, due=due)


@pytest.mark.parametrize("reader", READERS)
async def test_a_failed_write_stops_the_reader_and_is_raised(
    tmp_path: Path, reader: Reader
) -> None:
    root = make_root(tmp_path, {"lists/people.csv": _list(100)})
    config = load_root(root).config
    FailingStore.calls = 0
    store = await FailingStore.open("sqlite:///state/campaignd.db", root=tmp_path)
    try:
        await store.ensure_campaign("launch", state="sending")
        with pytest.raises(RuntimeError, match="disk on fire"):
            await enroll(
                store, config, "launch", edition=0, now=NOW, due=T0, batch_size=10, reader=reader
            )
        # batch 1 written, batch 2 failed, batch 3 read meanwhile: the reader stops there
        assert FailingStore.calls == 2
        assert (await store.counts("launch")).total == 10
        assert multiprocessing.active_children() == []  # the reader process is gone
    finally:
        await store.close()

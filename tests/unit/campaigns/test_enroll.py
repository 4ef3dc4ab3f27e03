"""Enrollment as a pipeline on a real SQLite store: batches are written in list order while the
next one is read (a duplicate in a later batch still names the row it repeats), a re-run adds
only new rows, and a failed write stops the reading at once and is raised."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from campaignd.campaigns.enroll import enroll
from campaignd.config.load import load_root
from campaignd.queue.store import AudienceRow, ExclusionIn, Store
from tests.rootfiles import make_root

T0 = datetime(2027, 1, 12, 8, 0, tzinfo=UTC).timestamp()
NOW = datetime.fromtimestamp(T0, UTC)


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


async def test_small_batches_keep_list_order_and_rerun_adds_only_new_rows(
    store: Store, tmp_path: Path
) -> None:
    # user1 again at the end, and an invalid row: each lands in a later batch than the first
    root = make_root(tmp_path, {"lists/people.csv": _list(7, "USER1@example.com,Again\nnope,X\n")})
    config = load_root(root).config
    first = await enroll(store, config, "launch", edition=0, now=NOW, due=T0, batch_size=2)
    assert (first.created, first.excluded) == (7, 2)
    why = {r.source: (r.status, r.last_error) for r in await store.messages_page("launch")}
    assert why["lists/people.csv:9"] == ("skipped", "duplicate of lists/people.csv:3")
    assert why["lists/people.csv:10"][1].startswith("invalid address: ")

    (root / "lists/people.csv").write_text(_list(12), encoding="utf-8")
    again = await enroll(store, config, "launch", edition=0, now=NOW, due=T0, batch_size=5)
    assert (again.created, again.excluded) == (5, 0)
    assert (await store.counts("launch")).total == 14


class FailingStore(Store):
    """The real store, whose second batch write fails."""

    calls = 0

    async def enroll_batch(
        self,
        campaign_id: str,
        edition: int,
        accepted: Sequence[tuple[AudienceRow, str]],
        excluded: Sequence[ExclusionIn] = (),
        *,
        due: float | datetime,
    ) -> tuple[int, int]:
        type(self).calls += 1
        if type(self).calls == 2:
            raise RuntimeError("disk on fire")
        return await super().enroll_batch(campaign_id, edition, accepted, excluded, due=due)


async def test_a_failed_write_stops_the_reader_and_is_raised(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"lists/people.csv": _list(100)})
    config = load_root(root).config
    store = await FailingStore.open("sqlite:///state/campaignd.db", root=tmp_path)
    try:
        await store.ensure_campaign("launch", state="sending")
        with pytest.raises(RuntimeError, match="disk on fire"):
            await enroll(store, config, "launch", edition=0, now=NOW, due=T0, batch_size=10)
        # batch 1 written, batch 2 failed, batch 3 read meanwhile: the reader stops there
        assert FailingStore.calls == 2
        assert (await store.counts("launch")).total == 10
    finally:
        await store.close()

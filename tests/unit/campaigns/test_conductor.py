"""The conductor with a fake clock on a real SQLite store: starts, drip steps per recipient,
waiting/completed, steps added and removed while running, recurring editions with catch-up,
continuous enrollment, and pauses the file decides."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from campaignd.campaigns.conductor import FILE_REMOVED, Conductor, paused_in_file
from campaignd.config.load import load_root
from campaignd.config.model import Config
from campaignd.plan.windows import next_window_open
from campaignd.queue.store import Outcome, Store

T0 = datetime(2027, 1, 12, 8, 0, tzinfo=UTC).timestamp()  # a Tuesday, 08:00 UTC
DAY = 86400.0


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    root: Path
    clock: FakeClock
    store: Store
    conductor: Conductor
    seen: dict[str, object] = field(default_factory=dict)
    """What the conductor last told the dispatcher (active) and the clock (wakes)."""

    @property
    def active(self) -> set[str]:
        return self.seen.get("active", set())  # type: ignore[return-value]

    @property
    def wakes(self) -> dict[str, float | None]:
        return self.seen.get("wakes", {})  # type: ignore[return-value]

    def write(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def load(self) -> Config:
        result = load_root(self.root)
        assert result.ok, [str(p) for p in result.errors]
        return result.config

    async def reload(self) -> None:
        await self.conductor.update(self.load())

    async def tick(self, at: float | None = None) -> str:
        """A full pass at ``at``, with its enrollments finished and looked at once more."""
        if at is not None:
            self.clock.now = at
        await self.conductor.tick()
        await self.conductor.settle()
        await self.conductor.tick()
        row = await self.store.get_campaign("c")
        return row.state if row else "absent"

    async def send(self, n: int = 1000, *, at: float | None = None) -> list[str]:
        """Claim and record as sent, like the dispatcher would, ``n`` due messages at ``at``."""
        at = self.clock.now if at is None else at
        claimed = await self.store.claim(
            worker="test:1", now=at, lease=600, limit=n, campaign_ids=["c"]
        )
        await self.store.record(
            [Outcome(id=m.id, status="sent", service="s", at=at) for m in claimed]
        )
        return [f"{m.recipient}#{m.edition}.{m.step}" for m in claimed]

    def rows(self) -> list[tuple[str, int, int, str, str | None]]:
        db = sqlite3.connect(self.root / "state" / "c.db")
        try:
            return list(
                db.execute(
                    "select recipient, edition, step, status, last_error from messages "
                    "order by edition, step, recipient"
                )
            )
        finally:
            db.close()


def people(*names: str) -> str:
    return "email,first_name\n" + "".join(f"{n}@example.com,{n}\n" for n in names)


def campaign_yaml(extra: str = "", steps: str = "template: t\n") -> str:
    return f"kind: transactional\naudience: lists/p.csv\nservices: [s]\n{steps}{extra}"


DRIP = "steps:\n  - template: t\n  - after: 60s\n    template: t2\n"


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    root = tmp_path
    files = {
        "campaignd.yaml": "timezone: UTC\n",
        "services.d/s.yaml": 'from: "A <a@example.com>"\ntransport: outbox\noutbox: out\n',
        "templates.d/t.yaml": "subject: one\ntext: hi\n",
        "templates.d/t2.yaml": "subject: two\ntext: again\n",
        "templates.d/t3.yaml": "subject: three\ntext: last\n",
        "lists/p.csv": people("ann", "bob", "cy"),
        "campaigns.d/c.yaml": campaign_yaml(steps=DRIP),
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    clock = FakeClock()
    store = await Store.open("sqlite:///state/c.db", root=root, clock=clock)
    box: dict[str, object] = {}

    def on_active(ids: set[str]) -> None:
        box["active"] = set(ids)

    def on_wakes(wakes: Mapping[str, float | None]) -> None:
        box["wakes"] = dict(wakes)

    config = load_root(root).config
    conductor = Conductor(store, config, on_active=on_active, clock=clock, on_wakes=on_wakes)
    e = Env(root, clock, store, conductor, box)
    try:
        yield e
    finally:
        await conductor.close()
        await store.close()


# ---------------------------------------------------------------- start


async def test_start_in_the_future_waits_then_starts(env: Env) -> None:
    env.write("campaigns.d/c.yaml", campaign_yaml("start: 2027-01-12T09:30:00Z\n"))
    await env.reload()
    assert await env.tick() == "scheduled"
    assert env.rows() == [] and env.active == set()
    assert env.wakes == {"c": T0 + 5400}  # the clock's alarm is the start
    assert await env.tick(T0 + 5399) == "scheduled"
    assert await env.tick(T0 + 5400) == "sending"
    assert env.active == {"c"}
    assert [r[:4] for r in env.rows()] == [
        (f"{n}@example.com", 0, 1, "queued") for n in ("ann", "bob", "cy")
    ]


# ---------------------------------------------------------------- drip steps


async def test_each_recipient_gets_the_next_step_after_their_own_previous_one(env: Env) -> None:
    assert await env.tick() == "sending"
    assert await env.send(1, at=T0) == ["ann@example.com#0.1"]
    assert await env.send(1, at=T0 + 10) == ["bob@example.com#0.1"]
    assert await env.send(1, at=T0 + 20) == ["cy@example.com#0.1"]

    # only future steps remain: waiting, with the alarm at ann's follow-up
    assert await env.tick(T0 + 30) == "waiting"
    assert env.wakes["c"] == T0 + 60
    assert env.active == set()
    assert {r[2] for r in env.rows()} == {1}  # no step-2 row up front

    assert await env.tick(T0 + 59) == "waiting"
    assert await env.tick(T0 + 61) == "sending"
    assert [(r[0], r[2]) for r in env.rows() if r[2] == 2] == [("ann@example.com", 2)]
    assert await env.tick(T0 + 81) == "sending"
    assert sorted(r[0] for r in env.rows() if r[2] == 2) == [
        "ann@example.com",
        "bob@example.com",
        "cy@example.com",
    ]
    assert sorted(await env.send(at=T0 + 82)) == [
        "ann@example.com#0.2",
        "bob@example.com#0.2",
        "cy@example.com#0.2",
    ]
    assert await env.tick(T0 + 83) == "completed"  # no step can follow


async def test_a_step_that_failed_ends_that_recipients_sequence(env: Env) -> None:
    await env.tick()
    claimed = await env.store.claim(worker="t:1", now=T0, lease=60, limit=1, campaign_ids=["c"])
    await env.store.record([Outcome(id=claimed[0].id, status="failed", at=T0, error="550")])
    await env.send(at=T0)
    await env.tick(T0 + 61)
    assert sorted(r[0] for r in env.rows() if r[2] == 2) == ["bob@example.com", "cy@example.com"]


async def test_a_step_appended_reaches_recipients_still_in_the_sequence(env: Env) -> None:
    env.write("campaigns.d/c.yaml", campaign_yaml())  # one step
    await env.reload()
    await env.tick()
    await env.send(1, at=T0)  # ann: long before the edit
    await env.send(1, at=T0 + 150)  # bob: shortly before it; cy: not yet sent
    env.clock.now = T0 + 200
    env.write("campaigns.d/c.yaml", campaign_yaml(steps=DRIP.replace("60s", "100s")))
    await env.reload()
    rows = {r[0]: r for r in env.rows() if r[2] == 2}
    assert list(rows) == ["ann@example.com"]  # only ann had finished: marked, not sent
    assert rows["ann@example.com"][3] == "skipped"
    assert rows["ann@example.com"][4] == "had finished the sequence before step 2 was added"
    await env.send(at=T0 + 210)  # cy's first step
    assert await env.tick(T0 + 251) == "sending"  # bob's step 2, 100 s after his step 1
    assert {r[0]: r[3] for r in env.rows() if r[2] == 2} == {
        "ann@example.com": "skipped",
        "bob@example.com": "queued",
    }
    await env.send(at=T0 + 252)
    assert await env.tick(T0 + 311) == "sending"
    assert {r[0] for r in env.rows() if r[2] == 2 and r[3] == "queued"} == {"cy@example.com"}


async def test_a_removed_step_is_never_created_and_the_campaign_completes(env: Env) -> None:
    await env.tick()
    await env.send(at=T0)
    env.write("campaigns.d/c.yaml", campaign_yaml())  # step 2 removed before it fell due
    await env.reload()
    assert await env.tick(T0 + 500) == "completed"
    assert {r[2] for r in env.rows()} == {1}
    assert {r[3] for r in env.rows()} == {"sent"}  # nothing reset, nothing resent


# ---------------------------------------------------------------- recurring editions


async def test_recurring_editions_fire_and_a_downtime_is_caught_up_once(env: Env) -> None:
    env.write("campaigns.d/c.yaml", campaign_yaml('schedule: {cron: "0 9 * * *"}\n'))
    await env.reload()
    assert await env.tick() == "scheduled"  # 08:00: before the first firing
    assert env.wakes["c"] == T0 + 3600 and env.rows() == []
    assert await env.tick(T0 + 3600) == "sending"  # 09:00: edition 1
    assert {r[1] for r in env.rows()} == {1}
    await env.send(at=T0 + 3601)
    assert await env.tick(T0 + 3700) == "waiting"  # for the next edition
    assert env.wakes["c"] == T0 + 3600 + DAY

    # the daemon is down for three days; meanwhile the list grew
    env.write("lists/p.csv", people("ann", "bob", "cy", "dee"))
    back = T0 + 3 * DAY + 4 * 3600  # 12:00, three firings later
    assert await env.tick(back) == "sending"
    editions = {e for _, e, *_ in env.rows()}
    assert editions == {1, 2}  # one catch-up edition, not three
    assert sorted(r[0] for r in env.rows() if r[1] == 2) == [
        f"{n}@example.com" for n in ("ann", "bob", "cy", "dee")
    ]
    row = await env.store.get_campaign("c")
    assert row is not None and row.last_edition == 2
    assert row.last_fired_at == T0 + 3 * DAY + 3600  # for the latest firing
    info = env.conductor.describe("c", row, back)
    assert info["missed"] == 2
    assert info["editions"]["catch_up"]["missed"] == 2
    assert info["editions"]["catch_up"]["for"] == "2027-01-15T09:00:00+00:00"
    assert info["editions"]["next_at"] == "2027-01-16T09:00:00+00:00"
    await env.tick(back + 60)
    assert {e for _, e, *_ in env.rows()} == {1, 2}  # and nothing more until the next firing


# ---------------------------------------------------------------- continuous enrollment


async def test_continuous_enrollment_adds_new_rows_once_and_skips_removed_ones(
    env: Env,
) -> None:
    env.write("campaigns.d/c.yaml", campaign_yaml("enroll: continuous\n"))
    await env.reload()
    assert await env.tick() == "sending"
    await env.send(1, at=T0)  # ann
    assert await env.tick(T0 + 1) == "sending"  # bob and cy are queued

    env.write("lists/p.csv", people("ann", "bob", "dee"))  # cy removed, dee added
    await env.tick(T0 + 2)
    assert env.conductor.conditions.removed["c"] == {"cy@example.com"}
    keys = [r[0] for r in env.rows()]
    assert keys.count("dee@example.com") == 1
    db = sqlite3.connect(env.root / "state" / "c.db")
    removed = dict(db.execute("select key, removed_at from recipients"))
    db.close()
    assert removed["cy@example.com"] == T0 + 2 and removed["bob@example.com"] is None

    await env.send(at=T0 + 3)
    # the same list again (touched, not changed): nobody is enrolled twice
    env.write("lists/p.csv", people("ann", "bob", "dee"))
    assert await env.tick(T0 + 4) == "waiting"  # continuous: waits for new rows
    assert sorted(r[0] for r in env.rows()) == [
        f"{n}@example.com" for n in ("ann", "bob", "cy", "dee")
    ]


async def test_a_continuous_campaign_is_held_until_its_lists_are_read(env: Env) -> None:
    env.write("campaigns.d/c.yaml", campaign_yaml("enroll: continuous\n"))
    await env.reload()
    await env.tick()
    assert env.active == {"c"}
    env.write("lists/p.csv", people("ann"))
    await env.conductor.tick()  # the pass that notices the change starts the re-read …
    assert env.active == set()  # … and holds the campaign until it is done
    await env.conductor.settle()
    await env.conductor.tick()
    assert env.active == {"c"}
    assert env.conductor.conditions.removed["c"] == {"bob@example.com", "cy@example.com"}


# ---------------------------------------------------------------- the file decides


async def test_paused_in_the_file_and_a_removed_file(env: Env) -> None:
    env.write("campaigns.d/c.yaml", campaign_yaml("paused: true\n", steps=DRIP))
    await env.reload()
    assert await env.tick() == "paused"
    row = await env.store.get_campaign("c")
    assert row is not None and row.reason == paused_in_file("c") and env.rows() == []
    env.write("campaigns.d/c.yaml", campaign_yaml(steps=DRIP))
    await env.reload()
    assert await env.tick() == "sending"

    config = env.load()
    without = Config(root=config.root, settings=config.settings, services=config.services,
                     templates=config.templates, campaigns={})  # fmt: skip
    await env.conductor.update(without)
    assert await env.tick() == "paused"
    row = await env.store.get_campaign("c")
    assert row is not None and (row.reason or "").startswith(FILE_REMOVED)
    assert len(env.rows()) == 3  # records kept
    await env.conductor.update(config)
    assert await env.tick() == "sending"  # the file is back


async def test_describe_reports_the_next_window_opening(env: Env) -> None:
    env.write(
        "campaigns.d/c.yaml",
        campaign_yaml('window: {days: [wed], hours: "10:00-12:00", timezone: Europe/Berlin}\n'),
    )
    config = env.load()
    await env.conductor.update(config)
    await env.tick()
    window = config.campaigns["c"].window
    assert window is not None
    info = env.conductor.describe("c", await env.store.get_campaign("c"), T0)
    expected = next_window_open(window, datetime.fromtimestamp(T0, UTC), ZoneInfo("Europe/Berlin"))
    assert expected is not None
    assert info["window_open"] is False
    assert info["next_window"] == expected.isoformat() == "2027-01-13T09:00:00+00:00"
    inside = env.conductor.describe("c", None, expected.timestamp() + 60)
    assert inside == {"window_open": True, "next_window": None}


# ---------------------------------------------------------------- what a pass reads


async def test_a_quiet_campaign_is_read_again_only_when_told_so(env: Env) -> None:
    """Campaigns with nothing to do until a known time are not read on every pass: an alarm
    (``invalidate(cid)``) reads that campaign again, a general change (``invalidate()``) all."""
    start = "start: 2027-01-12T09:30:00Z\n"
    env.write("campaigns.d/c.yaml", campaign_yaml(start))
    env.write("campaigns.d/d.yaml", campaign_yaml(start))
    await env.reload()
    await env.tick()
    for cid in ("c", "d"):  # changed behind the conductor's back (another daemon, say)
        await env.store.set_campaign_state(cid, "sending", None)

    async def states() -> dict[str, str]:
        return {row.id: row.state for row in await env.store.list_campaigns()}

    await env.conductor.tick()
    assert await states() == {"c": "sending", "d": "sending"}  # neither was read
    env.conductor.invalidate("c")
    await env.conductor.tick()
    # c was read: its start is still ahead, so it is scheduled again; d was not read
    assert await states() == {"c": "scheduled", "d": "sending"}
    env.conductor.invalidate()
    await env.conductor.tick()
    assert await states() == {"c": "scheduled", "d": "scheduled"}


async def test_a_changed_list_concerns_only_the_campaigns_that_follow_their_lists(
    env: Env,
) -> None:
    assert await env.tick() == "sending"  # c enrolled its list once
    env.write("lists/p.csv", people("ann", "dee"))
    assert env.conductor.audience_changed() is False  # its rows are made: nothing to look at

    env.write("campaigns.d/c.yaml", campaign_yaml("enroll: continuous\n"))
    await env.reload()
    await env.tick()
    assert env.conductor.audience_changed() is False  # as last read
    env.write("lists/p.csv", people("ann", "eve", "flo"))
    assert env.conductor.audience_changed() is True

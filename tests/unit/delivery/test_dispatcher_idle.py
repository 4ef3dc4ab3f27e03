"""The claim loop when nothing is due: it sleeps until the earliest due row or until something
wakes it, instead of polling the database every second (a real SQLite store, a fake clock;
rows are enrolled by the conductor, parked by the dispatcher for a closed send window)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from campaignd.campaigns.conductor import Conductor
from campaignd.config.load import load_root
from campaignd.delivery.conditions import WINDOW_RECHECK
from campaignd.delivery.limits import Limiter
from campaignd.delivery.outbox import OutboxTransport
from campaignd.delivery.worker import FILLING_POLL, IDLE_POLL, Dispatcher
from campaignd.queue.store import Claimed, Store
from campaignd.render.compose import Composer
from campaignd.tokens.links import LinkSigner

T0 = datetime(2027, 1, 12, 8, 0, tzinfo=UTC).timestamp()  # a Tuesday, 08:00 UTC


@dataclass
class FakeClock:
    now: float = T0

    def __call__(self) -> float:
        return self.now


@dataclass
class Watched:
    """The real store, with the claim loop's reads counted and announced."""

    store: Store
    claims: int = 0
    looked: asyncio.Event = field(default_factory=asyncio.Event)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def claim(self, **kwargs: Any) -> list[Claimed]:
        self.claims += 1
        return await self.store.claim(**kwargs)

    async def next_due(self, campaign_ids: Collection[str]) -> float | None:
        due = await self.store.next_due(campaign_ids)
        # The loop runs on from here to its wait before this test resumes.
        self.looked.set()
        return due


@dataclass
class Env:
    clock: FakeClock
    store: Store
    watched: Watched
    dispatcher: Dispatcher
    drained: list[float]

    async def look(self) -> None:
        """Until the claim loop has looked for due rows and sleeps again."""
        self.watched.looked.clear()
        await self.watched.looked.wait()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    files = {
        "campaignd.yaml": "timezone: UTC\n",
        "services.d/s.yaml": 'from: "A <a@example.com>"\ntransport: outbox\noutbox: out\n',
        "templates.d/t.yaml": "subject: one\ntext: hi\n",
        "lists/p.csv": "email,first_name\nann@example.com,Ann\nbob@example.com,Bob\n",
        "campaigns.d/c.yaml": (
            "kind: transactional\naudience: lists/p.csv\nservices: [s]\ntemplate: t\n"
            "window: {days: [sat], timezone: UTC}\n"
        ),
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    clock = FakeClock()
    store = await Store.open("sqlite:///state/c.db", root=tmp_path, clock=clock)
    config = load_root(tmp_path).config
    conductor = Conductor(store, config, on_active=lambda ids: None, clock=clock)
    await conductor.tick()
    await conductor.settle()  # ann and bob are queued, due now
    watched = Watched(store)
    drained: list[float] = []
    dispatcher = Dispatcher(
        store=watched,  # type: ignore[arg-type]  # the real store, counted
        config=config,
        composer=Composer(config, LinkSigner(b"k" * 32)),
        transports={"s": OutboxTransport("s", config.services["s"], config.root)},
        limiter=Limiter(config),
        worker_id="test:1",
        clock=clock,
        on_drained=lambda: drained.append(clock()),
    )
    run = asyncio.create_task(dispatcher.run())
    try:
        yield Env(clock, store, watched, dispatcher, drained)
    finally:
        await dispatcher.drain(0)
        await run
        await conductor.close()
        await store.close()


async def parked(env: Env) -> None:
    """The loop claims ann and bob, parks them for the window (Saturday; looked at again a day
    later at the most) and finds nothing due."""
    env.dispatcher.set_active({"c"})
    await env.look()
    assert env.watched.claims == 2  # the rows, then nothing
    assert await env.store.next_due(["c"]) == T0 + WINDOW_RECHECK


async def test_with_nothing_due_the_loop_sleeps_until_woken_not_polling(env: Env) -> None:
    await parked(env)
    # The parked rows are a day away: the loop sleeps IDLE_POLL (for another daemon's rows),
    # not a second.
    assert env.dispatcher.next_look == pytest.approx(T0 + IDLE_POLL)
    assert env.drained == [T0]  # the batch it had is dealt with: the conductor may look
    env.dispatcher.wake()
    await env.look()
    assert env.watched.claims == 3  # one look per wake
    assert env.drained == [T0]  # nothing was claimed since: not "drained" again


async def test_a_row_due_soon_is_looked_for_when_it_falls_due(env: Env) -> None:
    await parked(env)
    # A retry (or a drip step) due in 5 s: the conductor's pass wakes the loop, which then
    # sleeps exactly until that row is due.
    await env.store.enqueue("c", 0, 2, [("ann@example.com", "t")], due=T0 + 5)
    env.dispatcher.set_active({"c"})
    await env.look()
    assert env.dispatcher.next_look == pytest.approx(T0 + 5, abs=0.01)


async def test_while_an_enrollment_writes_rows_they_are_looked_for_every_second(
    env: Env,
) -> None:
    await parked(env)
    env.dispatcher.set_active({"c"}, filling={"c"})
    await env.look()
    assert env.dispatcher.next_look == pytest.approx(T0 + FILLING_POLL)
    env.dispatcher.set_active({"c"})  # the enrollment is done: back to sleeping long
    await env.look()
    assert env.dispatcher.next_look == pytest.approx(T0 + IDLE_POLL)


async def test_a_send_that_ended_before_the_wait_is_not_slept_through(env: Env) -> None:
    # The last send of a batch can end while the loop awaits next_due: its task is gone by the
    # time the loop waits, but the freed slot must still end the wait (it used to sleep
    # IDLE_POLL, and the campaign was marked completed 30 s late).
    await parked(env)
    assert not env.dispatcher._tasks
    env.dispatcher._slot_freed.set()
    await asyncio.wait_for(env.dispatcher._wait(None), 5)

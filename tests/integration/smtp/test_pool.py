"""Session reuse and the connection limits: per service, per recipient domain, on close."""

from __future__ import annotations

import asyncio

import pytest

from campaignd.delivery import smtp
from campaignd.delivery.smtp import ConnectionFailed

from .conftest import MakePool, envelope
from .servers import RecordingServer


async def test_sequential_messages_share_one_session(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service(max_connections=4))
    for i in range(10):
        assert (await pool.send(envelope(f"r{i}@example.com"))).kind == "sent"
    assert server.sessions == 1 and server.ehlo_count == 1 and server.rset_count == 0
    assert {m.session for m in server.messages} == {1}
    assert pool.stats.sessions_opened == 1 and pool.stats.messages == 10


async def test_parallel_sends_respect_max_connections_and_messages_per_connection(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service(max_connections=4, messages_per_connection=5))
    replies = await asyncio.gather(*(pool.send(envelope(f"r{i}@ex.test")) for i in range(40)))
    assert {r.kind for r in replies} == {"sent"}
    assert len(server.messages) == 40
    assert sorted(m.rcpt_tos[0] for m in server.messages) == sorted(
        f"r{i}@ex.test" for i in range(40)
    )
    per_session: dict[int, int] = {}
    for m in server.messages:
        per_session[m.session] = per_session.get(m.session, 0) + 1
    assert max(per_session.values()) <= 5
    assert server.sessions == len(per_session) >= 8
    assert 2 <= server.max_concurrent <= 4  # parallel, but never above the limit
    assert server.ehlo_count == server.sessions


async def test_per_domain_max_connections(server: RecordingServer, make_pool: MakePool) -> None:
    pool = make_pool(
        server.service(max_connections=4, domains={"slow.test": {"max_connections": 1}})
    )
    server.stall("data", address="a@slow.test")
    server.stall("data", address="b@slow.test")
    server.stall("data", address="c@slow.test")
    slow = [asyncio.create_task(pool.send(envelope(f"{x}@slow.test"))) for x in "abc"]
    # Other domains still get the free sessions while one slow.test transaction is stuck …
    fast = await asyncio.gather(*(pool.send(envelope(f"{x}@fast.test")) for x in "de"))
    assert [r.kind for r in fast] == ["sent", "sent"]
    # … and by then the pool has had every chance to start a second slow.test transaction.
    assert await asyncio.to_thread(server.wait_stalled, 1)
    assert server.stalled == 1 and not any(t.done() for t in slow)
    server.release()
    assert [r.kind for r in await asyncio.gather(*slow)] == ["sent"] * 3
    assert server.max_stalled == 1
    assert server.max_concurrent <= 4


async def test_close_waits_for_in_flight_then_refuses(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service())
    assert (await pool.send(envelope("idle@example.com"))).kind == "sent"
    server.stall("data", address="busy@example.com")
    busy = asyncio.create_task(pool.send(envelope("busy@example.com")))
    await asyncio.to_thread(server.wait_stalled, 1)
    closing = asyncio.create_task(pool.close(grace=5.0))
    order: list[str] = []
    busy.add_done_callback(lambda _: order.append("send"))
    closing.add_done_callback(lambda _: order.append("close"))
    server.release()
    await closing
    assert order == ["send", "close"]  # close() waited for the transaction in flight
    assert busy.result().kind == "sent"
    assert pool.stats.open_sessions == 0
    with pytest.raises(ConnectionFailed, match="pool is closed"):
        await pool.send(envelope())


async def test_close_gives_up_on_a_stuck_transaction_after_grace(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service(timeout="10s"))
    server.stall("data")
    busy = asyncio.create_task(pool.send(envelope()))
    await asyncio.to_thread(server.wait_stalled, 1)
    await pool.close(grace=0.2)
    reply = await busy
    assert reply.kind == "deferred" and reply.code is None  # cut off: retried later
    assert pool.stats.open_sessions == 0


async def test_idle_sessions_are_closed_politely(
    server: RecordingServer, make_pool: MakePool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(smtp, "IDLE_CLOSE", 0.05)
    pool = make_pool(server.service())
    assert (await pool.send(envelope())).kind == "sent"
    assert await asyncio.to_thread(server.wait_all_closed)
    assert server.quit_count == 1 and pool.stats.open_sessions == 0
    assert (await pool.send(envelope())).kind == "sent"  # a new session when needed again
    assert server.sessions == 2


async def test_messages_per_connection_quits_before_reconnecting(
    server: RecordingServer, make_pool: MakePool
) -> None:
    pool = make_pool(server.service(max_connections=1, messages_per_connection=2))
    for _ in range(5):
        assert (await pool.send(envelope())).kind == "sent"
    assert server.sessions == 3 and server.quit_count == 2
    assert server.max_concurrent == 1  # the old session was gone before the next one opened

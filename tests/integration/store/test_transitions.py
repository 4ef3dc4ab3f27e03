"""The store refuses status changes the transition table does not allow: loudly, writing nothing."""

from __future__ import annotations

import asyncio

import pytest

from campaignd.queue.states import TransitionError
from campaignd.queue.store import EventIn, Outcome, Store

from .factory import T0, WORKER, seed


async def _claim(store: Store, n: int) -> list[int]:
    got = await store.claim(worker=WORKER, now=T0, lease=600, limit=n, campaign_ids=["launch"])
    return [c.id for c in got]


async def test_an_outcome_for_a_row_never_claimed_is_refused(store: Store) -> None:
    await seed(store, n=2)
    [mine] = await _claim(store, 1)
    other = next(r.id for r in await store.messages_page("launch") if r.id != mine)
    with pytest.raises(TransitionError, match=f"message {other} is queued: outcome may not"):
        await store.record([Outcome(id=other, status="sent", service="relay", at=T0)])
    row = await store.get_message(other)
    assert row is not None and (row.status, row.sent_at) == ("queued", None)
    # The refusal is per caller: the claimed row still takes its outcome.
    await store.record([Outcome(id=mine, status="sent", service="relay", at=T0)])
    assert (await store.counts("launch")).counts["sent"] == 1


async def test_a_settled_row_cannot_be_sent_twice_or_started_or_released(store: Store) -> None:
    await seed(store, n=1)
    [mid] = await _claim(store, 1)
    await store.start(mid, "relay")
    await store.record([Outcome(id=mid, status="sent", service="relay", at=T0)])
    with pytest.raises(TransitionError, match="is sent: outcome may not make it failed"):
        await store.record([Outcome(id=mid, status="failed", at=T0 + 1, error="late")])
    with pytest.raises(TransitionError, match="is sent: start"):
        await store.start(mid, "relay")
    with pytest.raises(TransitionError, match="is sent: release"):
        await store.release([mid], next_attempt_at=T0 + 5)
    row = await store.get_message(mid)
    assert row is not None and (row.status, row.last_error, row.sent_at) == ("sent", None, T0)


async def test_an_uncertain_row_takes_the_late_truth(store: Store) -> None:
    await seed(store, n=1)
    [mid] = await _claim(store, 1)
    await store.start(mid, "relay")
    assert await store.recover(now=T0 + 1) == 1
    await store.record([Outcome(id=mid, status="sent", service="relay", at=T0 + 2)])
    row = await store.get_message(mid)
    assert row is not None and row.status == "sent"


async def test_feedback_may_not_bounce_a_row_still_in_flight(store: Store) -> None:
    await seed(store, n=1)
    [mid] = await _claim(store, 1)
    ev = EventIn(kind="bounced", source="dsn", at=T0, message=mid, status="bounced", dedupe="d1")
    with pytest.raises(TransitionError, match="is sending: feedback may not make it bounced"):
        await store.add_event(ev)
    # Nothing of the event was kept: applied again once the row is settled, it takes effect.
    await store.record([Outcome(id=mid, status="sent", service="relay", at=T0)])
    assert await store.add_event(ev) is True
    row = await store.get_message(mid)
    assert row is not None and row.status == "bounced"


async def test_ordinary_outcomes_never_take_the_careful_path(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path (fixed SQL, row counts checked) must carry every ordinary start and
    outcome; the careful one (rows read first) is for refusals only."""
    from campaignd.queue import hot, leases, outcomes

    def careful(*_: object, **__: object) -> None:
        raise AssertionError("the careful path ran for an ordinary group")

    monkeypatch.setattr(outcomes, "apply_outcomes", careful)
    monkeypatch.setattr(leases, "start", careful)
    monkeypatch.setattr(hot, "_statuses", careful)
    monkeypatch.setattr(hot, "HOLDERS", "SELECT nothing")  # careful start on SQLite
    await seed(store, n=6)
    got = await _claim(store, 6)
    await asyncio.gather(*(store.start(i, "relay") for i in got))
    await asyncio.gather(
        store.record([Outcome(id=got[0], status="sent", service="relay", at=T0)]),
        store.record(
            [
                Outcome(id=got[1], status="bounced", service="relay", at=T0, code=550,
                        enhanced="5.1.1", suppress=True, error="550 5.1.1 no such user"),
                Outcome(id=got[2], status="deferred", service="relay", at=T0,
                        next_attempt_at=T0 + 600, code=451),
                Outcome(id=got[3], status="failed", service="relay", at=T0, code=554),
                Outcome(id=got[4], status="skipped", at=T0, reason="unless: opened"),
                Outcome(id=got[5], status="suppressed", at=T0),
            ]
        ),
    )  # fmt: skip
    counts = (await store.counts("launch")).counts
    assert {k: v for k, v in counts.items() if v} == {
        "sent": 1, "bounced": 1, "deferred": 1, "failed": 1, "skipped": 1, "suppressed": 1,
    }  # fmt: skip
    bounced = await store.get_message(got[1])
    assert bounced is not None and bounced.bounced_at == T0
    assert await store.suppressed([bounced.recipient]) == {bounced.recipient}
    day = await store.first_send_day("relay")
    assert day is not None and await store.sent_on_day("relay", day) == 1

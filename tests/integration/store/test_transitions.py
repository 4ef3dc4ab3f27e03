"""The store refuses status changes the transition table does not allow: loudly, writing nothing."""

from __future__ import annotations

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
